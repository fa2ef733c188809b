"""The runner interface every backend implements: activate / infer / deactivate.

A runner owns one loaded model on one backend. ``infer`` checks the feeds
against the model's input metadata (names, dtypes, shapes; a dynamic dimension
matches any size) before running, so that a wrong feed gives a one-line error
naming the tensor instead of a backend stack trace. The benchmark harness checks
once and then calls ``infer(feeds, check=False)`` in its timed loop.
"""
from __future__ import annotations

import time
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import InputError, InternalError

Dim = Union[int, str, None]


class InputMetadata(dict):
    """``{name: {"shape": [dims], "dtype": numpy dtype}}`` of a model's inputs, in graph order.

    A dim is an int (fixed), a string (symbolic) or None (unknown); the last two match any size.
    """

    def describe(self) -> str:
        """One line per input: ``name float32 [1,3,224,224]``."""
        out = []
        for name, spec in self.items():
            dims = ",".join("?" if not isinstance(d, int) else str(d) for d in spec["shape"])
            out.append(f"{name} {np.dtype(spec['dtype']).name} [{dims}]")
        return "; ".join(out)


def check_feeds(feeds: Mapping[str, np.ndarray], metadata: InputMetadata, where: str = "") -> None:
    """Check ``feeds`` against ``metadata``: every input present, no extra names, dtype and shape match.

    Raises:
        InputError: naming the tensor at fault and what was expected.
    """
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a dict {{input name: array}}, got {type(feeds).__name__}")
    missing = [n for n in metadata if n not in feeds]
    if missing:
        raise InputError(f"missing input; the model expects: {metadata.describe()}", tensor=missing[0],
                         path=where or None)
    extra = [n for n in feeds if n not in metadata]
    if extra:
        raise InputError(f"the model has no input of this name; it expects: {metadata.describe()}",
                         tensor=extra[0], path=where or None)
    for name, spec in metadata.items():
        arr = feeds[name]
        if not isinstance(arr, np.ndarray):
            raise InputError(f"expected a numpy array, got {type(arr).__name__}", tensor=name, path=where or None)
        want = np.dtype(spec["dtype"])
        if arr.dtype != want:
            raise InputError(f"dtype {arr.dtype.name} does not match the model's {want.name}", tensor=name,
                             path=where or None, hint=f"convert with .astype(np.{want.name})")
        dims = spec["shape"]
        if dims and (arr.ndim != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, arr.shape))):
            shown = "x".join("?" if not isinstance(d, int) else str(d) for d in dims)
            raise InputError(f"shape {'x'.join(map(str, arr.shape)) or 'scalar'} does not match the model's "
                             f"{shown}", tensor=name, path=where or None)


class Runner:
    """Base class: one model on one backend.

    Subclasses implement ``_activate``, ``_infer``, ``_deactivate`` and ``input_metadata``; they may
    override ``device_times`` (GPU compute and copy times of the last call) and ``for_batch``.
    """

    #: backend name as results report it: "ort", "trt", "noop"
    name = "base"

    def __init__(self) -> None:
        self.is_active = False
        self.activate_s: Optional[float] = None

    # ---------------------------------------------------------------- lifecycle
    def activate(self) -> "Runner":
        """Load the model (build or deserialize an engine, create a session). Returns ``self``.

        Raises:
            InternalError: the runner is already active.
        """
        if self.is_active:
            raise InternalError(f"{self.name} runner is already active")
        t0 = time.perf_counter()
        self._activate()
        self.activate_s = time.perf_counter() - t0
        self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release the session / engine / device buffers. Safe to call twice."""
        if self.is_active:
            try:
                self._deactivate()
            finally:
                self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # ---------------------------------------------------------------- inference
    def infer(self, feeds: Mapping[str, np.ndarray], check: bool = True) -> Dict[str, np.ndarray]:
        """Run the model once on ``feeds`` and return ``{output name: array}``.

        Args:
            feeds: ``{input name: array}``.
            check: validate the feeds against :meth:`input_metadata` first (the timed loop passes False).

        Raises:
            InternalError: the runner is not active.
            InputError: a feed is missing, extra, or has the wrong dtype or shape.
        """
        if not self.is_active:
            raise InternalError(f"{self.name} runner: call activate() (or use 'with runner:') before infer()")
        if check:
            check_feeds(feeds, self.input_metadata())
        return self._infer(feeds)

    def input_metadata(self) -> InputMetadata:
        """The model's inputs: ``{name: {"shape", "dtype"}}``."""
        raise NotImplementedError

    def device_times(self) -> Optional[Dict[str, float]]:
        """``{"h2d_ms", "compute_ms", "d2h_ms"}`` of the last ``infer`` call, or None where not measured."""
        return None

    def describe(self) -> dict:
        """JSON-ready backend description for results: name, version, precision, options."""
        return {"name": self.name, "version": None, "precision": "fp32"}

    def for_batch(self, batch: int) -> "Runner":
        """Return an (inactive) runner that accepts inputs with batch size ``batch``.

        The base class returns ``self`` when every input's first dimension is ``batch`` or dynamic.

        Raises:
            UnsupportedError: the backend cannot change the batch size of this model.
        """
        from ..errors import UnsupportedError

        if all(not spec["shape"] or not isinstance(spec["shape"][0], int) or spec["shape"][0] == batch
               for spec in self.input_metadata().values()):
            return self
        raise UnsupportedError(f"the {self.name} runner cannot run this model at batch {batch}")

    # ---------------------------------------------------------------- to implement
    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError


def set_batch(shape: Sequence[Dim], batch: int) -> list:
    """Return ``shape`` with its first dimension replaced by ``batch``."""
    return [batch] + list(shape[1:]) if shape else [batch]
