"""Per-layer cost analysis: parameters, MACs, bytes moved, arithmetic intensity and a roofline estimate.

The roofline time of a layer is ``max(FLOPs / peak FLOP/s, bytes / peak bandwidth)`` at the chosen precision on
the target; the model's estimate sums the layers (``roofline_ms``) and, for ``roofline_fused_ms``, leaves out the
memory traffic of pointwise ops that TensorRT fuses into the preceding convolution or GEMM. ``predicted_ms`` adds
the profile's per-layer launch overhead (``kernel_launch_us``) for every layer that runs as its own kernel: small
networks on a Jetson are launch-bound, not roofline-bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Set

import numpy as np
import onnx

from .devices import DeviceProfile, get_profile
from .errors import InputError
from .model import tensor_shape
from .plugins.ops import numel as _numel
from .plugins.ops import op_of

BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
# ops that only move or relabel data: no arithmetic, and TensorRT usually makes them free
SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Transpose", "Cast",
             "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "ConstantOfShape", "Constant"}
# pointwise ops TensorRT fuses into a preceding Conv/Gemm (vertical fusion)
FUSABLE = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "BatchNormalization",
           "Add", "Mul", "Sub", "Div", "PRelu", "Elu", "Selu", "Softplus"}
# explicit-quantization nodes: TensorRT folds them into the neighbouring layers' INT8 kernels
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}  # and every registered custom op (plugins/ops.py)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _is_mac(node: onnx.NodeProto) -> bool:
    """A convolution / GEMM style node (its epilogue fuses the following pointwise ops)."""
    return node.op_type in MAC_OPS or op_of(node) is not None


class _Shapes:
    """Tensor shapes and element sizes from the model's inferred value_info, inputs, outputs and initializers."""

    def __init__(self, model: onnx.ModelProto):
        self.shape: Dict[str, list] = {}
        self.itemsize: Dict[str, int] = {}
        self.elem_type: Dict[str, int] = {}
        g = model.graph
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            self.shape[vi.name] = tensor_shape(vi)
            et = vi.type.tensor_type.elem_type
            if et:
                self.itemsize[vi.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(et)).itemsize
                self.elem_type[vi.name] = et
        for t in g.initializer:
            self.shape[t.name] = list(t.dims)
            self.itemsize[t.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
            self.elem_type[t.name] = t.data_type
        for n in g.node:
            if n.op_type == "Constant":
                v = _attr(n, "value")
                if isinstance(v, onnx.TensorProto):
                    self.shape[n.output[0]] = list(v.dims)
                    self.itemsize[n.output[0]] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.data_type)).itemsize
                    self.elem_type[n.output[0]] = v.data_type

    def numel(self, name: str) -> int:
        return _numel(self.shape.get(name))

    def is_index(self, name: str) -> bool:
        """True for int64/bool tensors: axes, shapes, pads, indices (operator arguments, not weights)."""
        return self.elem_type.get(name) in (onnx.TensorProto.INT64, onnx.TensorProto.BOOL)


def _constant_tensors(model: onnx.ModelProto) -> Set[str]:
    """Initializers, Constant outputs, and outputs of nodes computed only from constants (ConstantOfShape...)."""
    const = {t.name for t in model.graph.initializer}
    const.discard("")
    real_inputs = {i.name for i in model.graph.input} - const
    for n in model.graph.node:
        ins = [i for i in n.input if i]
        if n.op_type == "Constant" or (ins and all(i in const for i in ins) and not set(ins) & real_inputs):
            const.update(o for o in n.output if o)
    return const


