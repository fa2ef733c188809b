"""Explicit quantization: QuantizeLinear/DequantizeLinear pairs placed where TensorRT expects them.

TensorRT's explicit-quantization rules (the path TensorRT 10/11 needs, also runnable by onnxruntime):
Q/DQ go on the *inputs* of the weighted layers (Conv, ConvTranspose, Gemm, MatMul): symmetric INT8, per-tensor
for activations (scale = amax / 127 from calibration), per-output-channel for weights. Nothing is inserted
on a layer's output, so a Conv stays next to its activation (Conv -> Relu is fused by TensorRT, and the next
layer's input Q/DQ sits after the Relu). Biases stay in float (TensorRT folds them into the kernel). In a
skip connection, the residual input of the Add that follows a quantized Conv is quantized too, so that
TensorRT can fuse the Add into the Conv.
Weights stay float and pass through Q -> DQ (the form TensorRT 8.x folds), unless ``int8_weights`` stores them
as INT8 initializers behind a DequantizeLinear (smaller files, TensorRT >= 8.6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper

from ..errors import InputError
from ..model import convert_opset, opset_version
from ..plugins.ops import DOMAIN as CUSTOM_DOMAIN  # custom ops: plugins without INT8 kernels
from .trt_int8 import slow_in_int8

# op -> (activation input indices, weight input index, weight channel axis or None: decided per node)
WEIGHTED_OPS = {"Conv": ((0,), 1), "ConvTranspose": ((0,), 1), "Gemm": ((0, 1), 1), "MatMul": ((0, 1), 1)}
MIN_OPSET = 13  # per-channel QuantizeLinear (axis) needs opset 13


@dataclass
class QdqPlan:
    """What :func:`quantize_qdq` quantizes: nodes, the activations and weights on their inputs, and skips."""

    nodes: List[str] = field(default_factory=list)
    activations: Dict[str, float] = field(default_factory=dict)   # tensor -> scale
    weights: Dict[str, int] = field(default_factory=dict)         # weight tensor -> channel axis (-1: per tensor)
    skipped: Dict[str, str] = field(default_factory=dict)         # node -> reason
    residual: Dict[str, int] = field(default_factory=dict)        # Add node -> index of its quantized input
    custom: Dict[str, str] = field(default_factory=dict)          # edgesqueeze-domain node -> why it stays float

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"quantized_nodes": list(self.nodes), "activations": dict(self.activations),
                "weights": dict(self.weights), "skipped": dict(self.skipped), "residual_adds": dict(self.residual),
                "custom_not_quantized": dict(self.custom)}



def constants_as_initializers(model: ModelProto) -> ModelProto:
    """A copy of ``model`` whose top-level ``Constant`` nodes holding a tensor are initializers of the same name.

    Exporters such as paddle2onnx store every weight as a Constant node; the planner quantizes stored weights,
    and an initializer is the same value in the form it reads. Graph outputs produced by a Constant stay nodes.
    """
    out = ModelProto()
    out.CopyFrom(model)
    g = out.graph
    outputs = {o.name for o in g.output}
    keep, moved = [], []
    for node in g.node:
        attr = node.attribute[0] if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if attr is not None and attr.name == "value" and node.domain in ("", "ai.onnx") \
                and node.output[0] not in outputs:
            t = onnx.TensorProto()
            t.CopyFrom(attr.t)
            t.name = node.output[0]
            moved.append(t)
        else:
            keep.append(node)
    if moved:
        del g.node[:]
        g.node.extend(keep)
        g.initializer.extend(moved)
    return out

def node_label(node: onnx.NodeProto, index: int) -> str:
    """A node's name, or ``<op>_<index>`` for unnamed nodes (the name --keep and reports use)."""
    return node.name or f"{node.op_type}_{index}"


def quantizable_nodes(model: ModelProto, trt_rules: bool = True) -> List[str]:
    """Labels of the nodes whose inputs :func:`quantize_qdq` quantizes (Conv, ConvTranspose, Gemm, MatMul; with
    ``trt_rules``, not those TensorRT runs no faster in INT8)."""
    slow = slow_in_int8(model) if trt_rules else {}
    return [node_label(n, i) for i, n in enumerate(model.graph.node) if n.op_type in WEIGHTED_OPS and i not in slow]


def _weight_axis(node: onnx.NodeProto, weight: np.ndarray) -> int:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if int(attrs.get("group", 1)) == 1 else -1
    if node.op_type == "Gemm":
        return 0 if int(attrs.get("transB", 0)) else 1
    if node.op_type == "MatMul":
        return weight.ndim - 1 if weight.ndim >= 2 else -1
    return -1


