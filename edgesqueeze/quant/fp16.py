"""FP16 conversion: fp16 weights and compute, fp32 graph inputs/outputs by default, chosen nodes kept in fp32.

Every float tensor gets a home precision from the node that produces it (fp16 unless the node is kept in fp32).
Where a node reads a tensor in the other precision, one shared Cast is inserted. Weights are stored in fp16
when every consumer computes in fp16 (values beyond the fp16 range are clipped to +-65504, and counted).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from ..errors import UnsupportedError
from ..model import checkable, infer_shapes, put_back_weights, strip_weights
from ..plugins.ops import convert_fp16_functions

FP32, FP16 = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = 65504.0
# (op, input index) that the ONNX spec types as float32 whatever the data type: they stay fp32.
QDQ_FP16_OPSET = 19  # first ai.onnx opset whose QuantizeLinear/DequantizeLinear take float16 scales
FP32_SLOTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
# ops whose outputs are never float (or that do not compute): left as they are.
TYPE_FREE = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin"}
# ops the ONNX spec defines without float16 (Range: float, double, int16/32/64): they stay fp32, with Casts around
FP32_ONLY = {"Range", "NonMaxSuppression"}


def _elem_types(model: ModelProto) -> Dict[str, int]:
    inferred = infer_shapes(model)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)}
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _to_fp16_tensor(t: TensorProto, clipped: List[str]) -> TensorProto:
    """The float32 weight ``t`` cast to float16 (round to nearest even), values beyond +-65504 clipped to it.

    In float32 throughout, with no temporary the size of the weight: a float32 value is exact in float64, so
    both round to the same float16, and comparing it with 65504 (a float32) is exact too.
    """
    arr = numpy_helper.to_array(t)
    # fmax/fmin skip NaN (kept as NaN by the cast, as np.clip keeps it)
    if arr.size and (np.fmax.reduce(arr, axis=None) > FP16_MAX or np.fmin.reduce(arr, axis=None) < -FP16_MAX):
        clipped.append(t.name)
        arr = np.clip(arr, -FP16_MAX, FP16_MAX)
    return numpy_helper.from_array(arr.astype(np.float16), t.name)


def convert_fp16(model: ModelProto, keep_fp32: Iterable[str] = (), keep_io_types: bool = True, *,
                 report: Optional[dict] = None, qdq_fp16: bool = False) -> ModelProto:
    """Return an FP16 copy of ``model`` (the input is not changed).

    Args:
        model: FP32 model.
        keep_fp32: node names, output tensor names or op types (e.g. ``"Softmax"``) that stay in fp32
            (ops that overflow in fp16: large reductions, exponentials).
        keep_io_types: keep fp32 graph inputs and outputs (Casts inside the graph); False makes them fp16.
        report: when a dict is given, it receives ``{"fp16_nodes", "fp32_nodes", "casts", "clipped_weights"}``.
        qdq_fp16: for a QDQ model: convert the Q/DQ nodes' scales to FP16 too, so that Q/DQ sit directly on FP16
            tensors (what a strongly typed TensorRT build needs for INT8 layers on an FP16 base). Needs ai.onnx
            opset 19 (QuantizeLinear on float16); an older model is converted first. By default Q/DQ stay FP32.

    Returns:
        The converted model, checked by the ONNX checker, runnable by onnxruntime.

    Raises:
        UnsupportedError: the model holds control flow (If/Loop/Scan), which is not converted.
    """
    # Q/DQ pairs keep their FP32 scales (QuantizeLinear wants x and its scale in one type): they stay FP32, with
    # Casts to the FP16 layers around them
    keep = set(keep_fp32) | FP32_ONLY | (set() if qdq_fp16 else {"QuantizeLinear", "DequantizeLinear"})
    if qdq_fp16:
        from ..model import convert_opset, opset_version

        if 0 < opset_version(model) < QDQ_FP16_OPSET:
            model = convert_opset(model, QDQ_FP16_OPSET)
    types = _elem_types(model)
    out, stripped = strip_weights(model)  # a copy with stubs for the large weights: those are read, not copied
    g = out.graph
    for node in g.node:
        if _has_subgraph(node):
            raise UnsupportedError(f"FP16 conversion does not handle control flow ({node.op_type})",
                                   node=node.name or node.op_type, hint="keep it out or convert it in the framework")
    conv = _Conversion(types)
    graph_in = _plan_precisions(conv, g, keep, keep_io_types)
    _convert_initializers(conv, g, stripped)
    put_back_weights(out, stripped)  # the weights that stay FP32
    _rewrite_nodes(conv, g)
    _cast_graph_outputs(conv, g, keep_io_types)
    if not keep_io_types:
        for vi in graph_in:
            if vi.name in conv.home:
                vi.type.tensor_type.elem_type = conv.home[vi.name]
    del g.node[:]
    g.node.extend(conv.nodes)
    del g.value_info[:]
    convert_fp16_functions(out)  # FP32 function bodies under FP16 weights fail the checker and onnxruntime
    out = infer_shapes(out)
    onnx.checker.check_model(checkable(out))  # an FP16 result over 2 GB is checked without serialising it
    if report is not None:
        report.update({"fp16_nodes": sum(conv.node_fp16), "fp32_nodes": len(conv.node_fp16) - sum(conv.node_fp16),
                       "casts": len(conv.casts) + sum(1 for n in conv.nodes if n.name.endswith("_output_Cast")),
                       "clipped_weights": sorted(set(conv.clipped))})
    return out


@dataclass
class _Conversion:
    """The conversion's state: every tensor's element type before, the precision of every node (graph order),
    the home precision of every float tensor, and the rewritten nodes with the Casts they need."""
    types: Dict[str, int]
    node_fp16: List[bool] = field(default_factory=list)
    home: Dict[str, int] = field(default_factory=dict)
    clipped: List[str] = field(default_factory=list)         # tensors whose values were clipped to the fp16 range
    casts: Dict[Tuple[str, int], str] = field(default_factory=dict)  # (tensor, to) -> the Cast's output
    nodes: List[onnx.NodeProto] = field(default_factory=list)

    def is_float(self, name: str) -> bool:
        return self.types.get(name) in (FP32, FP16)

    def cast_of(self, name: str, to: int) -> str:
        """The tensor ``name`` in precision ``to``: one shared Cast per (tensor, precision), added on first use."""
        key = (name, to)
        if key not in self.casts:
            self.casts[key] = f"{name}_to_{'fp16' if to == FP16 else 'fp32'}"
            self.nodes.append(helper.make_node("Cast", [name], [self.casts[key]], to=to,
                                               name=f"{self.casts[key]}_Cast"))
        return self.casts[key]


def _wide_batchnorm_stats(g: onnx.GraphProto, inits: Dict[str, TensorProto]) -> Set[str]:
    """BatchNorm parameters beyond the fp16 range (ppocr_det's first variance is 9.8e7): clipped to 65504 they
    wreck the layer, and TensorRT folds them into an fp32 scale anyway, so that BatchNorm (and a Constant node
    holding them) stays fp32."""
    def wide(t: TensorProto) -> bool:
        arr = numpy_helper.to_array(t)
        return t.data_type == FP32 and arr.size > 0 and float(np.abs(arr[np.isfinite(arr)]).max(initial=0)) > FP16_MAX

    values = dict(inits)
    values.update({n.output[0]: a.t for n in g.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})
    return {t for n in g.node if n.op_type == "BatchNormalization" for t in n.input[1:] if t in values
            and wide(values[t])}


def _plan_precisions(conv: _Conversion, g: onnx.GraphProto, keep: Set[str], keep_io_types: bool) -> list:
    """Fill the precision of every node and the home precision of every float tensor it produces; returns the
    graph inputs that are not initializers."""
    inits = {t.name: t for t in g.initializer}
    graph_in = [vi for vi in g.input if vi.name not in inits]
    wide_bn = _wide_batchnorm_stats(g, inits)
    for vi in graph_in:
        if conv.is_float(vi.name):
            conv.home[vi.name] = FP32 if keep_io_types or conv.types[vi.name] != FP32 else FP16
    for node in g.node:
        fp16 = not (node.name in keep or node.op_type in keep or any(o in keep for o in node.output)
                    or node.op_type in TYPE_FREE or any(t in wide_bn for t in [*node.input, *node.output]))
        conv.node_fp16.append(fp16)
        for o in node.output:
            if o and conv.is_float(o):
                conv.home[o] = FP16 if fp16 and conv.types[o] == FP32 else conv.types[o]
    return graph_in


def _convert_initializers(conv: _Conversion, g: onnx.GraphProto, stripped: Dict[str, TensorProto]) -> None:
    """Initializers become fp16 when every float-typed consumer slot wants fp16 (a stub of ``stripped`` is
    converted from its weight there, or left for :func:`put_back_weights`)."""
    wants: Dict[str, Set[int]] = {}
    for node, fp16 in zip(g.node, conv.node_fp16):
        for k, name in enumerate(node.input):
            if name and conv.is_float(name):
                want = FP16 if fp16 and (node.op_type, k) not in FP32_SLOTS else FP32
                wants.setdefault(name, set()).add(want)
    new_inits = []
    for t in g.initializer:
        if t.data_type == FP32 and wants.get(t.name) == {FP16}:
            new_inits.append(_to_fp16_tensor(stripped.get(t.name, t), conv.clipped))
            conv.home[t.name] = FP16
        else:
            new_inits.append(t)
            if t.data_type in (FP32, FP16):
                conv.home[t.name] = t.data_type
    del g.initializer[:]
    g.initializer.extend(new_inits)


def _rewrite_nodes(conv: _Conversion, g: onnx.GraphProto) -> None:
    """Typed attributes of fp16 nodes become fp16, then Casts go where a consumer wants the other precision."""
    for node, fp16 in zip(list(g.node), conv.node_fp16):
        if fp16:
            for a in node.attribute:
                if node.op_type == "Cast" and a.name == "to" and a.i == FP32:
                    a.i = FP16
                elif a.name in ("value", "value_float") and a.type == onnx.AttributeProto.TENSOR \
                        and a.t.data_type == FP32:
                    a.t.CopyFrom(_to_fp16_tensor(a.t, conv.clipped))
                elif a.name == "dtype" and a.type == onnx.AttributeProto.INT and a.i == FP32:
                    a.i = FP16
        for k, name in enumerate(node.input):
            if not name or name not in conv.home:
                continue
            want = FP16 if fp16 and (node.op_type, k) not in FP32_SLOTS else FP32
            if conv.home[name] != want:
                node.input[k] = conv.cast_of(name, want)
        conv.nodes.append(node)


def _cast_graph_outputs(conv: _Conversion, g: onnx.GraphProto, keep_io_types: bool) -> None:
    """Give each float graph output its type (fp32 with keep_io_types): a producer in the other precision
    writes an inner tensor and a final Cast writes the output."""
    for vi in g.output:
        name = vi.name
        if name not in conv.home:
            continue
        target = conv.types.get(name, FP32) if keep_io_types else conv.home[name]
        if conv.home[name] != target:
            inner = f"{name}_{'fp16' if conv.home[name] == FP16 else 'fp32'}"
            for n in conv.nodes:
                n.output[:] = [inner if o == name else o for o in n.output]
                n.input[:] = [inner if i == name else i for i in n.input]
            for key, val in list(conv.casts.items()):
                if key[0] == name:
                    conv.casts[(inner, key[1])] = conv.casts.pop(key)
            conv.nodes.append(helper.make_node("Cast", [inner], [name], to=target, name=f"{name}_output_Cast"))
        vi.type.tensor_type.elem_type = target
