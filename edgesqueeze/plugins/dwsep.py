"""The ``DepthwiseSeparableConv`` custom op (domain ``edgesqueeze``) and its ONNX local function.

One node computes ``act_pw(Conv1x1(act_dw(DepthwiseConv(x))))``: a depthwise convolution (group == channels)
with bias, an optional activation, a pointwise (1x1) convolution with bias and an optional activation.

Inputs: ``X [N,C,H,W]``, ``W_dw [C,1,kh,kw]``, ``B_dw [C]``, ``W_pw [M,C,1,1]``, ``B_pw [M]``.
Attributes: ``kernel_shape``, ``strides``, ``pads`` (ONNX order), ``dilations``, ``dw_activation`` /
``pw_activation`` (one of :data:`ACTIVATIONS`), ``dw_alpha``, ``dw_beta``, ``pw_alpha``, ``pw_beta`` and the
string attributes TensorRT's ONNX parser reads (``plugin_namespace`` "", ``plugin_version`` "1").

A function body is fixed, but the activations, the group count (= channels) and the element type differ from
node to node. Each distinct combination is therefore an IR-10 function *overload* keyed
``"<dw_activation>.<pw_activation>.c<channels>.<dtype>"``: the node keeps op_type ``DepthwiseSeparableConv`` (the
name TensorRT maps to the plugin) and names its overload; the function forwards the geometry and the activation
parameters through attribute references. onnxruntime (1.18+, IR 10) resolves the overload and runs the body
unchanged.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import AttributeProto, FunctionProto, ModelProto, NodeProto, TensorProto, helper

from ..errors import InputError, UnsupportedError
from ..model import iter_nodes

DOMAIN = "edgesqueeze"
OP_TYPE = "DepthwiseSeparableConv"
DOMAIN_VERSION = 1
ACTIVATIONS = ("none", "relu", "clip", "leaky_relu", "sigmoid", "hard_sigmoid", "hard_swish")
#: the IR version that carries function overloads
OVERLOAD_IR_VERSION = 10

_DTYPES = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16}
_FUNCTION_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "dw_activation", "pw_activation", "dw_alpha",
                   "dw_beta", "pw_alpha", "pw_beta", "plugin_namespace", "plugin_version")


def _dtype_tag(dtype, op_type: str = OP_TYPE) -> str:
    """``f32``/``f16`` for a numpy dtype or TensorProto element type; other types are unsupported by ``op_type``."""
    if isinstance(dtype, int):  # a TensorProto element type
        for tag, elem in _DTYPES.items():
            if elem == dtype:
                return tag
        raise UnsupportedError(f"{op_type} supports float32 and float16, not "
                               f"{TensorProto.DataType.Name(dtype)}")
    dt = np.dtype(dtype)
    if dt == np.float32:
        return "f32"
    if dt == np.float16:
        return "f16"
    raise UnsupportedError(f"{op_type} supports float32 and float16, not {dt}")


def overload_key(dw_activation: str, pw_activation: str, channels: int, dtype=np.float32) -> str:
    """Return the function overload name for one variant, e.g. ``"relu.clip.c32.f32"``."""
    return f"{dw_activation}.{pw_activation}.c{int(channels)}.{_dtype_tag(dtype)}"


def _parse_overload(key: str) -> Tuple[str, str, int, int]:
    try:
        dw, pw, ch, tag = key.split(".")
        if dw not in ACTIVATIONS or pw not in ACTIVATIONS or not ch.startswith("c") or tag not in _DTYPES:
            raise ValueError(key)
        return dw, pw, int(ch[1:]), _DTYPES[tag]
    except ValueError:
        raise InputError(f"{OP_TYPE} node has overload '{key}', expected '<dw act>.<pw act>.c<channels>.f32|f16'"
                         ) from None


def _check_activation(name: str, which: str) -> None:
    if name not in ACTIVATIONS:
        raise InputError(f"unknown {which} '{name}'; expected one of: {', '.join(ACTIVATIONS)}")


# ----------------------------------------------------------------------------- node
def make_dwsep_node(inputs: Sequence[str], outputs: Sequence[str], *, kernel_shape: Sequence[int],
                    strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                    dilations: Sequence[int] = (1, 1), dw_activation: str = "none", dw_alpha: float = 0.0,
                    dw_beta: float = 0.0, pw_activation: str = "none", pw_alpha: float = 0.0, pw_beta: float = 0.0,
                    name: Optional[str] = None, channels: Optional[int] = None, dtype=np.float32) -> NodeProto:
    """Make a ``DepthwiseSeparableConv`` node.

    Args:
        inputs: ``[x, w_dw, b_dw, w_pw, b_pw]`` tensor names.
        outputs: ``[y]``.
        kernel_shape, strides, pads, dilations: the depthwise convolution's geometry (pads in ONNX order
            ``[top, left, bottom, right]``).
        dw_activation, pw_activation: one of :data:`ACTIVATIONS`; the alphas/betas are their parameters
            (clip: alpha = min, beta = max; leaky_relu: alpha = slope; hard_sigmoid: ONNX alpha, beta).
        name: node name.
        channels: the input channel count C; needed to pick the function overload that onnxruntime runs.
            Without it the node is only usable by TensorRT with the plugin (see :func:`strip_functions`).
        dtype: float32 or float16 (part of the overload key).

    Returns:
        The NodeProto (op_type ``DepthwiseSeparableConv``, domain ``edgesqueeze``).

    Raises:
        InputError: wrong number of inputs/outputs, an unknown activation or bad geometry.
    """
    if len(inputs) != 5 or len(outputs) != 1:
        raise InputError(f"{OP_TYPE} takes 5 inputs (x, w_dw, b_dw, w_pw, b_pw) and 1 output, "
                         f"got {len(inputs)} and {len(outputs)}", node=name)
    _check_activation(dw_activation, "dw_activation")
    _check_activation(pw_activation, "pw_activation")
    if len(kernel_shape) != 2 or len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise InputError(f"{OP_TYPE} is 2-D: kernel_shape, strides, dilations need 2 values and pads 4", node=name)
    node = helper.make_node(
        OP_TYPE, list(inputs), list(outputs), name=name, domain=DOMAIN,
        kernel_shape=[int(v) for v in kernel_shape], strides=[int(v) for v in strides],
        pads=[int(v) for v in pads], dilations=[int(v) for v in dilations],
        dw_activation=dw_activation, dw_alpha=float(dw_alpha), dw_beta=float(dw_beta),
        pw_activation=pw_activation, pw_alpha=float(pw_alpha), pw_beta=float(pw_beta),
        plugin_namespace="", plugin_version="1")
    if channels is not None:
        node.overload = overload_key(dw_activation, pw_activation, channels, dtype)
    return node


def _attrs(node: NodeProto) -> Dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------- function
def _activation_nodes(kind: str, prefix: str, src: str, dst: str, elem: int, opset: int) -> List[NodeProto]:
    a_ref, b_ref = f"{prefix}_alpha", f"{prefix}_beta"
    if kind == "none":
        return [helper.make_node("Identity", [src], [dst])]
    if kind == "relu":
        return [helper.make_node("Relu", [src], [dst])]
    if kind == "sigmoid":
        return [helper.make_node("Sigmoid", [src], [dst])]
    if kind == "leaky_relu":
        node = helper.make_node("LeakyRelu", [src], [dst])
        node.attribute.append(helper.make_attribute_ref("alpha", AttributeProto.FLOAT))
        node.attribute[-1].ref_attr_name = a_ref
        return [node]
    if kind == "hard_sigmoid":
        node = helper.make_node("HardSigmoid", [src], [dst])
        for attr, ref in (("alpha", a_ref), ("beta", b_ref)):
            node.attribute.append(helper.make_attribute_ref(attr, AttributeProto.FLOAT))
            node.attribute[-1].ref_attr_name = ref
        return [node]
    if kind == "hard_swish":
        if opset >= 14:
            return [helper.make_node("HardSwish", [src], [dst])]
        hs = f"{prefix}_hsig"
        return [helper.make_node("HardSigmoid", [src], [hs], alpha=1.0 / 6.0, beta=0.5),
                helper.make_node("Mul", [src, hs], [dst])]
    if kind == "clip":
        nodes = []
        bounds = []
        for ref, tag in ((a_ref, "min"), (b_ref, "max")):
            const = helper.make_node("Constant", [], [f"{prefix}_{tag}_f32"])
            const.attribute.append(helper.make_attribute_ref("value_float", AttributeProto.FLOAT))
            const.attribute[-1].ref_attr_name = ref
            nodes.append(const)
            if elem == TensorProto.FLOAT:
                bounds.append(f"{prefix}_{tag}_f32")
            else:
                nodes.append(helper.make_node("Cast", [f"{prefix}_{tag}_f32"], [f"{prefix}_{tag}"], to=elem))
                bounds.append(f"{prefix}_{tag}")
        nodes.append(helper.make_node("Clip", [src] + bounds, [dst]))
        return nodes
    raise InputError(f"unknown activation '{kind}'; expected one of: {', '.join(ACTIVATIONS)}")


def _function_for(overload: str, opset: int) -> FunctionProto:
    dw_act, pw_act, channels, elem = _parse_overload(overload)
    conv_dw = helper.make_node("Conv", ["X", "W_dw", "B_dw"], ["dw"], group=channels)
    for attr, kind in (("kernel_shape", AttributeProto.INTS), ("strides", AttributeProto.INTS),
                       ("pads", AttributeProto.INTS), ("dilations", AttributeProto.INTS)):
        conv_dw.attribute.append(helper.make_attribute_ref(attr, kind))
    if pw_act == "none":  # a function output must come from a node: the pointwise Conv writes Y itself
        pw_out = "Y"
    else:
        pw_out = "pw"
    dw_out = "dw" if dw_act == "none" else "dw_act"
    nodes = [conv_dw]
    if dw_act != "none":
        nodes += _activation_nodes(dw_act, "dw", "dw", dw_out, elem, opset)
    nodes.append(helper.make_node("Conv", [dw_out, "W_pw", "B_pw"], [pw_out]))
    if pw_act != "none":
        nodes += _activation_nodes(pw_act, "pw", "pw", "Y", elem, opset)
    fn = helper.make_function(DOMAIN, OP_TYPE, ["X", "W_dw", "B_dw", "W_pw", "B_pw"], ["Y"], nodes,
                              [helper.make_opsetid("", opset)], attributes=list(_FUNCTION_ATTRS),
                              doc_string=f"{OP_TYPE}: depthwise Conv (group={channels}) + {dw_act}, "
                                         f"1x1 Conv + {pw_act}")
    fn.overload = overload
    return fn


def dwsep_function(node: NodeProto, opset: int = 13, *, channels: Optional[int] = None,
                   dtype=None) -> FunctionProto:
    """Return the local function (standard ONNX ops) that spells out ``node``'s variant.

    Args:
        node: a ``DepthwiseSeparableConv`` node.
        opset: the ai.onnx opset the body imports (the model's; at least 13).
        channels, dtype: needed only when the node carries no overload key yet; the node is then given one.

    Returns:
        A FunctionProto named ``DepthwiseSeparableConv`` in domain ``edgesqueeze`` with the node's overload.

    Raises:
        InputError: the node is not a DepthwiseSeparableConv, or its channel count is unknown.
    """
    if node.op_type != OP_TYPE or node.domain != DOMAIN:
        raise InputError(f"not a {DOMAIN}::{OP_TYPE} node: {node.domain or 'ai.onnx'}::{node.op_type}",
                         node=node.name)
    if opset < 13:
        raise UnsupportedError(f"{OP_TYPE} functions need ai.onnx opset >= 13, the model has {opset}",
                               node=node.name)
    if not node.overload:
        if channels is None:
            raise InputError(f"{OP_TYPE} node has no overload key and its channel count is unknown",
                             node=node.name, hint="pass channels= to make_dwsep_node or dwsep_function")
        attrs = _attrs(node)
        node.overload = overload_key(_text(attrs.get("dw_activation", "none")),
                                     _text(attrs.get("pw_activation", "none")), channels,
                                     np.float32 if dtype is None else dtype)
    return _function_for(node.overload, opset)


# ----------------------------------------------------------------------------- models
def _ai_onnx_opset(model: ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 0


def _custom_nodes(graph: onnx.GraphProto) -> Iterable[NodeProto]:
    return (n for n in iter_nodes(graph) if n.op_type == OP_TYPE and n.domain == DOMAIN)


def _domain_nodes(graph: onnx.GraphProto) -> Iterable[NodeProto]:
    """Every node of the edgesqueeze domain (any op), in any subgraph."""
    return (n for n in iter_nodes(graph) if n.domain == DOMAIN)


def has_custom_nodes(model: ModelProto) -> bool:
    """True when the model contains ``edgesqueeze`` custom nodes (in any subgraph)."""
    return any(True for _ in _custom_nodes(model.graph))


def _elem_types(model: ModelProto) -> Dict[str, int]:
    types = {t.name: t.data_type for t in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


def attach_functions(model: ModelProto) -> ModelProto:
    """Give every custom node its overload key and (re)build the model's ``edgesqueeze`` functions in place.

    The channel count comes from ``W_dw``'s shape (initializer or inferred value info), the element type from
    the weights. Functions of other domains are kept. Returns ``model``.

    Raises:
        InputError: a custom node's depthwise weight shape or element type cannot be found.
    """
    opset = _ai_onnx_opset(model)
    inits = {t.name: t for t in model.graph.initializer}
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.value_info
              if vi.type.tensor_type.HasField("shape")}
    types = _elem_types(model)
    wanted: Dict[str, FunctionProto] = {}
    for node in _custom_nodes(model.graph):
        w_dw = node.input[1]
        dims = list(inits[w_dw].dims) if w_dw in inits else shapes.get(w_dw)
        if not dims or not dims[0] or w_dw not in types:
            raise InputError(f"cannot find the shape or type of the depthwise weight '{w_dw}'", node=node.name)
        attrs = _attrs(node)
        node.overload = overload_key(_text(attrs.get("dw_activation", "none")),
                                     _text(attrs.get("pw_activation", "none")), dims[0], types[w_dw])
        if node.overload not in wanted:
            wanted[node.overload] = _function_for(node.overload, opset)
    return install_functions(model, OP_TYPE, wanted)


def install_functions(model: ModelProto, op_type: str, wanted: Dict[str, FunctionProto]) -> ModelProto:
    """Replace ``model``'s local functions for the custom op ``op_type`` by ``wanted`` (overload -> function).

    Functions of other ops are kept; the ``edgesqueeze`` opset import and the IR version that overloads need
    (10) are added when any function is installed. Modifies and returns ``model``.
    """
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name == op_type)]  # other ops' stay
    del model.functions[:]
    model.functions.extend(kept + [wanted[k] for k in sorted(wanted)])
    if wanted:
        if not any(op.domain == DOMAIN for op in model.opset_import):
            model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
        model.ir_version = max(model.ir_version, OVERLOAD_IR_VERSION)
    return model


def _plain_ir_version(model: ModelProto) -> int:
    """The lowest IR version the model needs once no function overloads remain (8 unless newer types appear)."""
    need = 8
    new_types = {getattr(TensorProto, n): ir for n, ir in (("FLOAT8E4M3FN", 9), ("FLOAT8E4M3FNUZ", 9),
                                                           ("FLOAT8E5M2", 9), ("FLOAT8E5M2FNUZ", 9),
                                                           ("UINT4", 10), ("INT4", 10)) if hasattr(TensorProto, n)}
    for elem in _elem_types(model).values():
        need = max(need, new_types.get(elem, 8))
    return min(max(need, 8), model.ir_version) if model.ir_version >= 8 else model.ir_version


def inline_functions(model: ModelProto) -> ModelProto:
    """Return a copy whose custom nodes are replaced by their function bodies (standard ops only).

    This is the variant for TensorRT without the edgesqueeze plugin library. Other domains' functions stay.
    """
    from onnx import inliner

    out = ModelProto()
    out.CopyFrom(model)
    if not has_custom_nodes(out):
        return out
    attach_functions(out)
    out = inliner.inline_selected_functions(out, [(DOMAIN, OP_TYPE)], exclude=False)
    if not any(True for _ in _domain_nodes(out.graph)):  # other edgesqueeze ops may remain
        keep = [op for op in out.opset_import if op.domain != DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(keep)
    if not any(f.overload for f in out.functions):
        out.ir_version = _plain_ir_version(out)
    return out


def strip_functions(model: ModelProto) -> ModelProto:
    """Return a copy that keeps the custom nodes but drops the edgesqueeze local functions and overload keys.

    This is the variant for TensorRT with the edgesqueeze plugin library loaded: the parser can only map the
    node to the plugin. onnxruntime cannot run it.
    """
    out = ModelProto()
    out.CopyFrom(model)
    for node in _domain_nodes(out.graph):
        node.overload = ""
    kept = [f for f in out.functions if f.domain != DOMAIN]
    del out.functions[:]
    out.functions.extend(kept)
    if not any(f.overload for f in out.functions):
        out.ir_version = _plain_ir_version(out)
    return out


def make_dwsep_model(x_shape: Sequence[int], w_dw: np.ndarray, b_dw: np.ndarray, w_pw: np.ndarray,
                     b_pw: np.ndarray, *, strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                     dilations: Sequence[int] = (1, 1), dw_activation: str = "none", dw_alpha: float = 0.0,
                     dw_beta: float = 0.0, pw_activation: str = "none", pw_alpha: float = 0.0,
                     pw_beta: float = 0.0, dtype=np.float32, opset: int = 17) -> ModelProto:
    """Build a one-node model (input ``"x"``, output ``"y"``, weights as initializers) that runs on onnxruntime.

    Args:
        x_shape: ``[N, C, H, W]``.
        w_dw, b_dw, w_pw, b_pw: weights ``[C,1,kh,kw]``, ``[C]``, ``[M,C,1,1]``, ``[M]`` (cast to ``dtype``).
        strides, pads, dilations, activations and their parameters: as :func:`make_dwsep_node`.
        dtype: float32 or float16 (input, weights and output).
        opset: the ai.onnx opset of the model and of the function body.

    Returns:
        A checked ModelProto with the ``DepthwiseSeparableConv`` node and its local function.

    Raises:
        InputError: inconsistent weight shapes.
    """
    dt = np.dtype(dtype)
    elem = _DTYPES[_dtype_tag(dt)]
    n, c, hgt, wid = (int(v) for v in x_shape)
    w_dw, b_dw, w_pw, b_pw = (np.asarray(a, dtype=dt) for a in (w_dw, b_dw, w_pw, b_pw))
    m = w_pw.shape[0]
    if w_dw.shape[:2] != (c, 1) or b_dw.shape != (c,) or w_pw.shape != (m, c, 1, 1) or b_pw.shape != (m,):
        raise InputError(f"inconsistent {OP_TYPE} weights for C={c}: w_dw {list(w_dw.shape)}, b_dw "
                         f"{list(b_dw.shape)}, w_pw {list(w_pw.shape)}, b_pw {list(b_pw.shape)}")
    kh, kw = w_dw.shape[2:]
    oh, ow = conv_output_hw(hgt, wid, (kh, kw), strides, pads, dilations)
    node = make_dwsep_node(["x", "w_dw", "b_dw", "w_pw", "b_pw"], ["y"], kernel_shape=(kh, kw), strides=strides,
                           pads=pads, dilations=dilations, dw_activation=dw_activation, dw_alpha=dw_alpha,
                           dw_beta=dw_beta, pw_activation=pw_activation, pw_alpha=pw_alpha, pw_beta=pw_beta,
                           name="dwsep", channels=c, dtype=dt)
    inits = [onnx.numpy_helper.from_array(a, name) for a, name in
             ((w_dw, "w_dw"), (b_dw, "b_dw"), (w_pw, "w_pw"), (b_pw, "b_pw"))]
    return one_node_model(node, inits, dwsep_function(node, opset), elem, [n, c, hgt, wid], [n, m, oh, ow], opset)


def one_node_model(node: NodeProto, inits: Sequence[TensorProto], function: FunctionProto, elem: int,
                   x_shape: Sequence[int], y_shape: Sequence[int], opset: int) -> ModelProto:
    """A model of one edgesqueeze-domain ``node`` (input ``"x"``, output ``"y"``) with its local function."""
    graph = helper.make_graph([node], node.name, [helper.make_tensor_value_info("x", elem, list(x_shape))],
                              [helper.make_tensor_value_info("y", elem, list(y_shape))], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
                              functions=[function], producer_name="edgesqueeze")
    model.ir_version = OVERLOAD_IR_VERSION
    return model


# ----------------------------------------------------------------------------- reference
def conv_output_hw(hgt: int, wid: int, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
                   dilations: Sequence[int]) -> Tuple[int, int]:
    """Output height and width of a 2-D convolution (ONNX pads order: top, left, bottom, right)."""
    kh, kw = kernel
    oh = (hgt + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wid + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    return oh, ow


def _activate(x: np.ndarray, kind: str, alpha: float, beta: float) -> np.ndarray:
    if kind == "none":
        return x
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "clip":
        return np.clip(x, alpha, beta)
    if kind == "leaky_relu":
        return np.where(x >= 0, x, x * alpha)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if kind == "hard_sigmoid":
        return np.clip(alpha * x + beta, 0.0, 1.0)
    if kind == "hard_swish":
        return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    raise InputError(f"unknown activation '{kind}'; expected one of: {', '.join(ACTIVATIONS)}")


def reference_dwsep(x: np.ndarray, w_dw: np.ndarray, b_dw: np.ndarray, w_pw: np.ndarray, b_pw: np.ndarray, *,
                    strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                    dilations: Sequence[int] = (1, 1), dw_activation: str = "none", dw_alpha: float = 0.0,
                    dw_beta: float = 0.0, pw_activation: str = "none", pw_alpha: float = 0.0,
                    pw_beta: float = 0.0, kernel_shape: Optional[Sequence[int]] = None, **_unused) -> np.ndarray:
    """Plain-numpy ``DepthwiseSeparableConv``, computed in float64 and returned in ``x``'s dtype.

    ``kernel_shape`` is taken from ``w_dw`` (accepted for symmetry with the node's attributes).
    """
    out_dtype = np.asarray(x).dtype
    x, w_dw, b_dw, w_pw, b_pw = (np.asarray(a, dtype=np.float64) for a in (x, w_dw, b_dw, w_pw, b_pw))
    n, c, hgt, wid = x.shape
    kh, kw = w_dw.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh, ow = conv_output_hw(hgt, wid, (kh, kw), strides, pads, dilations)
    dw = np.zeros((n, c, oh, ow))
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilations[0], j * dilations[1]
            patch = xp[:, :, r0:r0 + strides[0] * (oh - 1) + 1:strides[0], c0:c0 + strides[1] * (ow - 1) + 1:strides[1]]
            dw += patch * w_dw[None, :, 0, i, j, None, None]
    dw = _activate(dw + b_dw[None, :, None, None], dw_activation, dw_alpha, dw_beta)
    pw = np.einsum("nchw,mc->nmhw", dw, w_pw[:, :, 0, 0]) + b_pw[None, :, None, None]
    return _activate(pw, pw_activation, pw_alpha, pw_beta).astype(out_dtype)
