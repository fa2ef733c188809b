"""Multiply-accumulate count of Conv / Gemm / MatMul layers (for compression reports)."""
from __future__ import annotations

from typing import Dict

import numpy as np
from onnx import ModelProto

from ..model import infer_shapes, tensor_shape
from ._layers import attr


def _shapes(model: ModelProto) -> Dict[str, list]:
    m = infer_shapes(model)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = tensor_shape(vi)
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def count_macs(model: ModelProto) -> int:
    """Return the multiply-accumulates of the model's Conv, Gemm and MatMul nodes (static shapes; unknown = 0)."""
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
