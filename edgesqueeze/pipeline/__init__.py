"""The ``build`` pipeline: load → optimize → compress → quantize → validate → (local engine) → bundle.

>>> from edgesqueeze.pipeline import build
>>> summary = build("examples/digits/digits_cnn.onnx", "orin-nano", "bundle/", precision="int8",
...                 calib="examples/digits/calib.npz", val="examples/digits/val.npz")   # doctest: +SKIP
"""
from __future__ import annotations

from .builder import CALIB_METHODS, SPARSITY_CHOICES, build
from .progress import STAGES

__all__ = ["CALIB_METHODS", "SPARSITY_CHOICES", "STAGES", "build"]
