"""TensorRT variants of a model with ``edgesqueeze`` custom nodes (every registered op, not one kind).

TensorRT parsers differ on whether a custom node with an ONNX local function runs
as the plugin or as the function (TENSORRT.md, "Plugins"), so the bundle hands
TensorRT an explicit variant: functions **stripped** (the plugin library must be
loaded) or functions **inlined** into standard ops (no plugin needed). Both start
from functions rebuilt for the model's current element types, so an FP16 model
gets FP16 bodies. The transforms themselves live with the op registry
(:mod:`edgesqueeze.plugins.ops`); this module names the two variants the bundle ships.
"""
from __future__ import annotations

from onnx import ModelProto

from ..plugins.ops import custom_ops, inline_custom_ops, refresh_functions, strip_functions

__all__ = ["custom_ops", "inlined_variant", "refresh_functions", "stripped_variant"]


def inlined_variant(model: ModelProto) -> ModelProto:
    """Every custom node replaced by standard ONNX ops (TensorRT without the plugin library).

    SparseConv nodes become dense Conv nodes; the other custom nodes are replaced by their function bodies.
    """
    return inline_custom_ops(model)


def stripped_variant(model: ModelProto) -> ModelProto:
    """Custom nodes kept, their local functions and overload keys removed (TensorRT with the plugin library)."""
    return strip_functions(model)
