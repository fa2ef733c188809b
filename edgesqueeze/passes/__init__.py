"""Graph passes and the optimizer (``edgesqueeze optimize``).

Each pass lives in its own module as a function ``(graph, ctx) -> graph`` on an onnx-graphsurgeon Graph,
registered by name with the opsets it supports; the pipeline is a list of names (:data:`PASSES` in order).
"""
from __future__ import annotations

# importing the pass modules registers them, in this (pipeline) order
from . import fold_constants as _fold_constants  # noqa: F401
from . import eliminate_noops as _eliminate_noops  # noqa: F401
from . import fold_batchnorm as _fold_batchnorm  # noqa: F401
from . import fold_affine as _fold_affine  # noqa: F401
from . import fuse_hardswish as _fuse_hardswish  # noqa: F401
from . import fuse_depthwise_separable as _fuse_depthwise_separable  # noqa: F401
from . import fuse_horizontal as _fuse_horizontal  # noqa: F401
from . import fuse_conv_activation as _fuse_conv_activation  # noqa: F401
from . import cleanup as _cleanup  # noqa: F401
from .optimizer import DEFAULT_OPSET, default_pass_names, histogram, optimize, resolve_passes
from .registry import PASSES, Pass, PassContext, get_pass, register

__all__ = ["PASSES", "Pass", "PassContext", "DEFAULT_OPSET", "default_pass_names", "get_pass", "histogram",
           "optimize", "register", "resolve_passes"]
