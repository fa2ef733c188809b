"""Atomic file output and hashing helpers shared by every stage."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from .errors import InputError

PathLike = Union[str, os.PathLike]


def same_file(a: PathLike, b: PathLike) -> bool:
    """Return True when ``a`` and ``b`` name the same existing file."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def refuse_overwrite(output: PathLike, *inputs: PathLike) -> None:
    """Raise :class:`InputError` when ``output`` would overwrite one of ``inputs``.

    The first input is the model; the others (data, weights, sources) are named in the message.
    ``None`` entries are skipped.
    """
    for i, src in enumerate(inputs):
        if src is not None and os.path.exists(output) and same_file(output, src):
            what = "the input model" if i == 0 else f"the input file '{src}'"
            raise InputError(f"the output would overwrite {what}; choose another -o path", path=str(output))


def check_writable(target: PathLike) -> None:
    """Raise :class:`InputError` when the file ``target``, or a folder to create there, cannot be written.

    An existing folder at ``target`` is an error too (an output file was expected).

    Meant to run before any long work: it finds the nearest existing folder above ``target`` and creates
    (and removes) a probe file there, so a read-only place or a path through a file fails at once.
    """
    target = Path(target)
    if target.is_dir():
        raise InputError("is a directory; give a file name for the output", path=str(target))
    ancestor = (target.parent if str(target.parent) else Path(".")).absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write here: '{ancestor}' is a file, not a folder", path=str(target))
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgesqueeze-probe.", dir=str(ancestor))
    except OSError as exc:
        raise InputError(f"cannot write here: {exc.strerror}", path=str(target)) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


@contextlib.contextmanager
def atomic_path(target: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    The temporary file lives in the same directory so that :func:`os.replace` is atomic.
    On failure the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output directory: {exc.strerror}", path=str(parent)) from exc
    if target.is_dir():
        raise InputError("is a directory; give a file name for the output", path=str(target))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=str(parent))
    except OSError as exc:  # read-only or not a directory: a user error, found before any work is lost
        raise InputError(f"cannot write here: {exc.strerror}", path=str(target)) from exc
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise InputError(f"cannot write here: {exc.strerror}", path=str(target)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(target: PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (temp file + fsync + rename)."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(target: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: PathLike, obj) -> None:
    """Write ``obj`` as pretty, key-sorted JSON to ``target`` atomically (deterministic bytes)."""
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def cache_dir(kind: str = "") -> Path:
    """The folder of edgesqueeze's caches of one ``kind`` (``calib``, ``engines``, ``timing``, ``kernels``).

    ``$EDGESQUEEZE_CACHE/<kind>``, else ``$XDG_CACHE_HOME/edgesqueeze/<kind>``, else
    ``~/.cache/edgesqueeze/<kind>``; ``kind=""`` gives the root. Nothing is created.
    """
    root = os.environ.get("EDGESQUEEZE_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgesqueeze"
    return base / kind if kind else base
