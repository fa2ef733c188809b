"""TensorRT variants for every edgesqueeze custom op: functions inlined (no plugin) or stripped (plugin)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgesqueeze.bundle.variants import custom_ops, inlined_variant, refresh_functions, stripped_variant
from edgesqueeze.ortutil import run_model


@pytest.fixture
def sparse_model(tmp_path):
    from custom_ops import make_sparse_conv_model

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    w.reshape(8, 2, 4, 3, 3)[:, :, :2] = 0.0  # two zeros in every group of four input channels: 2:4
    b = rng.standard_normal(8).astype(np.float32)
    m = make_sparse_conv_model([1, 8, 6, 6], w, b, sparse_format="2:4", pads=(1, 1, 1, 1), activation="relu")
    path = tmp_path / "sparse.onnx"
    onnx.save(m, path)
    return path, m


def test_sparse_conv_variants_match(sparse_model):
    _, m = sparse_model
    assert custom_ops(m) == {"SparseConv"}
    x = {"x": np.random.default_rng(1).standard_normal((1, 8, 6, 6)).astype(np.float32)}
    ref = run_model(m, x)["y"]
    inl = inlined_variant(m)
    assert custom_ops(inl) == set() and not any(f.domain == "edgesqueeze" for f in inl.functions)
    assert not any(o.domain == "edgesqueeze" for o in inl.opset_import)
    np.testing.assert_allclose(run_model(inl, x)["y"], ref, rtol=1e-5, atol=1e-5)
    st = stripped_variant(m)
    assert custom_ops(st) == {"SparseConv"} and not st.functions
    assert all(not n.overload for n in st.graph.node)
    assert st.ir_version <= m.ir_version


def test_build_bundles_a_model_with_sparse_conv_nodes(sparse_model, tmp_path):
    from edgesqueeze.bundle import read_manifest
    from edgesqueeze.pipeline import build

    path, m = sparse_model
    # optimize=False: the optimizer does not rebuild SparseConv functions yet (reported to the lead).
    # Xavier: no sparse tensor cores, so the 2:4 layer stays a plugin node (on Orin it goes to TensorRT's own
    # --sparsity=enable path: tests/test_build_sparsity.py)
    build(path, "xavier-nx", tmp_path / "b", precision="fp16", progress=False, optimize=False)
    mf = read_manifest(tmp_path / "b")
    assert mf["custom_nodes"] is True
    engine = mf["tensorrt"]["engine_models"]
    assert set(engine) == {"fp32.inlined", "fp32.plugin"}
    x = {"x": np.random.default_rng(2).standard_normal((1, 8, 6, 6)).astype(np.float32)}
    ref = run_model(m, x)["y"]
    fp16 = run_model(str(tmp_path / "b" / mf["models"]["fp16"]), x)["y"]  # FP16 bodies rebuilt: it loads
    assert np.max(np.abs(fp16 - ref)) / np.max(np.abs(ref)) < 1e-2
    inl = onnx.load(tmp_path / "b" / engine["fp32.inlined"])
    assert custom_ops(inl) == set()
    np.testing.assert_allclose(run_model(inl, x)["y"], ref, rtol=1e-5, atol=1e-5)


def test_refresh_functions_is_a_copy(sparse_model):
    _, m = sparse_model
    before = m.SerializeToString()
    refresh_functions(m)
    assert m.SerializeToString() == before


def test_inlined_variant_densifies_sparse_convs():
    """Without the plugin, SparseConv nodes become dense Conv nodes (no CSR decompression TensorRT 8.2 can't run)."""
    import numpy as np

    from edgesqueeze.bundle.variants import custom_ops, inlined_variant
    from edgesqueeze.model import random_feeds
    from edgesqueeze.ortutil import run_model
    from edgesqueeze.plugins.sparse_convert import convert_sparse_convs
    from test_plugins_sparse_convert import _model

    dense = _model()
    sparse, report = convert_sparse_convs(dense)
    assert {c["format"] for c in report["converted"]} == {"2:4", "csr"}
    variant = inlined_variant(sparse)
    assert not custom_ops(variant)
    ops = {n.op_type for n in variant.graph.node}
    assert "ScatterElements" not in ops and "Conv" in ops
    feeds = random_feeds(dense, seed=0)[0]
    ref = run_model(dense, feeds)["y"]
    np.testing.assert_allclose(run_model(variant, feeds)["y"], ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
