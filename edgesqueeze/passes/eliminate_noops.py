"""Removal of nodes that compute nothing at inference: Identity, Dropout, and no-op Reshape/Transpose/Cast/Pad/
Flatten/Squeeze/Unsqueeze/Expand (their output equals their input)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ._graph import bypass, const
from .registry import register


def _static(shape):
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _same_shape(node) -> bool:
    src, dst = node.inputs[0], node.outputs[0]
    return _static(src.shape) and _static(dst.shape) and list(src.shape) == list(dst.shape)


def _is_noop(graph, node) -> bool:
    op = node.op
    if op == "Identity":
        return True
    if op == "Dropout":
        # inference: output = input; the optional mask output must be unused and training_mode off
        if len(node.inputs) >= 3:
            training = const(node.inputs[2])
            if training is None or bool(np.asarray(training).reshape(-1)[0]):
                return False
        mask = node.outputs[1] if len(node.outputs) > 1 else None
        return mask is None or (not mask.outputs and not any(t is mask for t in graph.outputs))
    if not node.inputs or len(node.outputs) != 1:
        return False
    if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"):
        return _same_shape(node)
    if op == "Transpose":
        perm = node.attrs.get("perm")
        return perm is not None and list(perm) == list(range(len(perm)))
    if op == "Cast":
        dtype = node.inputs[0].dtype
        if dtype is None or "to" not in node.attrs:
            return False
        try:
            return np.dtype(dtype) == np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))
        except (TypeError, KeyError, ValueError):
            return False
    if op == "Pad":
        pads = node.attrs.get("pads") if len(node.inputs) < 2 else const(node.inputs[1])
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        return pads is not None and not np.any(np.asarray(pads)) and mode == "constant"
    return False


@register("eliminate_noops", description="remove Identity, Dropout and no-op Reshape/Transpose/Cast/Pad/...")
def eliminate_noops(graph, ctx):
    """Remove nodes whose output equals their input (a graph output keeps its name)."""
    for node in list(graph.nodes):
        if node.inputs and node.outputs and _is_noop(graph, node):
            name, op = node.name or node.op, node.op
            if bypass(graph, node):
                ctx.record(f"eliminate:{op}", [name])
    return graph
