"""Reproducible ``.tar.gz`` archives of a bundle folder, and safe extraction.

The archive is byte-identical across runs: entries sorted, one fixed mtime,
uid/gid 0 with empty owner names, modes normalised (0755 for directories and
executables, 0644 otherwise), and a gzip header with mtime 0 and no file name.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO, List

from ..errors import InputError
from ..fileio import PathLike, atomic_path
from .manifest import list_files, MANIFEST

# 1980-01-01T00:00:00Z: a fixed date that every archive tool accepts (zip's epoch)
FIXED_MTIME = 315532800


def _tarinfo(name: str, *, size: int = 0, directory: bool = False, executable: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mtime = FIXED_MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    if directory:
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
    else:
        ti.size = size
        ti.mode = 0o755 if executable else 0o644
    return ti


def archive_bytes(bundle_dir: PathLike, root_name: str | None = None) -> bytes:
    """Return the deterministic ``.tar.gz`` bytes of ``bundle_dir`` (files under ``root_name/``).

    Device outputs (``engines/`` and the like) are left out, exactly as the manifest leaves them out; the
    manifest's signature (``manifest.json.sig``) goes in when there is one.
    """
    out = io.BytesIO()
    _write_tar_gz(out, Path(bundle_dir), root_name)
    return out.getvalue()


def _write_tar_gz(fh: BinaryIO, bundle_dir: Path, root_name: str | None) -> None:
    """Stream the archive of :func:`archive_bytes` into ``fh``, one file at a time in blocks (a bundle with
    models of several GB is never held in memory)."""
    root_name = root_name or bundle_dir.resolve().name
    signature = [MANIFEST + ".sig"] if (bundle_dir / (MANIFEST + ".sig")).is_file() else []
    files = sorted(list_files(bundle_dir) + [MANIFEST] + signature)
    dirs = sorted({str(Path(root_name, *Path(f).parts[:i])) for f in files for i in range(len(Path(f).parts))})
    entries: List[tuple] = [(d, None) for d in dirs] + [(f"{root_name}/{f}", bundle_dir / f) for f in files]
    with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(entries, key=lambda e: e[0]):
            if path is None:
                tar.addfile(_tarinfo(name, directory=True))
                continue
            with open(path, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                tar.addfile(_tarinfo(name, size=size, executable=os.access(path, os.X_OK)), src)


def write_archive(bundle_dir: PathLike, archive_path: PathLike) -> Path:
    """Write the bundle folder as a reproducible ``.tar.gz`` (atomically, streamed) and return its path."""
    archive_path = Path(archive_path)
    root = archive_path.name
    for suffix in (".tar.gz", ".tgz"):
        if root.endswith(suffix):
            root = root[: -len(suffix)]
    with atomic_path(archive_path) as tmp:
        with open(tmp, "wb") as fh:
            _write_tar_gz(fh, Path(bundle_dir), root or None)
            fh.flush()
            os.fsync(fh.fileno())
    return archive_path


MAX_ARCHIVE_BYTES = 16 << 30   # what a bundle archive may unpack to (models of several GB fit)
MAX_ARCHIVE_MEMBERS = 10000     # a bundle has a few dozen files


def _safe_members(tar: tarfile.TarFile, archive_path: Path, dest: Path, limit: int) -> list:
    """The archive's entries, refused when unsafe, too many, or larger than ``limit`` or the free disk space."""
    members, total = [], 0
    for m in tar:
        members.append(m)
        p = Path(m.name)
        if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
            raise InputError(f"unsafe archive entry '{m.name}'", path=str(archive_path))
        total += m.size if m.isfile() else 0
        if len(members) > MAX_ARCHIVE_MEMBERS or total > limit:
            raise InputError(f"the archive unpacks to more than {MAX_ARCHIVE_MEMBERS} entries or {limit >> 20} MiB: "
                             "not a bundle archive", path=str(archive_path))
    where = dest
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if total > free:
        raise InputError(f"the archive unpacks to {total >> 20} MiB, more than the {free >> 20} MiB free in {dest}",
                         path=str(archive_path))
    return members


def extract_archive(archive_path: PathLike, dest: PathLike, *, limit: int = MAX_ARCHIVE_BYTES) -> Path:
    """Extract a bundle archive into ``dest`` and return the bundle folder inside it.

    Refuses entries with absolute paths, ``..``, links or device files (a bundle has none), and archives that
    declare more than ``limit`` bytes or :data:`MAX_ARCHIVE_MEMBERS` entries; members are copied in streams,
    so memory does not grow with their size.

    Raises:
        InputError: not a readable tar.gz, an unsafe entry, too large, or no manifest.json inside.
    """
    archive_path, dest = Path(archive_path), Path(dest)
    try:
        with tarfile.open(archive_path, mode="r:*") as tar:
            for m in _safe_members(tar, archive_path, dest, limit):
                target = dest / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                with open(target, "wb") as out:
                    if src is not None:
                        shutil.copyfileobj(src, out, 1 << 20)
                target.chmod(0o755 if m.mode & 0o111 else 0o644)
    except tarfile.ReadError as exc:
        raise InputError("cannot read the bundle archive: neither a bundle folder nor a .tar.gz archive "
                         "(truncated, or another kind of file)", path=str(archive_path)) from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read the bundle archive: {exc}", path=str(archive_path)) from exc
    manifests = sorted(dest.glob(f"*/{MANIFEST}")) or sorted(dest.glob(MANIFEST))
    if not manifests:
        raise InputError("the archive holds no manifest.json: not a bundle", path=str(archive_path))
    return manifests[0].parent
