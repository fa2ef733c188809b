"""Assemble a bundle folder: models, calibration cache, plugin sources, scripts, manifest.

The folder is built in a staging directory next to the destination and moved into
place at the end, so an interrupted build never leaves half a bundle behind:

- a lock next to the bundle (``.NAME.lock``) makes one build at a time write it; a second
  build into the same folder fails at once, and the "already a bundle" check is repeated
  under the lock at commit;
- an old bundle is replaced by swapping the two folders in one step (Linux
  ``renameat2(RENAME_EXCHANGE)``), so the final name never goes missing. Where the system
  cannot swap, the old folder is renamed to ``.NAME.PID.old`` and the new one into place;
  a run killed between those two renames leaves the old bundle there, and the next run
  puts it back before it starts;
- staging folders and temporary files of killed runs (named with their process id) are
  removed by the next run that writes the same bundle.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional

import onnx

from ..errors import InputError
from ..fileio import (OutputLock, PathLike, pid_alive, check_writable, clean_stale, exchange_paths, sha256_bytes,
                      temp_prefix)
from ..model import data_file_of, model_bytes, model_hash, save_model
from .manifest import MANIFEST, SCHEMA, hash_files, manifest_bytes


def check_out_dir(out_dir: PathLike, *, force: bool = False) -> None:
    """Raise :class:`InputError` unless ``out_dir`` is absent, empty, or (with ``force``) an old bundle.

    A folder that is not a bundle is never replaced, ``force`` or not.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        check_writable(out_dir)
        return
    if not out_dir.is_dir():
        raise InputError("the output exists and is a file, expected a bundle folder", path=str(out_dir))
    if any(out_dir.iterdir()):
        if not (out_dir / MANIFEST).is_file():
            raise InputError("the output folder exists, is not empty and is not a bundle", path=str(out_dir),
                             hint="choose another -o")
        if not force:
            raise InputError("the output folder already holds a bundle", path=str(out_dir),
                             hint="choose another -o or pass --force to replace it")


