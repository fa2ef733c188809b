"""The ``SparseConv`` custom op (domain ``edgesqueeze``): a convolution / GEMM with compressed sparse weights.

The model stores the weights *compressed*, so the file, the weight upload and every weight read on the device
shrink; the local function decompresses them with standard ops and runs a plain ``Conv``, so onnxruntime (and a
TensorRT without the plugin, after inlining) computes the same function as the CUDA kernel.

The dense weight ``W[M,C,kh,kw]`` is viewed as a matrix ``A[M,R]``, ``R = kh*kw*C``, reduction index
``r = (ky*kw + kx)*C + c`` (input channel fastest, the implicit GEMM of an NHWC convolution). A GEMM /
fully-connected layer is ``SparseConv`` on ``[N,C,1,1]``. Two formats (attribute ``sparse_format``):

``"2:4"`` (structured, C % 4 == 0; what Ampere's sparse tensor cores use): in each group of 4 consecutive ``r``
at most 2 weights are non-zero. Inputs ``X, values [M, R/2], metadata int32 [M, ceil(R/32)], B [M]``:
``values`` holds the 2 kept weights of each group in order; group ``g`` of row ``m`` is described by bits
``4*(g%8)..+3`` of ``metadata[m, g//8]`` — the first kept position (0..3) in the low 2 bits, the second in the
next 2 (first < second). int32, not uint8, because TensorRT 8.2 has no unsigned tensors.

``"csr"`` (unstructured, for highly pruned layers): inputs ``X, values [nnz], col int32 [nnz], row_ptr int32
[M+1], B [M]``, ``col`` holding ``r``. The function needs ai.onnx opset >= 16 (ScatterElements with reduction).

Attributes: ``sparse_format``, ``kernel_shape``, ``strides``, ``pads`` (ONNX order), ``dilations``,
``activation`` / ``alpha`` / ``beta`` (as ``DepthwiseSeparableConv``'s ``pw_*``), ``plugin_namespace`` "" and
``plugin_version`` "1". Like ``DepthwiseSeparableConv`` each variant is an IR-10 function overload, keyed
``"<format tag>.<activation>.<dtype>"`` (``s24`` or ``csr``; ``f32`` or ``f16``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import (
    AttributeProto,
    FunctionProto,
    ModelProto,
    NodeProto,
    TensorProto,
    helper,
)

from ..errors import InputError, UnsupportedError
from ..model import infer_shapes, iter_nodes
from .dwsep import _activation_nodes
from .dwsep import _dtype_tag as _float_tag
from .emulate import emulate_sparse_conv
from .ops import ACTIVATIONS, DOMAIN, CustomOp, install_functions, register_op
from .sparse_formats import (  # noqa: F401 (re-exported)
    choose_format,
    compress_2_4,
    compress_csr,
    compressed_bytes,
    decompress_2_4,
    decompress_csr,
    is_2_4_sparse,
    sparse_conv_inputs,
)

__all__ = ["OP_TYPE", "FORMATS", "overload_key", "make_sparse_conv_node", "sparse_conv_function", "is_2_4_sparse",
           "compress_2_4", "decompress_2_4", "compress_csr", "decompress_csr", "compressed_bytes", "choose_format",
           "sparse_conv_inputs", "attach_sparse_functions", "densify"]

OP_TYPE = "SparseConv"
#: sparse_format attribute value → tag used in the function overload key
FORMATS = {"2:4": "s24", "csr": "csr"}
_DTYPES = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16}
_FUNCTION_ATTRS = ("sparse_format", "kernel_shape", "strides", "pads", "dilations", "activation", "alpha", "beta",
                   "plugin_namespace", "plugin_version")


# ----------------------------------------------------------------------------- node + function
def _dtype_tag(dtype) -> str:
    return _float_tag(dtype, OP_TYPE)


def overload_key(sparse_format: str, activation: str, dtype=np.float32) -> str:
    """The function overload name of one variant, e.g. ``"s24.relu.f16"``."""
    if sparse_format not in FORMATS:
        raise InputError(f"unknown sparse_format '{sparse_format}'; expected one of: {', '.join(FORMATS)}")
    if activation not in ACTIVATIONS:
        raise InputError(f"unknown activation '{activation}'; expected one of: {', '.join(ACTIVATIONS)}")
    return f"{FORMATS[sparse_format]}.{activation}.{_dtype_tag(dtype)}"


def make_sparse_conv_node(inputs: Sequence[str], outputs: Sequence[str], *, sparse_format: str,
                          kernel_shape: Sequence[int], strides: Sequence[int] = (1, 1),
                          pads: Sequence[int] = (0, 0, 0, 0), dilations: Sequence[int] = (1, 1),
                          activation: str = "none", alpha: float = 0.0, beta: float = 0.0,
                          name: Optional[str] = None, dtype=np.float32) -> NodeProto:
    """Make a ``SparseConv`` node.

    Args:
        inputs: ``[x, values, metadata, b]`` for "2:4"; ``[x, values, col, row_ptr, b]`` for "csr".
        outputs: ``[y]``.
        sparse_format: "2:4" or "csr".
        kernel_shape, strides, pads, dilations: the convolution's geometry (group 1; pads in ONNX order).
        activation, alpha, beta: fused activation, as ``DepthwiseSeparableConv``'s ``pw_activation``.
        name: node name.
        dtype: float32 or float16 (part of the overload key).

    Returns:
        The NodeProto, with its overload key set.

    Raises:
        InputError: unknown format/activation, wrong input count or bad geometry.
    """
    key = overload_key(sparse_format, activation, dtype)
    want = 4 if sparse_format == "2:4" else 5
    if len(inputs) != want or len(outputs) != 1:
        raise InputError(f"{OP_TYPE} ({sparse_format}) takes {want} inputs and 1 output, got {len(inputs)} and "
                         f"{len(outputs)}", node=name)
    if len(kernel_shape) != 2 or len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise InputError(f"{OP_TYPE} is 2-D: kernel_shape, strides, dilations need 2 values and pads 4", node=name)
    node = helper.make_node(
        OP_TYPE, list(inputs), list(outputs), name=name, domain=DOMAIN, sparse_format=sparse_format,
        kernel_shape=[int(v) for v in kernel_shape], strides=[int(v) for v in strides],
        pads=[int(v) for v in pads], dilations=[int(v) for v in dilations], activation=activation,
        alpha=float(alpha), beta=float(beta), plugin_namespace="", plugin_version="1")
    node.overload = key
    return node


def _ref(node: NodeProto, attr: str, kind: int, ref: Optional[str] = None) -> NodeProto:
    node.attribute.append(helper.make_attribute_ref(attr, kind))
    node.attribute[-1].ref_attr_name = ref or attr
    return node


def _const(name: str, values, elem=TensorProto.INT64) -> NodeProto:
    arr = np.asarray(values)
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, elem, list(arr.shape),
                                                                              arr.flatten().tolist()))


def _decode_2_4(elem: int) -> list:
    """Nodes: values, metadata → dense A [M, R] (named "A") and the sizes "M" [1]."""
    n = helper.make_node
    return [
        _const("k0", [0]), _const("k1", [1]), _const("k2", [2]), _const("k4", [4]),
        _const("k2_32", [2 ** 32]), _const("pow4", [4 ** k for k in range(16)]),
        n("Shape", ["values"], ["vshape"]),
        n("Slice", ["vshape", "k0", "k1"], ["M"]),
        n("Slice", ["vshape", "k1", "k2"], ["Rhalf"]),
        n("Cast", ["metadata"], ["meta64"], to=TensorProto.INT64),
        n("Add", ["meta64", "k2_32"], ["meta_shift"]),
        n("Mod", ["meta_shift", "k2_32"], ["meta_u"]),           # the unsigned 32-bit word
        n("Unsqueeze", ["meta_u", "k2"], ["meta_u3"]),            # [M, words, 1]
        n("Div", ["meta_u3", "pow4"], ["fields_hi"]),
        n("Mod", ["fields_hi", "k4"], ["fields"]),                # [M, words, 16] 2-bit positions
        _const("flat_shape", [0, -1]),
        n("Reshape", ["fields", "flat_shape"], ["fields_flat"]),
        n("Slice", ["fields_flat", "k0", "Rhalf", "k1"], ["pos"]),   # [M, R/2]
        n("Squeeze", ["Rhalf", "k0"], ["Rhalf_s"]),
        _const("s0", 0), _const("s1", 1),
        n("Range", ["s0", "Rhalf_s", "s1"], ["j"]),
        n("Div", ["j", "k2"], ["group"]),
        n("Mul", ["group", "k4"], ["group_base"]),
        n("Add", ["pos", "group_base"], ["idx"]),                 # column of A per kept value
        n("Mul", ["Rhalf", "k2"], ["R"]),
        n("Concat", ["M", "R"], ["a_shape"], axis=0),
        n("ConstantOfShape", ["a_shape"], ["a_zero"], value=helper.make_tensor("z", elem, [1], [0])),
        n("ScatterElements", ["a_zero", "idx", "values"], ["A"], axis=1),
    ]


def _decode_csr(elem: int) -> list:
    """Nodes: values, col, row_ptr → dense A [M, R] (named "A") and the sizes "M" [1]; R from X and kernel_shape."""
    n = helper.make_node
    return [
        _const("k0", [0]), _const("k1", [1]), _const("km1", [-1]),
        n("Shape", ["values"], ["nnz"]),
        n("Shape", ["row_ptr"], ["rp_len"]),
        n("Sub", ["rp_len", "k1"], ["M"]),
        n("Cast", ["row_ptr"], ["rp64"], to=TensorProto.INT64),
        n("Slice", ["rp64", "k1", "km1"], ["row_starts"]),        # row_ptr[1:M]
        n("Shape", ["row_starts"], ["rs_len"]),
        n("ConstantOfShape", ["rs_len"], ["ones"], value=helper.make_tensor("o", TensorProto.INT64, [1], [1])),
        n("Add", ["nnz", "k1"], ["nnz1"]),
        n("ConstantOfShape", ["nnz1"], ["marks0"], value=helper.make_tensor("z", TensorProto.INT64, [1], [0])),
        n("ScatterElements", ["marks0", "row_starts", "ones"], ["marks"], axis=0, reduction="add"),
        n("CumSum", ["marks", "k0"], ["rows_all"]),
        n("Slice", ["rows_all", "k0", "nnz"], ["rows"]),          # output channel of each stored value
        n("Mul", ["rows", "R"], ["row_base"]),
        n("Cast", ["col"], ["col64"], to=TensorProto.INT64),
        n("Add", ["row_base", "col64"], ["flat"]),
        n("Mul", ["M", "R"], ["MR"]),
        n("ConstantOfShape", ["MR"], ["a_zero"], value=helper.make_tensor("z", elem, [1], [0])),
        n("ScatterElements", ["a_zero", "flat", "values"], ["A_flat"], axis=0),
        n("Concat", ["M", "R"], ["a_shape"], axis=0),
        n("Reshape", ["A_flat", "a_shape"], ["A"]),
    ]


def _function_for(overload: str, opset: int) -> FunctionProto:
    try:
        tag, act, dtag = overload.split(".")
        fmt = {v: k for k, v in FORMATS.items()}[tag]
        elem = _DTYPES[dtag]
        if act not in ACTIVATIONS:
            raise KeyError(act)
    except (ValueError, KeyError):
        raise InputError(f"{OP_TYPE} node has overload '{overload}', expected '<s24|csr>.<activation>.<f32|f16>'"
                         ) from None
    if fmt == "csr" and opset < 16:
        raise UnsupportedError(f"{OP_TYPE} csr needs ai.onnx opset >= 16 (ScatterElements reduction), the model "
                               f"has {opset}", hint="convert the model to opset 16 or use sparse_format 2:4")
    if opset < 13:
        raise UnsupportedError(f"{OP_TYPE} functions need ai.onnx opset >= 13, the model has {opset}")
    n = helper.make_node
    # Sizes shared by both decoders: C from X, the kernel taps from kernel_shape, R = kh*kw*C.
    sizes = [
        n("Shape", ["X"], ["xshape"]),
        _const("c1", [1]), _const("c2", [2]),
        n("Slice", ["xshape", "c1", "c2"], ["C"]),
        _ref(n("Constant", [], ["ks"]), "value_ints", AttributeProto.INTS, "kernel_shape"),
        n("Concat", ["ks", "C"], ["ks_c"], axis=0),
        n("ReduceProd", ["ks_c"], ["R"], keepdims=1),
    ]
    decode = _decode_2_4(elem) if fmt == "2:4" else _decode_csr(elem)
    if fmt == "2:4":
        sizes = sizes[:-1]   # the 2:4 decoder derives R from the values' width
    conv_out = "Y" if act == "none" else "conv"
    weight = [
        n("Concat", ["M", "ks", "C"], ["w_nhwc_shape"], axis=0),
        n("Reshape", ["A", "w_nhwc_shape"], ["W_nhwc"]),
        n("Transpose", ["W_nhwc"], ["W"], perm=[0, 3, 1, 2]),
        _ref(_ref(_ref(_ref(n("Conv", ["X", "W", "B"], [conv_out]), "kernel_shape", AttributeProto.INTS),
                       "strides", AttributeProto.INTS), "pads", AttributeProto.INTS),
             "dilations", AttributeProto.INTS),
    ]
    nodes = sizes + decode + weight
    if act != "none":
        # reuse the dwsep activation spellings; they reference "<prefix>_alpha"/"<prefix>_beta"
        for node in _activation_nodes(act, "pw", "conv", "Y", elem, opset):
            for attr in node.attribute:
                if attr.ref_attr_name in ("pw_alpha", "pw_beta"):
                    attr.ref_attr_name = attr.ref_attr_name[3:]
            nodes.append(node)
    inputs = ["X", "values", "metadata", "B"] if fmt == "2:4" else ["X", "values", "col", "row_ptr", "B"]
    fn = helper.make_function(DOMAIN, OP_TYPE, inputs, ["Y"], nodes, [helper.make_opsetid("", opset)],
                              attributes=list(_FUNCTION_ATTRS),
                              doc_string=f"{OP_TYPE}: decompress {fmt} weights, Conv, {act}")
    fn.overload = overload
    return fn


def sparse_conv_function(node: NodeProto, opset: int = 17) -> FunctionProto:
    """Return the local function (standard ONNX ops) of a ``SparseConv`` node's variant.

    Args:
        node: a ``SparseConv`` node made by :func:`make_sparse_conv_node` (it carries the overload key).
        opset: the model's ai.onnx opset (>= 13; >= 16 for csr).

    Raises:
        InputError: not a SparseConv node, or no/unknown overload key.
        UnsupportedError: the opset is too old for the format.
    """
    if node.op_type != OP_TYPE or node.domain != DOMAIN:
        raise InputError(f"not a {DOMAIN}::{OP_TYPE} node: {node.domain or 'ai.onnx'}::{node.op_type}",
                         node=node.name)
    return _function_for(node.overload, opset)


def _sparse_nodes(graph):
    return (n for n in iter_nodes(graph) if n.op_type == OP_TYPE and n.domain == DOMAIN)


def attach_sparse_functions(model: ModelProto) -> ModelProto:
    """Give every ``SparseConv`` node the overload key of its current element type and (re)build the model's
    ``SparseConv`` functions, in place (other functions are kept). Returns ``model``.

    Needed after anything that changes the element type (FP16 conversion) or drops the functions.

    Raises:
        InputError: a node's compressed values tensor has no known float32/float16 type.
        UnsupportedError: the opset is too old for a node's format.
    """
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    types = {t.name: t.data_type for t in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.value_info):
        types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    wanted = {}
    for node in _sparse_nodes(model.graph):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        fmt = attrs.get("sparse_format", b"")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        act = attrs.get("activation", b"none")
        act = act.decode() if isinstance(act, bytes) else act
        elem = types.get(node.input[1]) if len(node.input) > 1 else None
        dtype = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}.get(elem)
        if dtype is None:
            raise InputError(f"cannot tell the element type of SparseConv values '{node.input[1]}'",
                             node=node.name, tensor=node.input[1])
        node.overload = overload_key(fmt, act, dtype)
        if node.overload not in wanted:
            wanted[node.overload] = _function_for(node.overload, opset)
    return install_functions(model, OP_TYPE, wanted)


# ----------------------------------------------------------------------------- dense fallback
def _dense_activation(kind: str, alpha: float, beta: float, src: str, dst: str, elem: int, opset: int,
                      prefix: str) -> Tuple[list, list]:
    """(nodes, initializers) computing ``kind`` from ``src`` into ``dst`` with literal parameters."""
    n = helper.make_node
    if kind == "none":
        return [n("Identity", [src], [dst])], []
    if kind in ("relu", "sigmoid"):
        return [n({"relu": "Relu", "sigmoid": "Sigmoid"}[kind], [src], [dst])], []
    if kind == "leaky_relu":
        return [n("LeakyRelu", [src], [dst], alpha=alpha)], []
    if kind == "hard_sigmoid":
        return [n("HardSigmoid", [src], [dst], alpha=alpha, beta=beta)], []
    if kind == "hard_swish":
        if opset >= 14:
            return [n("HardSwish", [src], [dst])], []
        return [n("HardSigmoid", [src], [f"{prefix}_hsig"], alpha=1.0 / 6.0, beta=0.5),
                n("Mul", [src, f"{prefix}_hsig"], [dst])], []
    if kind == "clip":
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        inits = [onnx.numpy_helper.from_array(np.array(v, dtype=np_dtype), f"{prefix}_{t}")
                 for v, t in ((alpha, "min"), (beta, "max"))]
        return [n("Clip", [src, f"{prefix}_min", f"{prefix}_max"], [dst])], inits
    raise InputError(f"unknown activation '{kind}'; expected one of: {', '.join(ACTIVATIONS)}")


def densify(model: ModelProto, formats: Sequence[str] = ("2:4", "csr")) -> ModelProto:
    """Return a copy whose ``SparseConv`` nodes of the given ``formats`` are plain ``Conv`` (+ activation) nodes with
    dense weights (the others stay, with their functions).

    The variant for a TensorRT without the edgesqueeze plugin: TensorRT's own sparse kernels can still use the
    2:4 pattern (``--sparsity=enable`` on Ampere). The compressed weights must be initializers.

    Raises:
        InputError: a SparseConv node whose compressed weights are not initializers.
    """
    out = ModelProto()
    out.CopyFrom(model)
    opset = next((int(o.version) for o in out.opset_import if o.domain in ("", "ai.onnx")), 0)
    inits = {t.name: t for t in out.graph.initializer}
    used_elsewhere = {i for node in out.graph.node if not (node.op_type == OP_TYPE and node.domain == DOMAIN)
                      for i in node.input} | {o.name for o in out.graph.output}
    new_nodes, new_inits, drop = [], [], set()
    for idx, node in enumerate(out.graph.node):
        if node.op_type != OP_TYPE or node.domain != DOMAIN:
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        text = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        fmt = text.get("sparse_format")
        if fmt not in formats:
            new_nodes.append(node)
            continue
        weights = list(node.input[1:-1])
        if any(w not in inits for w in weights):
            raise InputError("SparseConv weights must be initializers to densify", node=node.name)
        arrays = [onnx.numpy_helper.to_array(inits[w]) for w in weights]
        name = node.name or f"sparse_conv_{idx}"
        x_name = node.input[0]
        kh, kw = (int(v) for v in attrs["kernel_shape"])
        # C from the reduction size: 2:4 values are [M, R/2]; CSR needs the input's channel count
        if fmt == "2:4":
            m, r = arrays[0].shape[0], arrays[0].shape[1] * 2
        else:
            m, r = len(arrays[2]) - 1, None
        if r is None:
            shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
                      for vi in list(out.graph.input) + list(out.graph.value_info)}
            c = (shapes.get(x_name) or [0, 0])[1]
            if not c:
                raise InputError("cannot densify a csr SparseConv without the input's channel count "
                                 "(run shape inference first)", node=name, tensor=x_name)
        else:
            c = r // (kh * kw)
        shape = (m, c, kh, kw)
        dense = decompress_2_4(arrays[0], arrays[1], shape) if fmt == "2:4" else \
            decompress_csr(arrays[0], arrays[1], arrays[2], shape)
        w_name = f"{name}_dense_weight"
        new_inits.append(onnx.numpy_helper.from_array(dense, w_name))
        drop.update(w for w in weights if w not in used_elsewhere)
        act = text.get("activation", "none")
        conv_out = node.output[0] if act == "none" else f"{name}_conv"
        new_nodes.append(helper.make_node("Conv", [x_name, w_name, node.input[-1]], [conv_out], name=name,
                                          kernel_shape=[kh, kw], strides=list(attrs.get("strides", [1, 1])),
                                          pads=list(attrs.get("pads", [0, 0, 0, 0])),
                                          dilations=list(attrs.get("dilations", [1, 1]))))
        if act != "none":
            act_nodes, act_inits = _dense_activation(act, float(attrs.get("alpha", 0.0)), float(attrs.get("beta", 0.0)),
                                                     conv_out, node.output[0], inits[weights[0]].data_type, opset,
                                                     name)
            new_nodes += act_nodes
            new_inits += act_inits
    keep_inits = [t for t in out.graph.initializer if t.name not in drop] + new_inits
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep_inits)
    if not any(n.op_type == OP_TYPE and n.domain == DOMAIN for n in out.graph.node):
        kept = [f for f in out.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
        del out.functions[:]
        out.functions.extend(kept)
    if not any(n.domain == DOMAIN for n in out.graph.node) and not any(f.domain == DOMAIN for f in out.functions):
        keep = [o for o in out.opset_import if o.domain != DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(keep)
    return out


_EMULATE_ATTRS = ("sparse_format", "kernel_shape", "strides", "pads", "dilations", "activation", "alpha", "beta")


@register_op
class SparseConv(CustomOp):
    """The registry entry of ``edgesqueeze::SparseConv``."""

    op_type = OP_TYPE

    def attach_functions(self, model: ModelProto) -> ModelProto:
        """See :func:`attach_sparse_functions`."""
        return attach_sparse_functions(model)

    def prepare_inline(self, model: ModelProto) -> ModelProto:
        """Without the plugin a SparseConv becomes a plain dense Conv (:func:`densify`), not the decompressing
        function: TensorRT 8.2 cannot run the CSR decompression (ScatterElements with reduction), and with
        ``--sparsity=enable`` TensorRT uses its own 2:4 kernels on it. Weights computed in-graph keep the
        function body, the only exact spelling."""
        try:
            return densify(infer_shapes(model))
        except InputError:
            return model

    def emulate(self, node: NodeProto, inputs, device: str = "cpu", cache_dir=None) -> np.ndarray:
        """Run the 2:4 or CSR kernel (:func:`edgesqueeze.plugins.emulate.emulate_sparse_conv`)."""
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in _EMULATE_ATTRS}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        names = ("values", "metadata") if attrs["sparse_format"] == "2:4" else ("values", "col", "row_ptr")
        return emulate_sparse_conv(inputs[0], dict(zip(names, inputs[1:-1])), inputs[-1], device=device,
                                   cache_dir=cache_dir, **attrs)