def plan_qdq(model: ModelProto, amax: Mapping[str, float], keep: Iterable[str] = (), *,
             trt_rules: bool = True) -> QdqPlan:
    """Decide the Q/DQ placement without changing the model (see :func:`quantize_qdq`).

    With ``trt_rules`` the layers TensorRT runs no faster in INT8 (:func:`~edgesqueeze.quant.trt_int8.slow_in_int8`:
    batch-1 GEMVs, small GEMMs, small-channel Convs without INT8 kernels) stay in higher precision too, unless
    that leaves no layer in INT8 (a model of only such layers still gets the INT8 it was asked for).
    """
    keep = set(keep)
    inits = {t.name: t for t in model.graph.initializer}
    plan = QdqPlan()
    slow = slow_in_int8(model) if trt_rules else {}
    for index, node in enumerate(model.graph.node):
        if node.domain == CUSTOM_DOMAIN:  # no Q/DQ around it: its plugin computes in FP16/FP32
            plan.custom[node_label(node, index)] = (f"custom op {node.op_type}: its TensorRT plugin has FP16/FP32 "
                                                    "kernels only, so it stays out of INT8")
            continue
        if node.op_type not in WEIGHTED_OPS:
            continue
        label = node_label(node, index)
        if label in keep or node.name in keep or any(o in keep for o in node.output):
            plan.skipped[label] = "kept in higher precision (--keep)"
            continue
        if index in slow:
            plan.skipped[label] = slow[index]
            continue
        act_idx, w_idx = WEIGHTED_OPS[node.op_type]
        acts, weights, reason = [], [], None
        for i in sorted(set(act_idx) | {w_idx}):
            if i >= len(node.input) or not node.input[i]:
                continue
            name = node.input[i]
            if name in inits:
                w = numpy_helper.to_array(inits[name])
                if w.dtype != np.float32:
                    reason = f"weight '{name}' is {w.dtype}, not float32"
                    break
                weights.append((name, _weight_axis(node, w) if i == w_idx else -1))
            elif i in act_idx:
                value = amax.get(name)
                if value is None:
                    reason = f"no calibrated range for its input '{name}'"
                    break
                if not np.isfinite(value) or value <= 0:
                    reason = f"its input '{name}' has range {value} (constant zero or invalid)"
                    break
                acts.append((name, float(value) / 127.0))
            else:
                reason = (f"its weight '{name}' is computed at run time, not stored: fold constants first "
                          f"(edgesqueeze optimize)")
                break
        if reason is None and not acts:
            reason = "no activation input"
        if reason:
            plan.skipped[label] = reason
            continue
        plan.nodes.append(label)
        for name, scale in acts:
            plan.activations[name] = scale
        for name, axis in weights:
            plan.weights[name] = axis
    if slow and not plan.nodes:  # only small layers: INT8 was asked for, so they get it
        return plan_qdq(model, amax, keep, trt_rules=False)
    _plan_residual_adds(model, amax, keep, plan)
    return plan


def custom_not_quantized(model: ModelProto, amax: Mapping[str, float]) -> Dict[str, str]:
    """``{node label: op type}`` of the custom (edgesqueeze-domain) nodes that :func:`quantize_qdq` leaves in float."""
    nodes = {node_label(n, i): n.op_type for i, n in enumerate(model.graph.node)}
    return {label: nodes[label] for label in plan_qdq(model, amax).custom}


def _plan_residual_adds(model: ModelProto, amax: Mapping[str, float], keep: set, plan: QdqPlan) -> None:
    """Quantize the residual input of an Add that follows a quantized Conv (TensorRT's skip-connection rule).

    TensorRT fuses such an Add into the Conv's epilogue when the other (residual) input is quantized; the
    Conv's own output stays unquantized. When both inputs come from quantized Convs, the second is treated
    as the residual.
    """
    consts = {t.name for t in model.graph.initializer}
    producer = {}
    for index, node in enumerate(model.graph.node):
        for o in node.output:
            producer[o] = (node, node_label(node, index))
    quantized = set(plan.nodes)
    for index, node in enumerate(model.graph.node):
        label = node_label(node, index)
        if node.op_type != "Add" or len(node.input) != 2 or label in keep or node.name in keep:
            continue
        from_conv = [node.input[k] in producer and producer[node.input[k]][1] in quantized
                     and producer[node.input[k]][0].op_type in ("Conv", "ConvTranspose") for k in (0, 1)]
        if not any(from_conv):
            continue
        k = 1 if from_conv[0] else 0
        name = node.input[k]
        value = amax.get(name)
        if name in consts or value is None or not np.isfinite(value) or value <= 0:
            continue
        plan.residual[label] = k
        plan.activations.setdefault(name, float(value) / 127.0)


def _weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    if axis < 0:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
    else:
        moved = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1)
        amax = moved.max(axis=1).astype(np.float32)
    scale = (amax / np.float32(127.0)).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)  # all-zero channel: any scale works


