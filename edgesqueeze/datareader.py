"""The data-reader base class and the dtype rule shared by every reader (:mod:`edgesqueeze.data`,
:mod:`edgesqueeze.imagedata`); see :mod:`edgesqueeze.data` for the protocol."""
from __future__ import annotations

import hashlib
import json
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

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _describe_counted(self, source: str, count: int, unit: str) -> str:
        """``source: N <unit> in B batches of b[, labelled][ (k left over, not a full batch)]``."""
        text = f"{source}: {count} {unit} in {len(self)} batches of {self.batch}"
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
