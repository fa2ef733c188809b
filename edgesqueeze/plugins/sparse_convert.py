"""Conversion of ``Conv`` to ``SparseConv``.

:func:`convert_sparse_convs` replaces pruned ``Conv`` layers by ``SparseConv`` nodes that carry compressed
weights (:func:`edgesqueeze.plugins.sparse.densify` turns them back into plain ``Conv`` nodes, the variant for a
TensorRT without the edgesqueeze plugin).

A layer is converted when its weight is 2:4 sparse along the input channels (``"2:4"``) or at most
``csr_max_density`` non-zero (``"csr"``), and the compressed form is smaller than the dense one. A following
activation that only this convolution feeds (Relu, Clip with constant bounds, LeakyRelu, Sigmoid, HardSigmoid,
HardSwish) is folded into the node. The model's outputs do not change: the node's local function decompresses
the weights and runs the same Conv.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from onnx import FunctionProto, GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper

from .ops import DOMAIN, DOMAIN_VERSION, OVERLOAD_IR_VERSION
from .sparse import densify, make_sparse_conv_node, sparse_conv_function
from .sparse_formats import choose_format, compressed_bytes, sparse_conv_inputs

_ACT_OPS = {"Relu": "relu", "Clip": "clip", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid",
            "HardSigmoid": "hard_sigmoid", "HardSwish": "hard_swish"}


def _opset(model: ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _activation(node, inits) -> Optional[Tuple[str, float, float]]:
    """(activation, alpha, beta) of a foldable activation node, or None."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kind = _ACT_OPS.get(node.op_type)
    if kind is None or node.domain not in ("", "ai.onnx"):
        return None
    if kind == "leaky_relu":
        return kind, float(attrs.get("alpha", 0.01)), 0.0
    if kind == "hard_sigmoid":
        return kind, float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    if kind == "clip":
        if "min" in attrs or "max" in attrs:   # opset < 11
            return kind, float(attrs.get("min", -3.4028234663852886e38)), float(attrs.get("max", 3.4028234663852886e38))
        bounds = []
        for i, default in ((1, -3.4028234663852886e38), (2, 3.4028234663852886e38)):
            name = node.input[i] if len(node.input) > i else ""
            if not name:
                bounds.append(default)
            elif name in inits:
                bounds.append(float(numpy_helper.to_array(inits[name]).reshape(-1)[0]))
            else:
                return None
        return kind, bounds[0], bounds[1]
    return kind, 0.0, 0.0


def convert_sparse_convs(model: ModelProto, *, formats: Sequence[str] = ("2:4", "csr"),
                         csr_max_density: float = 0.25, min_weights: int = 1024) -> Tuple[ModelProto, dict]:
    """Replace eligible ``Conv`` nodes by ``SparseConv`` nodes with compressed weights.

    Args:
        model: an ONNX model (not modified) whose pruned Conv weights are initializers.
        formats: the formats allowed, in order of preference.
        csr_max_density: the largest fraction of non-zeros for which CSR is used.
        min_weights: layers with fewer weights stay dense (launch overhead outweighs the bytes saved).

    Returns:
        ``(new model, report)``; report = ``{"converted": [{"node", "format", "dense_bytes", "sparse_bytes"}],
        "skipped": [{"node", "reason"}], "weight_bytes_before", "weight_bytes_after"}``.
    """
    out = ModelProto()
    out.CopyFrom(model)
    plan = _Plan.of(out.graph, _opset(out))
    for idx, node in enumerate(out.graph.node):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        name = node.name or f"conv_{idx}"
        if node.input[1] not in plan.inits:
            plan.report["skipped"].append({"node": name, "reason": "weight is not an initializer"})
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = numpy_helper.to_array(plan.inits[node.input[1]])
        fmt, why = _choose(weight, attrs, plan.opset, formats, csr_max_density, min_weights)
        if why:
            plan.report["skipped"].append({"node": name, "reason": why})
            continue
        _convert(plan, idx, node, name, attrs, weight, fmt)
    if plan.replace:
        _rewrite(out, plan)
    return out, plan.report


