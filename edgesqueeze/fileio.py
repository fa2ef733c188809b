"""Atomic file output and hashing helpers shared by every stage."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Union

from .errors import InputError

if os.name == "posix":
    import fcntl
else:  # pragma: no cover - Windows: no advisory locks; outputs are still written atomically
    fcntl = None

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
    clean_stale(parent, target.name, ".tmp")
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=suffix + ".tmp", dir=str(parent))
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


def temp_prefix(name: str) -> str:
    """The prefix of a temporary sibling of ``name``: hidden, with this process's id (see :func:`clean_stale`)."""
    return f".{name}.{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (this one included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def clean_stale(parent: PathLike, name: str, suffix: str) -> List[Path]:
    """Remove temporary siblings of ``name`` in ``parent`` left by killed runs; return what was removed.

    A temporary sibling is ``.{name}.{pid}.*{suffix}`` (see :func:`temp_prefix`); it is stale when no process
    ``pid`` runs any more. Files and folders of live processes are left alone.
    """
    pattern = re.compile(r"^\." + re.escape(name) + r"\.(\d+)\..*" + re.escape(suffix) + r"$")
    removed = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(parent)):
            m = pattern.match(entry)
            if not m or pid_alive(int(m.group(1))):
                continue
            path = Path(parent) / entry
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


class OutputLock:
    """An exclusive, non-blocking lock on the output ``target`` (a hidden ``.{name}.lock`` next to it).

    Two runs writing the same output cannot both hold it: the second gets :class:`InputError` at once. The lock
    file is removed on release; a run killed while holding it leaves a file that the next run simply locks again
    (the kernel drops the lock with the process).
    """

    def __init__(self, target: PathLike):
        target = Path(target)
        self.path = (target.parent if str(target.parent) else Path(".")) / f".{target.name}.lock"
        self.target = target
        self._fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        """Take the lock; raises :class:`InputError` when another run holds it or it cannot be created."""
        while self._fd is None and fcntl is not None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise InputError(f"cannot write here: {exc.strerror}", path=str(self.target)) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise InputError("another edgesqueeze run is writing this output now", path=str(self.target),
                                 hint="wait for it to finish, or choose another -o") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the holder before us removed the file between our open and flock: try again
                self._fd = fd
            else:
                os.close(fd)
        return self

    def release(self) -> None:
        """Drop the lock and remove its file (safe to call twice)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_RENAME_EXCHANGE = 2


def exchange_paths(a: PathLike, b: PathLike) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, changing nothing, where the system or the file system cannot do it; raises ``OSError``
    for other failures.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


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


def read_json(path: PathLike):
    """Return the JSON value stored in ``path`` (UTF-8).

    Raises:
        InputError: the file cannot be read (with the system's reason) or is not UTF-8 JSON; it names the file.
    """
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(p)) from exc
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        raise InputError(f"not JSON: {exc}", path=str(p)) from exc


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
