"""The SparseConv custom op: weight compression formats, the node, and its ONNX local function on onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from custom_ops import make_sparse_conv_model, reference_sparse_conv

from edgesqueeze.errors import InputError, UnsupportedError
from edgesqueeze.ortutil import run_model
from edgesqueeze.plugins import sparse as S
from edgesqueeze.plugins import sparse_formats as F
from edgesqueeze.plugins.ops import custom_ops
from edgesqueeze.plugins.sparse import densify


def _two_of_four(rng, m, c, k):
    w = rng.standard_normal((m, c, k, k)).astype(np.float32)
    a = F._as_matrix(w).reshape(m, -1, 4)
    keep = np.argsort(-np.abs(a), axis=2)[:, :, :2]
    mask = np.zeros(a.shape, bool)
    np.put_along_axis(mask, keep, True, axis=2)
    return F._from_matrix(np.where(mask, a, 0).reshape(m, -1), w.shape)


def test_2_4_layout_by_hand():
    # one output channel, 8 input channels, 1x1: groups [0, 1.5, 0, -2] and [3, 0, 0, 0]
    w = np.array([0, 1.5, 0, -2, 3, 0, 0, 0], np.float32).reshape(1, 8, 1, 1)
    values, meta = S.compress_2_4(w)
    np.testing.assert_array_equal(values, [[1.5, -2, 3, 0]])
    # group 0: positions 1 and 3 → 1 | 3 << 2 = 13; group 1: positions 0 and 1 (padding) → 0 | 1 << 2 = 4
    assert meta.dtype == np.int32 and meta.shape == (1, 1)
    assert int(meta[0, 0]) == 13 | (4 << 4)


def test_2_4_round_trip_and_size():
    rng = np.random.default_rng(0)
    w = _two_of_four(rng, 6, 24, 3)   # R = 216: 54 groups → 7 metadata words per row, the last one partly used
    values, meta = S.compress_2_4(w)
    assert values.shape == (6, 108) and meta.shape == (6, 7)
    np.testing.assert_array_equal(S.decompress_2_4(values, meta, w.shape), w)
    assert S.compressed_bytes(w, "2:4") == values.nbytes + meta.nbytes < 0.6 * w.nbytes
    assert S.is_2_4_sparse(w) and S.choose_format(w) == "2:4"


def test_2_4_uses_all_32_bits_of_a_word():
    # positions 2 and 3 in every group sets the top bits of each word (negative int32): decoding must not sign-extend
    w = np.zeros((2, 32, 1, 1), np.float32)
    w[:, 2::4] = 1.0
    w[:, 3::4] = -1.0
    values, meta = S.compress_2_4(w)
    assert (meta < 0).all()
    np.testing.assert_array_equal(S.decompress_2_4(values, meta, w.shape), w)
    model = make_sparse_conv_model((1, 32, 2, 3), w, np.zeros(2, np.float32), sparse_format="2:4")
    x = np.random.default_rng(0).standard_normal((1, 32, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(run_model(model, {"x": x})["y"], reference_sparse_conv(x, w, np.zeros(2)),
                               rtol=1e-5, atol=1e-6)


def test_2_4_rejects_dense_groups_and_bad_channels():
    w = np.ones((2, 8, 1, 1), np.float32)
    with pytest.raises(InputError, match="output channel 0, group 0"):
        S.compress_2_4(w)
    with pytest.raises(InputError, match="C % 4"):
        S.compress_2_4(np.zeros((2, 6, 1, 1), np.float32))
    with pytest.raises(InputError):
        make_sparse_conv_model((1, 8, 2, 2), w, np.zeros(2), sparse_format="2:4")
    assert S.choose_format(w) is None


def test_csr_round_trip_empty_rows_and_all_zero():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    w[0] = 0
    w[4] = 0
    values, col, row_ptr = S.compress_csr(w)
    assert col.dtype == np.int32 and row_ptr.dtype == np.int32 and row_ptr[0] == 0 and row_ptr[-1] == len(values)
    np.testing.assert_array_equal(S.decompress_csr(values, col, row_ptr, w.shape), w)
    assert S.choose_format(w) == "csr"
    x = rng.standard_normal((1, 3, 5, 4)).astype(np.float32)
    for weight in (w, np.zeros_like(w), w[1:2]):   # empty rows, nnz = 0, a single output channel
        bias = np.arange(weight.shape[0], dtype=np.float32)
        model = make_sparse_conv_model(x.shape, weight, bias, sparse_format="csr", pads=(1, 1, 1, 1))
        np.testing.assert_allclose(run_model(model, {"x": x})["y"],
                                   reference_sparse_conv(x, weight, bias, pads=(1, 1, 1, 1)), rtol=1e-5, atol=1e-6)


def test_node_function_and_model_are_valid_and_deterministic():
    rng = np.random.default_rng(2)
    w = _two_of_four(rng, 4, 8, 1)
    a = make_sparse_conv_model((1, 8, 3, 3), w, np.ones(4), sparse_format="2:4", activation="clip", alpha=0.0,
                                 beta=6.0)
    b = make_sparse_conv_model((1, 8, 3, 3), w, np.ones(4), sparse_format="2:4", activation="clip", alpha=0.0,
                                 beta=6.0)
    assert a.SerializeToString() == b.SerializeToString()
    onnx.checker.check_model(a, full_check=True)
    node = a.graph.node[0]
    assert (node.domain, node.op_type, node.overload) == ("edgesqueeze", "SparseConv", "s24.clip.f32")
    attrs = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    assert attrs["sparse_format"] == b"2:4" and attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b""
    assert [f.overload for f in a.functions] == ["s24.clip.f32"]
    assert {i.name for i in a.graph.initializer} == {"w_values", "w_metadata", "b"}


def test_bad_arguments():
    with pytest.raises(InputError, match="sparse_format"):
        S.overload_key("3:8", "relu")
    with pytest.raises(InputError, match="activation"):
        S.overload_key("csr", "gelu")
    with pytest.raises(InputError, match="takes 5 inputs"):
        S.make_sparse_conv_node(["x", "v", "c", "b"], ["y"], sparse_format="csr", kernel_shape=(1, 1))
    node = S.make_sparse_conv_node(["x", "v", "c", "r", "b"], ["y"], sparse_format="csr", kernel_shape=(1, 1))
    with pytest.raises(UnsupportedError, match="opset >= 16"):
        S.sparse_conv_function(node, opset=13)
    with pytest.raises(UnsupportedError):
        make_sparse_conv_model((1, 4, 2, 2), np.zeros((1, 4, 1, 1)), np.zeros(1), sparse_format="csr",
                                 dtype=np.float64)


@pytest.mark.parametrize("fmt,act", [("2:4", "clip"), ("csr", "hard_swish"), ("2:4", "none")])
def test_inlined_and_dense_variants_compute_the_same(fmt, act):
    """The variants for TensorRT without the plugin: functions inlined (standard ops), or plain dense Conv."""
    from onnx import inliner

    rng = np.random.default_rng(4)
    w = _two_of_four(rng, 6, 8, 3) if fmt == "2:4" else rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    if fmt == "csr":
        w[rng.random(w.shape) < 0.8] = 0
    model = make_sparse_conv_model((2, 8, 6, 5), w, rng.standard_normal(6), sparse_format=fmt, activation=act,
                                     alpha=-0.2, beta=0.3, pads=(1, 0, 1, 2), strides=(1, 2))
    x = rng.standard_normal((2, 8, 6, 5)).astype(np.float32)
    ref = run_model(model, {"x": x})["y"]
    inlined = inliner.inline_local_functions(model)
    dense = densify(model)
    assert not inlined.functions and all(n.domain in ("", "ai.onnx") for n in inlined.graph.node)
    assert dense.graph.node[0].op_type == "Conv" and not dense.functions
    assert all(o.domain != "edgesqueeze" for o in dense.opset_import)
    onnx.checker.check_model(dense, full_check=True)
    for variant in (inlined, dense):
        np.testing.assert_allclose(run_model(variant, {"x": x})["y"], ref, rtol=1e-5, atol=1e-5)


def test_attach_sparse_functions_after_fp16_conversion():
    """Converting the weights to FP16 needs the f16 overload: attach_sparse_functions rebuilds it."""
    rng = np.random.default_rng(7)
    w = _two_of_four(rng, 4, 8, 3)
    model = make_sparse_conv_model((1, 8, 5, 5), w, rng.standard_normal(4), sparse_format="2:4", pads=(1, 1, 1, 1))
    half = onnx.ModelProto()
    half.CopyFrom(model)
    for t in half.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float16), t.name))
    for vi in list(half.graph.input) + list(half.graph.output):
        vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    del half.functions[:]
    assert "SparseConv" in custom_ops(half) and not half.functions
    S.attach_sparse_functions(half)
    assert half.graph.node[0].overload == "s24.none.f16" and [f.overload for f in half.functions] == ["s24.none.f16"]
    x = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    ref = run_model(model, {"x": x})["y"]
    got = run_model(half, {"x": x.astype(np.float16)})["y"]
    assert np.abs(got.astype(np.float64) - ref).max() <= 1e-2 * np.abs(ref).max()
