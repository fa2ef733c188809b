"""Test helpers for the custom ops: one-node models and plain-numpy references (test-only code, not shipped).

The models run on onnxruntime through the op's local function; the references compute the op's meaning in
float64, so kernel, function and fusion tests compare against the same arithmetic.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import FunctionProto, ModelProto, NodeProto, TensorProto, helper

from edgesqueeze.errors import InputError
from edgesqueeze.plugins.dwsep import OP_TYPE as DWSEP_OP, _dtype_tag, dwsep_function, make_dwsep_node
from edgesqueeze.plugins.ops import ACTIVATIONS, DOMAIN, DOMAIN_VERSION, OVERLOAD_IR_VERSION
from edgesqueeze.plugins.sparse import OP_TYPE as SPARSE_OP, make_sparse_conv_node, sparse_conv_function
from edgesqueeze.plugins.sparse_formats import sparse_conv_inputs

_DTYPES = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16}


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
        raise InputError(f"inconsistent {DWSEP_OP} weights for C={c}: w_dw {list(w_dw.shape)}, b_dw "
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
    elem = _DTYPES[_dtype_tag(dt, SPARSE_OP)]
    n, c, hgt, wid = (int(v) for v in x_shape)
    weight, bias = np.asarray(weight, dtype=dt), np.asarray(bias, dtype=dt)
    if weight.ndim != 4 or weight.shape[1] != c or bias.shape != (weight.shape[0],):
        raise InputError(f"inconsistent {SPARSE_OP} weights for C={c}: weight {list(weight.shape)}, bias "
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