class BundleWriter:
    """Collects the files of a bundle in a staging folder; :meth:`commit` writes the manifest and renames it.

    Args:
        out_dir: the bundle folder to create.
        force: replace ``out_dir`` when it already holds a bundle (otherwise it must be absent or empty).

    Raises:
        InputError: ``out_dir`` exists, is not empty and ``force`` is false; or it is a file.
    """

    def __init__(self, out_dir: PathLike, *, force: bool = False):
        self.out_dir = Path(out_dir)
        self.force = force
        check_out_dir(self.out_dir, force=force)
        parent = self.out_dir.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot write the bundle here: {exc.strerror}", path=str(self.out_dir)) from exc
        self.out_dir = parent / self.out_dir.name
        self._lock = OutputLock(self.out_dir).acquire()
        try:
            _recover(self.out_dir)
            check_out_dir(self.out_dir, force=force)
            self.staging = Path(tempfile.mkdtemp(prefix=temp_prefix(self.out_dir.name), suffix=".staging",
                                                 dir=str(parent)))
        except OSError as exc:
            self._lock.release()
            raise InputError(f"cannot write the bundle here: {exc.strerror}", path=str(self.out_dir)) from exc
        except BaseException:
            self._lock.release()
            raise

    # ------------------------------------------------------------------ adding files
    def path(self, rel: str) -> Path:
        """The staging path for ``rel`` (parent folders created)."""
        p = self.staging / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_bytes(self, rel: str, data: bytes, *, executable: bool = False) -> str:
        """Add a file with ``data``; returns its sha256."""
        p = self.path(rel)
        p.write_bytes(data)
        os.chmod(p, 0o755 if executable else 0o644)
        return sha256_bytes(data)

    def add_text(self, rel: str, text: str, *, executable: bool = False) -> str:
        """Add a UTF-8 text file (LF line ends); returns its sha256."""
        return self.add_bytes(rel, text.encode("utf-8"), executable=executable)

    def add_model(self, rel: str, model: onnx.ModelProto, *, external: bool = False) -> str:
        """Add a model serialised deterministically; returns its sha256.

        With ``external`` its weights go to one data file next to it, ``<rel>.data`` (written one weight at a
        time by :func:`edgesqueeze.model.save_model`: the model is never serialised whole, so it may pass
        protobuf's 2 GB), and the sha256 is :func:`edgesqueeze.model.model_hash` of the two files.
        """
        if not external:
            return self.add_bytes(rel, model_bytes(model))
        path = save_model(model, self.path(rel), external=True)
        for p in (path, data_file_of(path)):
            os.chmod(p, 0o644)
        return model_hash(path)

    def add_tree(self, rel: str, src: PathLike, *, ignore: Callable[[str], bool] = lambda name: False) -> int:
        """Copy the folder ``src`` to ``rel`` (sorted, no links, no hidden files or build outputs); returns files copied."""
        src = Path(src)
        n = 0
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in ("build", "__pycache__")
                                 and not ignore(d))
            for name in sorted(filenames):
                f = Path(dirpath) / name
                if name.startswith(".") or f.is_symlink() or ignore(name) or name.endswith((".pyc", ".o", ".so")):
                    continue
                self.add_bytes(f"{rel}/{f.relative_to(src).as_posix()}", f.read_bytes(),
                               executable=os.access(f, os.X_OK))
                n += 1
        return n

    # ------------------------------------------------------------------ finishing
    def commit(self, manifest: dict) -> dict:
        """Hash every staged file into ``manifest["files"]``, write ``manifest.json``, move the bundle into place.

        Returns:
            The complete manifest.
        """
        manifest = dict(manifest)
        manifest["schema"] = SCHEMA
        manifest["files"] = hash_files(self.staging)
        (self.staging / MANIFEST).write_bytes(manifest_bytes(manifest))
        os.chmod(self.staging / MANIFEST, 0o644)
        os.chmod(self.staging, 0o755)
        check_out_dir(self.out_dir, force=self.force)  # again: something may have appeared since we started
        _move_into_place(self.staging, self.out_dir)
        self._lock.release()
        return manifest

    def abort(self) -> None:
        """Remove the staging folder (after an error) and drop the lock."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.staging)
        self._lock.release()

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.staging.exists():
            self.abort()


def _old_name(out_dir: Path) -> Path:
    return out_dir.with_name(f"{temp_prefix(out_dir.name)}old")


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Put ``staging`` at ``out_dir``; an existing ``out_dir`` is swapped out in one step where possible."""
    if out_dir.exists() and exchange_paths(staging, out_dir):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old bundle
        return
    old = None
    if out_dir.exists():
        old = _old_name(out_dir)
        os.replace(out_dir, old)
    os.replace(staging, out_dir)  # a kill just before this leaves `old`, which _recover puts back
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _recover(out_dir: Path) -> None:
    """Under the lock: put back a bundle a killed run left as ``.NAME.PID.old``; remove other leftovers."""
    pattern = re.compile(r"^\." + re.escape(out_dir.name) + r"\.(\d+)\.old$")
    for entry in sorted(out_dir.parent.iterdir()):
        m = pattern.match(entry.name)
        if m and not pid_alive(int(m.group(1))) and entry.is_dir() and not out_dir.exists():
            os.replace(entry, out_dir)
            warnings.warn(f"{out_dir}: put back the bundle that an interrupted run had moved aside ({entry.name})")
    removed = [p.name for suffix in (".staging", "old", ".tmp")
               for p in clean_stale(out_dir.parent, out_dir.name, suffix)]
    if removed:
        warnings.warn(f"{out_dir}: removed {len(removed)} leftover(s) of interrupted runs: {', '.join(removed)}")


def short_key(*parts: Optional[bytes]) -> str:
    """A 12-hex-digit key over the given byte strings (engine file names)."""
    return sha256_bytes(b"\0".join(p or b"" for p in parts))[:12]


def model_relpaths(kinds) -> Dict[str, str]:
    """``{kind: "models/model.<kind>.onnx"}`` for the bundle's model kinds."""
    return {k: f"models/model.{k}.onnx" for k in kinds}
