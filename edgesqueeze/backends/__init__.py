"""Runners: one interface (activate / infer / deactivate) over onnxruntime, TensorRT and a no-op backend.

>>> from edgesqueeze.backends import get_runner
>>> with get_runner("ort", "examples/digits/digits_cnn.onnx", threads=1) as r:   # doctest: +SKIP
...     out = r.infer({"input": x})

The TensorRT runner imports ``tensorrt`` and ``pycuda`` only when activated.
"""
from __future__ import annotations

from .base import InputMetadata, Runner, check_feeds
from .noop import NoopRunner
from .ort import OrtRunner

BACKENDS = ("ort", "trt", "noop")


def get_runner(backend: str, model=None, *, threads=None, **opts) -> Runner:
    """Create an (inactive) runner.

    Args:
        backend: ``"ort"`` (onnxruntime CPU), ``"trt"`` (TensorRT) or ``"noop"``.
        model: ModelProto or path (ignored by ``noop``).
        threads: CPU threads for ``ort``.
        **opts: backend options (see :class:`OrtRunner`, :class:`~.trt.TrtRunner`, :class:`NoopRunner`).

    Raises:
        InputError: unknown backend or a bad option.
    """
    from ..errors import InputError

    name = (backend or "ort").lower()
    if name == "ort":
        return OrtRunner(model, threads=threads, **opts)
    if name == "trt":
        from .trt import TrtRunner

        return TrtRunner(model, **opts)
    if name == "noop":
        return NoopRunner(**opts)
    raise InputError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")


def __getattr__(name):
    if name == "TrtRunner":
        from .trt import TrtRunner

        return TrtRunner
    raise AttributeError(name)


__all__ = ["BACKENDS", "InputMetadata", "NoopRunner", "OrtRunner", "Runner", "TrtRunner", "check_feeds",
           "get_runner"]
