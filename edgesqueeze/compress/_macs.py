"""Multiply-accumulate count of Conv / Gemm / MatMul layers (for compression reports)."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from onnx import ModelProto

from ..errors import InputError
from ..model import concrete_input_shapes, dynamic_inputs, graph_inputs, infer_shapes, strip_weights, tensor_shape
from ._layers import attr


def _shapes(model: ModelProto) -> Dict[str, list]:
    m = infer_shapes(model)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = tensor_shape(vi)
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _at_check_shapes(model: ModelProto, given) -> Optional[ModelProto]:
    """A copy of ``model`` whose dynamic inputs have the shapes the checks run at (``given``: ``--input``, else
    the usual rules: batch 1, metadata), or None when a dynamic dimension has no value."""
    try:
        shapes = concrete_input_shapes(model, given)
    except InputError:
        return None
    pinned, _ = strip_weights(model)   # a copy with the shapes of the weights, not their bytes
    del pinned.graph.value_info[:]     # inferred again from the pinned inputs
    for vi in graph_inputs(pinned):
        dims = vi.type.tensor_type.shape.dim
        for d, v in zip(dims, shapes.get(vi.name, ())):
            d.Clear()
            d.dim_value = int(v)
    return pinned


def count_macs(model: ModelProto, shapes=None) -> Optional[int]:
    """Return the multiply-accumulates of the model's Conv, Gemm and MatMul nodes, at the input shapes the checks
    run at for a dynamic model (``shapes``: ``--input``); None when a dynamic dimension has no value."""
    if dynamic_inputs(model):
        model = _at_check_shapes(model, shapes)
        if model is None:
            return None
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or any(not isinstance(d, int) for d in out):
            continue
        if node.op_type == "Conv":
            w = shapes.get(node.input[1])
            if w and all(isinstance(d, int) for d in w):
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if a and all(isinstance(d, int) for d in a):
                k = a[0] if node.op_type == "Gemm" and attr(node, "transA", 0) else a[-1]
                total += int(np.prod(out)) * int(k)
    return total
