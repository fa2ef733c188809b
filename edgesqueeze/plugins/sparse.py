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

from typing import Optional, Sequence

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
from .dwsep import (
    ACTIVATIONS,
    DOMAIN,
    _activate,
    _activation_nodes,
    _dtype_tag as _float_tag,
    conv_output_hw,
    install_functions,
    one_node_model,
)
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

__all__ = ["OP_TYPE", "FORMATS", "overload_key", "make_sparse_conv_node", "sparse_conv_function",
           "make_sparse_conv_model", "reference_sparse_conv", "is_2_4_sparse", "compress_2_4",
           "decompress_2_4", "compress_csr", "decompress_csr", "compressed_bytes", "choose_format",
           "sparse_conv_inputs", "attach_sparse_functions", "has_sparse_nodes"]

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


def make_sparse_conv_model(x_shape: Sequence[int], weight: np.ndarray, bias: np.ndarray, *, sparse_format: str,
                           strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                           dilations: Sequence[int] = (1, 1), activation: str = "none", alpha: float = 0.0,
                           beta: float = 0.0, dtype=np.float32, opset: int = 17) -> ModelProto:
    """A one-node ``SparseConv`` model (input ``"x"``, output ``"y"``, compressed weights as initializers).

    Args:
        x_shape: ``[N, C, H, W]``.
        weight: the dense (already sparse) weight ``[M, C, kh, kw]``; bias ``[M]``.
        sparse_format: "2:4" or "csr". Other arguments as :func:`make_sparse_conv_node`.

    Raises:
        InputError: inconsistent shapes, or a weight that is not 2:4 sparse for "2:4".
    """
    dt = np.dtype(dtype)
    elem = _DTYPES[_dtype_tag(dt)]
    n, c, hgt, wid = (int(v) for v in x_shape)
    weight, bias = np.asarray(weight, dtype=dt), np.asarray(bias, dtype=dt)
    if weight.ndim != 4 or weight.shape[1] != c or bias.shape != (weight.shape[0],):
        raise InputError(f"inconsistent {OP_TYPE} weights for C={c}: weight {list(weight.shape)}, bias "
                         f"{list(bias.shape)}")
    m, _, kh, kw = weight.shape
    oh, ow = conv_output_hw(hgt, wid, (kh, kw), strides, pads, dilations)
    arrays = sparse_conv_inputs(weight, sparse_format, dt)
    names = ["x"] + [f"w_{k}" for k in arrays] + ["b"]
    node = make_sparse_conv_node(names, ["y"], sparse_format=sparse_format, kernel_shape=(kh, kw), strides=strides,
                                 pads=pads, dilations=dilations, activation=activation, alpha=alpha, beta=beta,
                                 name="sparse_conv", dtype=dt)
    inits = [onnx.numpy_helper.from_array(a, f"w_{k}") for k, a in arrays.items()]
    inits.append(onnx.numpy_helper.from_array(bias, "b"))
    return one_node_model(node, inits, sparse_conv_function(node, opset), elem, [n, c, hgt, wid], [n, m, oh, ow],
                          opset)


def reference_sparse_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, strides: Sequence[int] = (1, 1),
                          pads: Sequence[int] = (0, 0, 0, 0), dilations: Sequence[int] = (1, 1),
                          activation: str = "none", alpha: float = 0.0, beta: float = 0.0,
                          **_unused) -> np.ndarray:
    """Plain-numpy dense convolution + activation in float64, returned in ``x``'s dtype (the op's meaning)."""
    out_dtype = np.asarray(x).dtype
    x, w, b = (np.asarray(a, dtype=np.float64) for a in (x, weight, bias))
    n, c, hgt, wid = x.shape
    m, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh, ow = conv_output_hw(hgt, wid, (kh, kw), strides, pads, dilations)
    y = np.zeros((n, m, oh, ow)) + b[None, :, None, None]
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilations[0], j * dilations[1]
            patch = xp[:, :, r0:r0 + strides[0] * (oh - 1) + 1:strides[0], c0:c0 + strides[1] * (ow - 1) + 1:strides[1]]
            y += np.einsum("nchw,mc->nmhw", patch, w[:, :, i, j])
    return _activate(y, activation, alpha, beta).astype(out_dtype)


def _sparse_nodes(graph):
    from ..model import iter_nodes

    return (n for n in iter_nodes(graph) if n.op_type == OP_TYPE and n.domain == DOMAIN)


def has_sparse_nodes(model: ModelProto) -> bool:
    """True when the model contains ``SparseConv`` nodes (in any subgraph)."""
    return any(True for _ in _sparse_nodes(model.graph))


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