def _macs(node, shapes: _Shapes, const: Set[str]) -> int:
    custom = op_of(node)
    if custom is not None:
        return custom.macs(node, lambda name: shapes.shape.get(name) or [])
    op = node.op_type
    out = shapes.shape.get(node.output[0]) if node.output else None
    if op == "Conv" and len(node.input) > 1:
        w = shapes.shape.get(node.input[1]) or []
        if len(w) >= 3:
            return _numel(out) * int(np.prod(w[1:]))
    if op == "ConvTranspose" and len(node.input) > 1:
        w = shapes.shape.get(node.input[1]) or []
        x = shapes.shape.get(node.input[0]) or []
        if len(w) >= 3:
            return _numel(x) * int(np.prod(w[1:]))
    if op == "Gemm":
        a = shapes.shape.get(node.input[0]) or []
        if len(a) == 2 and out:
            k = a[0] if _attr(node, "transA", 0) else a[1]
            return _numel(out) * int(k) if isinstance(k, int) else 0
    if op == "MatMul":
        a = shapes.shape.get(node.input[0]) or []
        if a and isinstance(a[-1], int):
            return _numel(out) * int(a[-1])
    return 0


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of a shape-inferred model (Conv, ConvTranspose, Gemm, MatMul, custom ops; a node with
    an unknown shape counts 0): the one rule that ``inspect`` and the compression reports use."""
    shapes, const = _Shapes(model), _constant_tensors(model)
    return sum(_macs(n, shapes, const) for n in model.graph.node)


def _other_flops(node, shapes: _Shapes) -> int:
    op = node.op_type
    if op in SHAPE_OPS:
        return 0
    out = shapes.numel(node.output[0]) if node.output else 0
    if op in ("MaxPool", "AveragePool", "LpPool"):
        k = _attr(node, "kernel_shape", [1])
        return out * int(np.prod(k))
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax"):
        return shapes.numel(node.input[0])
    if op == "BatchNormalization":
        return 2 * out
    if op in ("Softmax", "LogSoftmax", "LRN", "LayerNormalization", "InstanceNormalization"):
        return 5 * out
    return out


def inspect_model(model: onnx.ModelProto, target: Optional[str] = None, precision: str = "fp32",
                  sparse: bool = False) -> dict:
    """Analyse ``model`` (shapes must be inferred, as :func:`edgesqueeze.model.load_model` does).

    Args:
        model: the model.
        target: a device profile name (or :class:`DeviceProfile`); adds the roofline estimate.
        precision: fp32, fp16 or int8: sets bytes per weight/activation and the peak used.
        sparse: use the target's 2:4 sparse INT8 peak.

    Returns:
        ``{"layers": [...], "totals": {...}, "dwsep_blocks": [...], "target": ..., "precision": ...}``. Each layer has
        name, op, output_shape, params, macs, flops, weight_bytes, act_in_bytes, act_out_bytes, intensity (FLOP per
        byte) and, with a target, compute_ms, memory_ms, time_ms, bound ("compute"/"memory", "-" for a layer with no FLOPs and no bytes) and fused.

    Raises:
        InputError: unknown precision or target.
    """
    if precision not in BYTES:
        raise InputError(f"unknown precision '{precision}'; choose fp32, fp16 or int8")
    profile: Optional[DeviceProfile] = get_profile(target) if target is not None else None
    shapes = _Shapes(model)
    const = _constant_tensors(model)
    elem = BYTES[precision]
    links = _Links.of(model)

    layers = []
    for idx, node in enumerate(model.graph.node):
        if node.output and all(o in const for o in node.output if o):
            continue  # constant subgraph (folded away before execution)
        layer, flops, total_bytes = _layer_costs(idx, node, shapes, const, elem, links)
        if profile is not None:
            peak = profile.peak_flops(precision, sparse=sparse)
            compute = flops / peak * 1e3
            memory = total_bytes / profile.peak_bandwidth * 1e3
            layer.update({"compute_ms": compute, "memory_ms": memory, "time_ms": max(compute, memory),
                          "bound": "-" if not flops and not total_bytes else "compute" if compute >= memory
                          else "memory"})  # a Reshape moves and computes nothing: bound by neither
        layers.append(layer)

    totals = _totals(model, layers, shapes, const, elem)
    result = {"target": profile.name if profile else None, "precision": precision, "sparse": sparse,
              "layers": layers, "totals": totals, "dwsep_blocks": dwsep_blocks(model, shapes, const, elem, profile)}
    if profile is not None:
        _roofline_totals(totals, layers, profile, precision, sparse)
    return result


@dataclass(frozen=True)
class _Links:
    """Who reads and who writes each tensor, and the graph's outputs: what decides whether TensorRT fuses a layer."""
    consumers: Dict[str, List[onnx.NodeProto]]
    producer: Dict[str, onnx.NodeProto]
    graph_outputs: Set[str]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "_Links":
        consumers: Dict[str, List[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        return cls(consumers, {o: n for n in model.graph.node for o in n.output}, {o.name for o in model.graph.output})


def _layer_costs(idx: int, node, shapes: _Shapes, const: Set[str], elem: int, links: _Links):
    """``(layer record without the roofline, FLOPs, bytes moved)`` of one node."""
    w_in = [i for i in node.input if i and i in const]
    a_in = [i for i in node.input if i and i not in const]
    params = sum(shapes.numel(i) for i in w_in if not shapes.is_index(i)) if node.op_type not in SHAPE_OPS else 0
    macs = _macs(node, shapes, const)
    flops = 2 * macs + (0 if _is_mac(node) else _other_flops(node, shapes))
    if _is_mac(node):
        flops += shapes.numel(node.output[0])  # bias/activation epilogue
    weight_bytes = params * elem if node.op_type not in SHAPE_OPS else 0
    act_in = sum(shapes.numel(i) for i in a_in) * elem
    act_out = sum(shapes.numel(o) for o in node.output if o) * elem
    if node.op_type in SHAPE_OPS:
        act_in = act_out = 0
    # a pointwise op right after a Conv/Gemm whose output has no other reader is fused by TensorRT
    fed_by = links.producer.get(a_in[0]) if a_in else None
    fused = ((node.op_type in FUSABLE and fed_by is not None and (_is_mac(fed_by) or fed_by.op_type in FUSABLE)
              and len(links.consumers.get(a_in[0], [])) == 1 and a_in[0] not in links.graph_outputs)
             or node.op_type in QDQ_OPS)
    total_bytes = weight_bytes + act_in + act_out
    layer = {"index": idx, "name": node.name or f"{node.op_type}_{idx}", "op": node.op_type,
             "domain": node.domain or "ai.onnx",
             "output_shape": shapes.shape.get(node.output[0], []) if node.output else [],
             "params": int(params), "macs": int(macs), "flops": int(flops), "weight_bytes": int(weight_bytes),
             "act_in_bytes": int(act_in), "act_out_bytes": int(act_out),
             "intensity": round(flops / total_bytes, 3) if total_bytes else 0.0, "fused": bool(fused)}
    return layer, flops, total_bytes


def _totals(model: onnx.ModelProto, layers: List[dict], shapes: _Shapes, const: Set[str], elem: int) -> dict:
    """Sums over the layers, the overall intensity and the least bytes an inference must move."""
    totals = {
        "layers": len(layers),
        "params": int(sum(l["params"] for l in layers)),
        "macs": int(sum(l["macs"] for l in layers)),
        "flops": int(sum(l["flops"] for l in layers)),
        "weight_bytes": int(sum(l["weight_bytes"] for l in layers)),
        "activation_bytes": int(sum(l["act_in_bytes"] + l["act_out_bytes"] for l in layers)),
    }
    totals["bytes"] = totals["weight_bytes"] + totals["activation_bytes"]
    totals["intensity"] = round(totals["flops"] / totals["bytes"], 3) if totals["bytes"] else 0.0
    # bytes that must move per inference at minimum: weights once, each activation written once and read once
    io_bytes = sum(shapes.numel(i.name) for i in model.graph.input if i.name not in const) * elem
    totals["min_bytes"] = int(totals["weight_bytes"] + 2 * sum(
        l["act_out_bytes"] for l in layers if not l["fused"] and l["op"] not in SHAPE_OPS) + io_bytes)
    return totals


def _roofline_totals(totals: dict, layers: List[dict], profile: DeviceProfile, precision: str, sparse: bool) -> None:
    """Add the target's roofline sums to ``totals``: unfused and fused time, kernel launches, the peaks."""
    totals["roofline_ms"] = sum(l["time_ms"] for l in layers)
    fused_ms = 0.0
    for l in layers:
        if l["fused"] or l["op"] in SHAPE_OPS:
            continue
        fused_ms += l["time_ms"]
    totals["roofline_fused_ms"] = fused_ms
    # what a deployed engine costs beyond the roofline: one launch per executed (unfused) layer
    kernels = sum(1 for l in layers if not l["fused"] and l["op"] not in SHAPE_OPS)
    totals["kernels"] = kernels
    totals["kernel_launch_us"] = profile.kernel_launch_s * 1e6
    totals["predicted_ms"] = fused_ms + kernels * profile.kernel_launch_s * 1e3
    totals["compute_bound_layers"] = sum(1 for l in layers if l["bound"] == "compute")
    totals["memory_bound_layers"] = sum(1 for l in layers if l["bound"] == "memory")
    totals["peak_flops"] = profile.peak_flops(precision, sparse=sparse)
    totals["peak_bandwidth"] = profile.peak_bandwidth
    totals["ridge_intensity"] = totals["peak_flops"] / totals["peak_bandwidth"]


def _is_depthwise(node, shapes: _Shapes) -> bool:
    if node.op_type != "Conv" or len(node.input) < 2:
        return False
    w = shapes.shape.get(node.input[1]) or []
    group = _attr(node, "group", 1)
    return len(w) == 4 and group > 1 and w[1] == 1 and w[0] == group


def _is_pointwise(node, shapes: _Shapes) -> bool:
    if node.op_type != "Conv" or len(node.input) < 2:
        return False
    w = shapes.shape.get(node.input[1]) or []
    return len(w) == 4 and w[2] == 1 and w[3] == 1 and _attr(node, "group", 1) == 1


def dwsep_blocks(model, shapes: _Shapes, const: Set[str], elem: int,
                 profile: Optional[DeviceProfile]) -> List[dict]:
    """Depthwise-separable blocks (fused nodes, or dw Conv -> [activations] -> 1x1 Conv chains).

    For each block: DRAM bytes unfused (the depthwise output written and read back) vs fused (it stays on chip),
    and with a target the roofline time both ways.
    """
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    blocks = []

    def add(name, dw_w, pw_w, x, mid, y, fused_now, nodes):
        mid_bytes = shapes.numel(mid) * elem if isinstance(mid, str) else _numel(mid) * elem
        weights = (shapes.numel(dw_w) + shapes.numel(pw_w)) * elem
        io = (shapes.numel(x) + shapes.numel(y)) * elem
        wdw = shapes.shape.get(dw_w) or [0, 1, 1, 1]
        mid_numel = mid_bytes // elem
        flops = 2 * (mid_numel * int(np.prod(wdw[2:])) + shapes.numel(y) * (shapes.shape.get(pw_w) or [0, 0])[1])
        b = {"name": name, "nodes": nodes, "fused_node": fused_now, "intermediate_bytes": int(mid_bytes),
             "unfused_bytes": int(weights + io + 2 * mid_bytes), "fused_bytes": int(weights + io),
             "bytes_saved": int(2 * mid_bytes), "flops": int(flops)}
        if profile is not None:
            peak = profile.peak_flops("fp32" if elem == 4 else ("fp16" if elem == 2 else "int8"))
            c = flops / peak * 1e3
            b["unfused_ms"] = max(c, b["unfused_bytes"] / profile.peak_bandwidth * 1e3)
            b["fused_ms"] = max(c, b["fused_bytes"] / profile.peak_bandwidth * 1e3)
        blocks.append(b)

    for node in model.graph.node:
        custom = op_of(node)
        block = custom.fused_block(node, lambda name: shapes.shape.get(name) or []) if custom else None
        if block is not None:
            add(node.name, block["dw_weight"], block["pw_weight"], block["x"], block["mid"], block["y"], True,
                [node.name])
        elif _is_depthwise(node, shapes):
            chain = [node]
            cur = node.output[0]
            while True:
                nxt = consumers.get(cur, [])
                if len(nxt) != 1:
                    break
                n2 = nxt[0]
                if n2.op_type in ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish",
                                  "BatchNormalization"):
                    chain.append(n2)
                    cur = n2.output[0]
                    continue
                if _is_pointwise(n2, shapes):
                    chain.append(n2)
                    add(node.name or node.output[0], node.input[1], n2.input[1], node.input[0], node.output[0],
                        n2.output[0], False, [c.name or c.output[0] for c in chain])
                break
    return blocks
