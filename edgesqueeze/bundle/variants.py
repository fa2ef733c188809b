"""TensorRT variants of a model with ``edgesqueeze`` custom nodes (every op of the domain, not one kind).

TensorRT parsers differ on whether a custom node with an ONNX local function runs
as the plugin or as the function (TENSORRT.md, "Plugins"), so the bundle hands
TensorRT an explicit variant: functions **stripped** (the plugin library must be
loaded) or functions **inlined** into standard ops (no plugin needed). Both start
from functions rebuilt for the model's current element types, so an FP16 model
gets FP16 bodies.
"""
from __future__ import annotations

from typing import Set

from onnx import ModelProto

from ..model import iter_nodes

DOMAIN = "edgesqueeze"




def custom_ops(model: ModelProto) -> Set[str]:
    """The op types of the model's ``edgesqueeze``-domain nodes (in any subgraph)."""
    return {n.op_type for n in iter_nodes(model.graph) if n.domain == DOMAIN}


def refresh_functions(model: ModelProto) -> ModelProto:
    """Return a copy whose custom nodes' local functions are rebuilt for their current element types.

    Raises:
        InputError: a custom node's weights have no known element type (from the plugin modules).
    """
    out = ModelProto()
    out.CopyFrom(model)
    ops = custom_ops(out)
    if "DepthwiseSeparableConv" in ops:
        from ..plugins.dwsep import attach_functions

        attach_functions(out)
    if "SparseConv" in ops:
        from ..plugins.sparse import attach_sparse_functions

        attach_sparse_functions(out)
    return out


def _plain_ir(model: ModelProto) -> None:
    if any(f.overload for f in model.functions):
        return
    from ..plugins.dwsep import (
        _plain_ir_version,  # the IR version rule lives with the op definitions
    )

    model.ir_version = _plain_ir_version(model)


def inlined_variant(model: ModelProto) -> ModelProto:
    """Every custom node replaced by standard ONNX ops (TensorRT without the plugin).

    SparseConv nodes become dense Conv nodes; the other custom nodes are replaced by their function bodies.
    """
    from onnx import inliner

    from ..errors import InputError

    if "SparseConv" in custom_ops(model):
        # a plain dense Conv, not the decompressing function: TensorRT 8.2 cannot run the CSR decompression
        # (ScatterElements with reduction), and with --sparsity=enable TensorRT uses its own 2:4 kernels on it
        from ..model import infer_shapes
        from ..plugins.sparse_convert import densify

        try:
            model = densify(infer_shapes(model))
        except InputError:
            pass  # compressed weights computed in-graph: the function body is the only exact spelling
    ops = custom_ops(model)
    out = refresh_functions(model)
    if not ops:
        return out
    out = inliner.inline_selected_functions(out, [(DOMAIN, op) for op in sorted(ops)], exclude=False)
    if not custom_ops(out):
        keep = [op for op in out.opset_import if op.domain != DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(keep)
    _plain_ir(out)
    return out


def stripped_variant(model: ModelProto) -> ModelProto:
    """Custom nodes kept, their local functions and overload keys removed (TensorRT with the plugin library)."""
    out = ModelProto()
    out.CopyFrom(model)
    for node in iter_nodes(out.graph):
        if node.domain == DOMAIN:
            node.overload = ""
    kept = [f for f in out.functions if f.domain != DOMAIN]
    del out.functions[:]
    out.functions.extend(kept)
    _plain_ir(out)
    return out
