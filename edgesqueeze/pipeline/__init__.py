"""The ``build`` pipeline: load → optimize → compress → quantize → compat → validate → (local engine) → bundle.

>>> from edgesqueeze.pipeline import build
>>> summary = build("examples/digits/digits_cnn.onnx", "orin-nano", "bundle/", precision="int8",
...                 calib="examples/digits/calib.npz", val="examples/digits/val.npz")   # doctest: +SKIP
"""
from __future__ import annotations

from .builder import CALIB_METHODS, SPARSITY_CHOICES, build, render_summary, run_stages
from .options import BuildOptions, make_options
from .stages import STAGES
from .state import BuildState, StageRecord

__all__ = ["BuildOptions", "BuildState", "CALIB_METHODS", "SPARSITY_CHOICES", "STAGES", "StageRecord", "build",
           "make_options", "render_summary", "run_stages"]