def fake_quantize(x: np.ndarray, scale, axis: int = -1) -> np.ndarray:
    """Numpy reference of QuantizeLinear -> DequantizeLinear (symmetric int8, round half to even).

    ``axis`` < 0 means one scale for the whole tensor.
    """
    scale = np.asarray(scale, np.float32)
    if axis >= 0 and scale.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    q = np.clip(np.rint(np.asarray(x, np.float32) / scale), -128, 127)
    return (q * scale).astype(np.float32)


def quantize_qdq(model: ModelProto, amax: Mapping[str, float], keep: Sequence[str] = (), *,
                 int8_weights: bool = False, plan: Optional[QdqPlan] = None, trt_rules: bool = True) -> ModelProto:
    """Return an explicitly quantized copy of ``model`` (the input is not changed).

    Args:
        model: FP32 model.
        amax: calibrated ``{tensor: amax}`` (from :func:`calibrate` or a TensorRT cache).
        keep: node names (or their output tensor names) to leave unquantized (higher precision).
        int8_weights: store weights as INT8 initializers + DequantizeLinear instead of float + Q + DQ.
        plan: a plan from :func:`plan_qdq` (computed when None, with ``keep`` and ``trt_rules`` as there).

    Returns:
        The QDQ model (opset >= 13), checked by the ONNX checker. ``plan_qdq`` tells what was quantized.

    Raises:
        InputError: nothing could be quantized (the message gives the first reason).
    """
    if opset_version(model) < MIN_OPSET:
        model = convert_opset(model, MIN_OPSET)
    plan = plan or plan_qdq(model, amax, keep, trt_rules=trt_rules)
    if not plan.nodes:
        why = next(iter(plan.skipped.items()), ("model", "it has no Conv/ConvTranspose/Gemm/MatMul"))
        raise InputError(f"nothing to quantize: node '{why[0]}': {why[1]}")
    out = ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    new_inits: List[onnx.TensorProto] = []
    drop_inits = set()
    rename: Dict[str, str] = {}
    pending: Dict[str, List[onnx.NodeProto]] = {}

    def qdq_pair(name: str, scale: np.ndarray, axis: int, source: Optional[np.ndarray]) -> Tuple[str, List]:
        sname, zname = f"{name}_scale", f"{name}_zero_point"
        zp = np.zeros(scale.shape, np.int8)
        new_inits.extend([numpy_helper.from_array(scale.astype(np.float32), sname),
                          numpy_helper.from_array(zp, zname)])
        kw = {"axis": axis} if axis >= 0 and scale.ndim == 1 else {}
        dq_out = f"{name}_DequantizeLinear_Output"
        if source is not None and int8_weights:
            shape = [-1 if k == axis else 1 for k in range(source.ndim)] if axis >= 0 else []
            q = np.clip(np.rint(source / scale.reshape(shape)), -128, 127)
            qname = f"{name}_quantized"
            new_inits.append(numpy_helper.from_array(q.astype(np.int8), qname))
            drop_inits.add(name)
            return dq_out, [helper.make_node("DequantizeLinear", [qname, sname, zname], [dq_out],
                                             name=f"{name}_DequantizeLinear", **kw)]
        q_out = f"{name}_QuantizeLinear_Output"
        return dq_out, [helper.make_node("QuantizeLinear", [name, sname, zname], [q_out],
                                         name=f"{name}_QuantizeLinear", **kw),
                        helper.make_node("DequantizeLinear", [q_out, sname, zname], [dq_out],
                                         name=f"{name}_DequantizeLinear", **kw)]

    for name, scale in plan.activations.items():
        rename[name], pending[name] = qdq_pair(name, np.array(scale, np.float32), -1, None)
    for name, axis in plan.weights.items():
        w = numpy_helper.to_array(inits[name])
        rename[name], pending[name] = qdq_pair(name, _weight_scales(w, axis), axis, w)

    chosen = set(plan.nodes)
    nodes: List[onnx.NodeProto] = []
    for index, node in enumerate(g.node):
        label = node_label(node, index)
        slots = range(len(node.input)) if label in chosen else \
            [plan.residual[label]] if label in plan.residual else []
        for k in slots:
            name = node.input[k]
            if name in rename:
                nodes.extend(pending.pop(name, []))  # emitted once, before the first consumer
                node.input[k] = rename[name]
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    still_used = {i for n in g.node for i in n.input}
    keep_inits = [t for t in g.initializer if not (t.name in drop_inits and t.name not in still_used)]
    del g.initializer[:]
    g.initializer.extend(keep_inits + new_inits)
    # existing value_info stays valid (no tensor changes shape); re-inferring would copy the weights twice more
    onnx.checker.check_model(out)
    return out
