"""Layers that TensorRT runs no faster in INT8: the GEMV / small-GEMM and small-channel Conv rules of NVIDIA's
Model Optimizer (``modelopt.onnx.quantization.graph_utils``: ``find_nodes_from_matmul_to_exclude``,
``find_nodes_from_convs_to_exclude``), written once.

- A MatMul/Gemm whose output has one row or one column (a GEMV: a batch-1 fully connected layer), or whose K or
  N is below 16, cannot use INT8 tensor cores; Q/DQ around it slow TensorRT down and cost accuracy.
- A Conv with fewer than 16 input or output channels has INT8 kernels only when (group 1) a channel count is a
  multiple of 8, the kernel is square, and it reads a graph input or has 16 channels on the other side, or
  (grouped) its output channels are a multiple of 8 and its kernel is at least 3 wide.

Rows come from the shapes in the model. A symbolic first dimension (the batch) counts as 1, the batch every
stage assumes when the data does not say (a TensorRT profile's opt shape is built from it); any other symbolic
dimension counts as large.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import ModelProto, helper

MIN_MATMUL_DIM = 16  # K and N below this: no INT8 tensor-core kernel worth the Q/DQ
MIN_CONV_CHANNELS = 16


def _dims(value_info: Optional[onnx.ValueInfoProto]) -> Optional[List[Optional[int]]]:
    if value_info is None or not value_info.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _rows(dims: Sequence[Optional[int]]) -> Optional[int]:
    """Rows of a matrix product's activation: the product of every dim but the last (symbolic batch = 1)."""
    rows = 1
    for k, d in enumerate(dims[:-1]):
        if d is None or d <= 0:
            if k > 0:
                return None  # a symbolic sequence or spatial dim: not a GEMV
            d = 1
        rows *= d
    return rows


def _matmul_reason(node: onnx.NodeProto, act: Optional[List[Optional[int]]], weight: np.ndarray) -> Optional[str]:
    if weight.ndim != 2 or not act:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    trans_b = node.op_type == "Gemm" and int(attrs.get("transB", 0))
    k, n = (weight.shape[1], weight.shape[0]) if trans_b else weight.shape
    if node.op_type == "Gemm" and int(attrs.get("transA", 0)):
        rows = act[-1] if len(act) == 2 and act[-1] is not None else None
    else:
        rows = _rows(act)
    if rows == 1 or n == 1:
        return "a GEMV at batch 1 (one output row): no INT8 tensor-core kernel, TensorRT keeps it FP16"
    if k < MIN_MATMUL_DIM or n < MIN_MATMUL_DIM:
        return f"K={k}, N={n} < {MIN_MATMUL_DIM}: no INT8 tensor-core kernel, TensorRT keeps it FP16"
    return None


def _conv_reason(node: onnx.NodeProto, weight: np.ndarray, reads_input: bool) -> Optional[str]:
    if weight.ndim < 3:
        return None
    oc, ic = weight.shape[0], weight.shape[1]
    if oc >= MIN_CONV_CHANNELS and ic >= MIN_CONV_CHANNELS:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    group = int(attrs.get("group", 1))
    kernel = list(attrs.get("kernel_shape", weight.shape[2:]))
    if group == 1 and (oc % 8 == 0 or ic % 8 == 0) and len(set(kernel)) == 1 and \
            (reads_input or oc >= MIN_CONV_CHANNELS or ic >= MIN_CONV_CHANNELS):
        return None
    if group > 1 and oc % 8 == 0 and all(k >= 3 for k in kernel):
        return None
    return (f"{ic} -> {oc} channels (group {group}, kernel {'x'.join(map(str, kernel))}): no INT8 kernel for "
            "this shape, TensorRT keeps it FP16")


def slow_in_int8(model: ModelProto) -> Dict[int, str]:
    """``{node index in model.graph.node: why}`` of the Conv/MatMul/Gemm layers TensorRT gains nothing from in INT8
    (see the module). Only layers with a stored weight are judged."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    infos = {vi.name: vi for vi in list(g.input) + list(g.value_info) + list(g.output)}
    graph_inputs = {vi.name for vi in g.input if vi.name not in inits}
    out: Dict[str, str] = {}
    for index, node in enumerate(g.node):
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        weight = onnx.numpy_helper.to_array(inits[node.input[1]])
        if node.op_type == "Conv":
            reason = _conv_reason(node, weight, node.input[0] in graph_inputs)
        else:
            reason = _matmul_reason(node, _dims(infos.get(node.input[0])), weight)
        if reason:
            out[index] = reason
    return out
