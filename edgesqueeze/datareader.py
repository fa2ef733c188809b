"""The data-reader base class and the dtype rule shared by every reader (:mod:`edgesqueeze.data`,
:mod:`edgesqueeze.imagedata`), and the bounded ``.npz`` reader; see :mod:`edgesqueeze.data` for the protocol."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Dict, Iterator, Optional

import numpy as np

from .errors import InputError


def cast_dtype(arr: np.ndarray, want: np.dtype, name: str, path: str) -> np.ndarray:
    """Return ``arr`` as dtype ``want`` when the kinds agree (float to float, int to int).

    Raises:
        InputError: the kinds differ (e.g. uint8 images for a float input), naming ``path`` and ``name``.
    """
    if arr.dtype == want:
        return arr
    same_kind = (np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating)) or \
        (np.issubdtype(arr.dtype, np.integer) and np.issubdtype(want, np.integer)) or \
        (arr.dtype == np.bool_ and want == np.bool_)
    if not same_kind:
        hint = "convert it, e.g. x.astype(np.float32) / 255" if np.issubdtype(want, np.floating) else None
        raise InputError(f"data dtype {arr.dtype} does not fit the model's input dtype {want}", path=path,
                         tensor=name, hint=hint)
    return arr.astype(want)


class DataReader:
    """Base class: an iterable of feed dicts with labels, length, description and hash."""

    is_random = False

    def __init__(self, inputs: Dict[str, dict]):
        self.inputs = inputs
        self.batch = next(iter(inputs.values()))["batch"]
        self.labels: Optional[np.ndarray] = None

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, batches: bool = True) -> str:  # pragma: no cover - abstract
        """One line: what the data is; ``batches=False`` leaves out how it is batched (a caller that reads it
        sample by sample and batches it itself, as ``recover`` does)."""
        raise NotImplementedError

    def _describe_counted(self, source: str, count: int, unit: str, batches: bool = True) -> str:
        """``source: N <unit>[ in B batches of b][, labelled][ (k left over, not a full batch)]``."""
        text = f"{source}: {count} {unit}" + (f" in {len(self)} batches of {self.batch}" if batches else "")
        if self.labels is not None:
            text += ", labelled"
        if getattr(self, "dropped", 0):
            text += f" ({self.dropped} left over, not a full batch)"
        return text

    def sha256(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _hash(self, *parts) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"cls": type(self).__name__, "batch": self.batch,
                             "inputs": {k: [v["shape"], str(v["dtype"])] for k, v in sorted(self.inputs.items())}},
                            sort_keys=True).encode())
        for p in parts:
            h.update(p if isinstance(p, bytes) else str(p).encode())
        return h.hexdigest()


# ------------------------------------------------------------------------------------------ .npz, bounded
MAX_DATA_BYTES_ENV = "EDGESQUEEZE_MAX_DATA_BYTES"
DEFAULT_MAX_DATA_BYTES = 4 << 30  # uncompressed bytes of one .npz member; the env variable raises it


def max_data_bytes() -> int:
    """The largest uncompressed ``.npz`` member read: ``$EDGESQUEEZE_MAX_DATA_BYTES``, else 4 GiB.

    Raises:
        InputError: the variable is not a positive integer.
    """
    text = os.environ.get(MAX_DATA_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_DATA_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise InputError(f"{MAX_DATA_BYTES_ENV}={text!r} is not a positive number of bytes")
    return int(text)


class NpzArchive:
    """An ``.npz`` read member by member, with every size checked before anything is decompressed.

    ``np.load`` trusts the sizes a file declares; this reads the zip directory, refuses a member whose
    uncompressed size is above :func:`max_data_bytes`, refuses object arrays (pickles), checks that a member's
    ``.npy`` header agrees with its size, and with ``rows`` decompresses only the leading samples.
    """

    def __init__(self, path, max_bytes: Optional[int] = None):
        self.path = str(path)
        self.max_bytes = max_data_bytes() if max_bytes is None else int(max_bytes)
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise InputError(f"cannot read the .npz file: {exc}", path=self.path) from exc
        self.members = {i.filename[:-4]: i for i in self._zip.infolist() if i.filename.endswith(".npy")}

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc) -> None:
        self._zip.close()

    def read(self, key: str, rows: Optional[int] = None, rank: int = 1) -> np.ndarray:
        """Return member ``key`` (its first ``rows`` samples when given and it has ``rank`` dims or more).

        Raises:
            InputError: the member is too large, pickled, truncated, corrupt, or its header lies about its size.
        """
        info = self.members[key]
        if info.file_size > self.max_bytes:
            raise InputError(f"array '{key}' declares {info.file_size} bytes uncompressed, above the limit of "
                             f"{self.max_bytes}", path=self.path, tensor=key,
                             hint=f"set {MAX_DATA_BYTES_ENV} to raise the limit")
        try:
            with self._zip.open(info) as fh:
                return self._read_member(fh, key, info.file_size, rows, rank)
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
            raise InputError(f"cannot read array '{key}' of the .npz file: {exc}", path=self.path,
                             tensor=key) from exc

    def _read_member(self, fh, key: str, size: int, rows: Optional[int], rank: int) -> np.ndarray:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh, max_header_size=1 << 16)
        if dtype.hasobject:
            raise InputError(f"array '{key}' holds Python objects (a pickle); refused", path=self.path, tensor=key)
        count = int(np.prod(shape, dtype=object))
        if count * dtype.itemsize + fh.tell() != size:
            raise InputError(f"array '{key}' declares shape {list(shape)} ({count * dtype.itemsize} bytes) but "
                             f"the member holds {size - fh.tell()} bytes of data", path=self.path, tensor=key)
        if rows is not None and len(shape) >= max(1, rank) and not fortran and rows < shape[0]:
            shape = (int(rows),) + tuple(shape[1:])
            count = int(np.prod(shape, dtype=object))
        buf = bytearray(count * dtype.itemsize)
        view, got = memoryview(buf), 0
        while got < len(buf):
            n = fh.readinto(view[got:got + (1 << 24)])
            if not n:
                raise InputError(f"array '{key}' is truncated", path=self.path, tensor=key)
            got += n
        return np.frombuffer(buf, dtype).reshape(shape, order="F" if fortran else "C")
