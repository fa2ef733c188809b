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
from .emulate import emulate_dwsep
from .ops import ACTIVATIONS, DOMAIN, CustomOp, elem_types, install_functions, numel, register_op

OP_TYPE = "DepthwiseSeparableConv"

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


def has_custom_nodes(model: ModelProto) -> bool:
    """True when the model contains ``edgesqueeze`` custom nodes (in any subgraph)."""
    return any(True for _ in _custom_nodes(model.graph))


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
    types = elem_types(model)
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




def _dwsep_shapes(node: NodeProto, shape_of) -> Tuple[list, list, list]:
    """(W_dw, W_pw, Y) shapes of a node, each ``[]`` when unknown."""
    return shape_of(node.input[1]), shape_of(node.input[3]), shape_of(node.output[0]) if node.output else []


@register_op
class DepthwiseSeparableConv(CustomOp):
    """The registry entry of ``edgesqueeze::DepthwiseSeparableConv``."""

    op_type = OP_TYPE

    def attach_functions(self, model: ModelProto) -> ModelProto:
        """See :func:`attach_functions`."""
        return attach_functions(model)

    def macs(self, node: NodeProto, shape_of) -> int:
        """Depthwise taps over the intermediate tensor plus the pointwise products over the output."""
        if len(node.input) < 4:
            return 0
        wdw, wpw, out = _dwsep_shapes(node, shape_of)
        if len(wdw) == 4 and len(wpw) == 4 and out:
            mid = out[:1] + [wdw[0]] + out[2:]
            return numel(mid) * wdw[2] * wdw[3] + numel(out) * wpw[1]
        return 0

    def fused_block(self, node: NodeProto, shape_of) -> Optional[dict]:
        """The depthwise output stays on chip: ``mid`` is its shape."""
        if len(node.input) < 4:
            return None
        wdw, _, out = _dwsep_shapes(node, shape_of)
        mid = (out[:1] + [wdw[0]] + out[2:]) if len(wdw) == 4 and len(out) == 4 else []
        return {"dw_weight": node.input[1], "pw_weight": node.input[3], "x": node.input[0], "mid": mid,
                "y": node.output[0]}

    def emulate(self, node: NodeProto, inputs, device: str = "cpu", cache_dir=None) -> np.ndarray:
        """Run the dwsep kernel (:func:`edgesqueeze.plugins.emulate.emulate_dwsep`) with the node's attributes."""
        attrs = {k: _text(v) if isinstance(v, bytes) else v for k, v in _attrs(node).items()}
        return emulate_dwsep(*inputs, device=device, cache_dir=cache_dir, **attrs)