@dataclass
class _Plan:
    """The graph's lookups (read) and what the conversion decided (filled conv by conv, applied by _rewrite)."""
    opset: int
    inits: Dict[str, TensorProto]
    consumers: Counter
    graph_outputs: set
    by_input: Dict[str, List[NodeProto]]  # holds the node objects whose id() is in drop_nodes
    report: dict = field(default_factory=lambda: {"converted": [], "skipped": [], "weight_bytes_before": 0,
                                                  "weight_bytes_after": 0})
    replace: Dict[int, list] = field(default_factory=dict)   # node index -> its replacement nodes
    drop_nodes: set = field(default_factory=set)              # id() of folded activation nodes
    drop_inits: set = field(default_factory=set)
    new_inits: List[TensorProto] = field(default_factory=list)
    functions: Dict[str, FunctionProto] = field(default_factory=dict)
    folded: set = field(default_factory=set)                  # tensors that no longer exist

    @classmethod
    def of(cls, graph: GraphProto, opset: int) -> "_Plan":
        by_input: Dict[str, List[NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                by_input.setdefault(i, []).append(n)
        return cls(opset, {t.name: t for t in graph.initializer}, Counter(i for n in graph.node for i in n.input),
                   {o.name for o in graph.output}, by_input)


def _choose(weight: np.ndarray, attrs: dict, opset: int, formats: Sequence[str], csr_max_density: float,
            min_weights: int) -> Tuple[Optional[str], Optional[str]]:
    """(format, None) for a convertible weight, else (format or None, the reason it stays dense)."""
    why = None
    if weight.ndim != 4:
        why = "not a 2-D convolution"
    elif int(attrs.get("group", 1)) != 1:
        why = "grouped convolution"
    elif attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        why = "auto_pad is not supported; make pads explicit first"
    elif weight.dtype not in (np.float32, np.float16):
        why = f"weight type {weight.dtype}"
    elif weight.size < min_weights:
        why = f"fewer than {min_weights} weights"
    fmt = None
    if why is None:
        fmt = choose_format(weight, csr_max_density)
        if fmt is None or fmt not in formats:
            why = "weight is neither 2:4 sparse nor sparse enough for CSR" if fmt is None else \
                f"format {fmt} not allowed"
        elif fmt == "csr" and opset < 16:
            why = "CSR needs ai.onnx opset >= 16"
        elif compressed_bytes(weight, fmt) >= weight.nbytes:
            why = f"{fmt} would not be smaller"
    return fmt, why


def _following_activation(plan: _Plan, node: NodeProto):
    """(activation, alpha, beta, output name, activation node or None): a following activation that only this
    convolution feeds is folded into it."""
    nxt = plan.by_input.get(node.output[0], [])
    if len(nxt) == 1 and plan.consumers[node.output[0]] == 1 and node.output[0] not in plan.graph_outputs:
        fold = _activation(nxt[0], plan.inits)
        if fold:
            return (*fold, nxt[0].output[0], nxt[0])
    return "none", 0.0, 0.0, node.output[0], None


def _convert(plan: _Plan, idx: int, node: NodeProto, name: str, attrs: dict, weight: np.ndarray, fmt: str) -> None:
    """Plan one Conv's SparseConv node, its compressed initializers and its report entry."""
    act, alpha, beta, out_name, act_node = _following_activation(plan, node)
    arrays = sparse_conv_inputs(weight, fmt, weight.dtype)
    names = []
    for key, arr in arrays.items():
        names.append(f"{name}_{key}")
        plan.new_inits.append(numpy_helper.from_array(arr, names[-1]))
    if len(node.input) > 2 and node.input[2]:
        bias_name = node.input[2]
    else:
        bias_name = f"{name}_bias"
        plan.new_inits.append(numpy_helper.from_array(np.zeros(weight.shape[0], weight.dtype), bias_name))
    kh, kw = weight.shape[2:]
    sparse = make_sparse_conv_node([node.input[0]] + names + [bias_name], [out_name], sparse_format=fmt,
                                   kernel_shape=(kh, kw), strides=attrs.get("strides", (1, 1)),
                                   pads=attrs.get("pads", (0, 0, 0, 0)), dilations=attrs.get("dilations", (1, 1)),
                                   activation=act, alpha=alpha, beta=beta, name=name, dtype=weight.dtype)
    plan.functions.setdefault(sparse.overload, sparse_conv_function(sparse, plan.opset))
    plan.replace[idx] = [sparse]
    if act_node is not None:
        plan.drop_nodes.add(id(act_node))
        plan.folded.add(node.output[0])
    if plan.consumers[node.input[1]] == 1:
        plan.drop_inits.add(node.input[1])
    sparse_b = sum(a.nbytes for a in arrays.values())
    plan.report["converted"].append({"node": name, "format": fmt, "activation": act,
                                     "dense_bytes": int(weight.nbytes), "sparse_bytes": int(sparse_b)})
    plan.report["weight_bytes_before"] += int(weight.nbytes)
    plan.report["weight_bytes_after"] += int(sparse_b)


def _rewrite(out: ModelProto, plan: _Plan) -> None:
    """Apply ``plan`` to ``out`` in place: nodes, initializers, value_info, functions, opsets, IR version."""
    graph = out.graph
    nodes = []
    for idx, node in enumerate(graph.node):
        if id(node) in plan.drop_nodes:
            continue
        nodes.extend(plan.replace.get(idx, [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in plan.drop_inits]
    del graph.initializer[:]
    graph.initializer.extend(kept + plan.new_inits)
    kept_vi = [vi for vi in graph.value_info if vi.name not in plan.folded]
    del graph.value_info[:]
    graph.value_info.extend(kept_vi)
    out.functions.extend(plan.functions[k] for k in sorted(plan.functions))
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    out.ir_version = max(out.ir_version, OVERLOAD_IR_VERSION)


def sparse_2_4_formats(model: ModelProto) -> List[str]:
    """The ``sparse_format`` of every ``SparseConv`` node of the main graph, in node order."""
    out = []
    for node in model.graph.node:
        if node.op_type == "SparseConv" and node.domain == DOMAIN:
            fmt = next((a.s for a in node.attribute if a.name == "sparse_format"), b"")
            out.append(fmt.decode() if isinstance(fmt, bytes) else str(fmt))
    return out


def route_sparse_2_4(models: Dict[str, ModelProto], sparse_tensor_cores: bool) -> Tuple[Dict[str, ModelProto], bool]:
    """Where 2:4 SparseConv layers run on a board: ``(models for TensorRT, whether --sparsity=enable is needed)``.

    With 2:4 sparse tensor cores (sm_80+: Orin, Thor) every 2:4 ``SparseConv`` becomes a dense ``Conv`` whose weights
    keep the zeros, so TensorRT's own sparse tensor-core kernels (``--sparsity=enable``, metadata layout and
    ``mma.sp`` its own) run it, not our plugin; CSR nodes stay plugin nodes. Elsewhere (TX2, Xavier, Nano) the
    plugin's tiled 2:4 kernel keeps the compressed weights. Models without 2:4 nodes come back as the same objects.
    """
    if not sparse_tensor_cores or not any("2:4" in sparse_2_4_formats(m) for m in models.values()):
        return models, False
    return {kind: densify(m, formats=("2:4",)) if "2:4" in sparse_2_4_formats(m) else m
            for kind, m in models.items()}, True
