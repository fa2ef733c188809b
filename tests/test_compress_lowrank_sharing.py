"""Low-rank factorisation (truncated SVD) and k-means weight sharing, checked on onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from compress_nets import _Builder, conv_net, flatten_net, mlp
from edgesqueeze.compress import kmeans_1d, low_rank, share_weights
from edgesqueeze.compress.lowrank import choose_rank
from edgesqueeze.errors import InputError
from edgesqueeze.model import random_feeds
from edgesqueeze.ortutil import run_model


def _arrays(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _ops(model):
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("make", [mlp, flatten_net, conv_net])
def test_full_rank_svd_reproduces_every_layer(make):
    m = make()
    out, rep = low_rank(m, energy=1.0, always=True, spatial=True)
    assert rep["layers"] and not rep["skipped"]
    assert all(r["rank"] == r["full_rank"] for r in rep["layers"])
    assert len(out.graph.node) == len(m.graph.node) + len(rep["layers"])
    for feeds in random_feeds(m, seed=1, batches=2):
        ref, act = run_model(m, feeds)["y"], run_model(out, feeds)["y"]
        np.testing.assert_allclose(act, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_spatial_split_shapes_and_strided_padded_conv():
    m = conv_net()   # the third conv is 3x3, stride 2, pads 1
    out, rep = low_rank(m, energy=1.0, always=True, spatial=True)
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    kernels = [list(helper.get_attribute_value(a)) for n in convs for a in n.attribute if a.name == "kernel_shape"]
    assert [3, 1] in kernels and [1, 3] in kernels
    shapes = {k: list(v.shape) for k, v in _arrays(out).items()}
    kx1 = [s for k, s in shapes.items() if k.endswith(".kx1")]
    assert all(s[2:] == [3, 1] for s in kx1) and kx1


def test_low_rank_truncation_on_a_low_rank_layer():
    b = _Builder(0)
    u = b.rng.standard_normal((40, 3)).astype(np.float32)
    v = b.rng.standard_normal((3, 30)).astype(np.float32)
    w = (u @ v).astype(np.float32)  # rank 3
    b.const("w", w)
    b.nodes.append(helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=0, alpha=0.5))
    m = b.model([helper.make_tensor_value_info("x", 1, [2, 40])], [helper.make_tensor_value_info("y", 1, [2, 30])])
    out, rep = low_rank(m, energy=0.999)
    assert rep["layers"][0]["rank"] == 3
    assert rep["layers"][0]["params_after"] == 3 * 70
    feeds = random_feeds(m)[0]
    np.testing.assert_allclose(run_model(out, feeds)["y"], run_model(m, feeds)["y"], rtol=1e-4, atol=1e-4)
    assert _ops(out) == ["Gemm", "Gemm"]


def test_rank_choice_and_skips():
    s = np.array([4.0, 2.0, 1.0, 0.5])
    assert choose_rank(s, 10, 10, energy=0.75, ratio=None, rank=None) == 1   # 16/21.25 = 0.753
    assert choose_rank(s, 10, 10, energy=0.94, ratio=None, rank=None) == 2   # 20/21.25 = 0.941
    assert choose_rank(s, 10, 10, energy=0.9, ratio=0.5, rank=None) == 2     # 0.5 * 100 / 20 = 2.5
    assert choose_rank(s, 10, 10, energy=0.9, ratio=None, rank=9) == 4
    m = conv_net()
    out, rep = low_rank(m, energy=0.9)  # random weights hold no low-rank structure: nothing saves
    reasons = " ".join(r["reason"] for r in rep["skipped"])
    assert "K x K" in reasons and "saves nothing" in reasons
    with pytest.raises(InputError):
        low_rank(m, energy=0.0)
    with pytest.raises(InputError):
        low_rank(m, ratio=1.5)


def test_ratio_mode_shrinks_params_and_runs():
    m = mlp((64, 48, 32, 10))
    out, rep = low_rank(m, ratio=0.5)
    assert rep["totals"]["params_after"] <= 0.5 * rep["totals"]["params_before"]
    assert run_model(out, random_feeds(m)[0])["y"].shape == (4, 10)


# ----------------------------------------------------------------------------- sharing
def test_kmeans_exact_when_codebook_covers_distinct_values():
    rng = np.random.default_rng(0)
    vals = rng.choice(rng.standard_normal(20).astype(np.float32), size=500)
    code, labels = kmeans_1d(vals, 32)
    assert code.size == np.unique(vals).size
    assert np.array_equal(code[labels], vals)   # bit-exact
    code, labels = kmeans_1d(vals, 8)
    assert code.size <= 8 and np.all(np.diff(code) > 0)
    assert np.abs(code[labels] - vals).max() < np.ptp(vals) / 4


def test_kmeans_linear_init_keeps_outliers_and_beats_uniform():
    rng = np.random.default_rng(1)
    vals = np.concatenate([rng.normal(0, 0.05, 5000), [1.0, -1.0]]).astype(np.float32)
    code, labels = kmeans_1d(vals, 16)
    assert code.min() < -0.9 and code.max() > 0.9   # linear init keeps the rare large weights
    err = np.mean((code[labels] - vals) ** 2)
    grid = np.linspace(vals.min(), vals.max(), 16)
    uni = np.mean((grid[np.abs(vals[:, None] - grid[None]).argmin(1)] - vals) ** 2)
    assert err < uni


def test_share_weights_bits_and_zeros_kept():
    from edgesqueeze.compress import prune_magnitude

    m, _ = prune_magnitude(conv_net(), 0.5)
    out, rep = share_weights(m, conv_bits=3, fc_bits=2)
    before, after = _arrays(m), _arrays(out)
    for r in rep["layers"]:
        w0, w1 = before[r["weight"]], after[r["weight"]]
        assert np.array_equal(w0 == 0, w1 == 0)
        assert np.unique(w1[w1 != 0]).size <= 2 ** r["bits"]
        assert r["bits"] == (3 if r["kind"] == "conv" else 2)
    out8, rep8 = share_weights(m)  # defaults 8 / 5
    assert {r["kind"]: r["bits"] for r in rep8["layers"]} == {"conv": 8, "fc": 5}
    feeds = random_feeds(m)[0]
    y0, y1 = run_model(m, feeds)["y"], run_model(out8, feeds)["y"]
    assert np.abs(y1 - y0).max() < 0.05 * np.abs(y0).max()
    with pytest.raises(InputError):
        share_weights(m, conv_bits=0)
