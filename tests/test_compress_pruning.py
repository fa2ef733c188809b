"""Magnitude pruning, 2:4 structured sparsity and channel pruning on ONNX weights, checked on onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compress_nets import conv_net, flatten_net, mlp, residual_net
from edgesqueeze.compress import is_2_4, prune_channels, prune_magnitude, sparsify_2_4
from edgesqueeze.compress._layers import find_layers
from edgesqueeze.compress.sparse24 import input_axis
from edgesqueeze.errors import InputError
from edgesqueeze.model import random_feeds
from edgesqueeze.ortutil import compare_outputs, run_model

REPO_EXAMPLE = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits_cnn.onnx"


def _arrays(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _macs(model):
    try:
        from edgesqueeze.inspect import inspect_model
    except ImportError:  # the lead's inspect not there: count ourselves
        from edgesqueeze.compress._macs import count_macs

        return count_macs(model)
    return inspect_model(model)["totals"]["macs"]


# ----------------------------------------------------------------------------- magnitude
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_reaches_target_and_runs(scope):
    m = conv_net()
    out, rep = prune_magnitude(m, 0.75, scope=scope)
    assert rep["totals"]["sparsity"] == pytest.approx(0.75, abs=1e-3)
    if scope == "layer":
        assert all(r["sparsity"] == pytest.approx(0.75, abs=0.01) for r in rep["layers"])
    before, after = _arrays(m), _arrays(out)
    for ly in find_layers(out):
        w0, w1 = before[ly.weight], after[ly.weight]
        kept = w1 != 0
        assert np.array_equal(w1[kept], w0[kept])  # survivors untouched
        if kept.any() and (~kept).any():
            assert np.abs(w0[~kept]).max() <= np.abs(w0[kept]).min() + (0 if scope == "layer" else 1e9)
    feeds = random_feeds(m)[0]
    assert run_model(out, feeds)["y"].shape == (1, 10)
    assert m.SerializeToString() != out.SerializeToString()
    assert (_arrays(m)["c1.w"] != 0).all()  # the input model is not modified


def test_global_scope_uses_one_threshold():
    m = mlp()
    out, _ = prune_magnitude(m, 0.6, scope="global")
    before, after = _arrays(m), _arrays(out)
    kept = np.concatenate([np.abs(before[ly.weight][after[ly.weight] != 0]) for ly in find_layers(out)])
    dropped = np.concatenate([np.abs(before[ly.weight][after[ly.weight] == 0]) for ly in find_layers(out)])
    assert dropped.max() <= kept.min()


def test_std_threshold_and_determinism():
    m = mlp()
    a, rep = prune_magnitude(m, std_q=0.5)
    b, _ = prune_magnitude(m, std_q=0.5)
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    w0 = _arrays(m)["fc0.w"]
    assert np.array_equal(_arrays(a)["fc0.w"] == 0, np.abs(w0) < 0.5 * w0.std())
    assert rep["scope"] == "std"


@pytest.mark.parametrize("bad", [dict(sparsity=1.0), dict(sparsity=-0.1), dict(scope="net"), dict(std_q=-1)])
def test_magnitude_bad_options(bad):
    with pytest.raises(InputError):
        prune_magnitude(mlp(), **bad)


# ----------------------------------------------------------------------------- 2:4
def test_2_4_every_group_valid_and_skips_listed():
    m = conv_net(cin=3)  # first conv has 3 input channels: skipped
    out, rep = sparsify_2_4(m)
    skipped = {s["layer"] for s in rep["skipped"]}
    assert skipped == {"Conv_1"}
    assert "not a multiple of 4" in rep["skipped"][0]["reason"]
    changed = {c["weight"]: c for c in rep["changed"]}
    assert len(changed) == 3
    before = _arrays(m)
    for ly in find_layers(out):
        w = _arrays(out)[ly.weight]
        axis = input_axis(ly)
        if ly.weight not in changed:
            assert np.array_equal(w, before[ly.weight])
            continue
        assert is_2_4(w, axis)
        g = np.moveaxis(w, axis, -1).reshape(-1, 4)
        assert (np.count_nonzero(g, axis=1) == 2).all()  # random weights: exactly 2 of 4 survive
        # the survivors are the two largest of their group
        g0 = np.abs(np.moveaxis(before[ly.weight], axis, -1).reshape(-1, 4))
        assert (np.abs(g).sum(1) == np.sort(g0, axis=1)[:, 2:].sum(1)).all()
    assert run_model(out, random_feeds(m)[0])["y"].shape == (1, 10)


def test_2_4_gemm_orientation():
    m = flatten_net()   # Gemm transB=0 [128, 16] groups along axis 0; MatMul [16, 5] along axis 0
    out, rep = sparsify_2_4(m)
    w = _arrays(out)
    assert is_2_4(w["fc1.w"], 0) and not is_2_4(w["fc1.w"], 1)
    assert is_2_4(w["fc2.w"], 0)
    assert is_2_4(w["c1.w"], 1)
    again, _ = sparsify_2_4(out)  # idempotent
    assert again.SerializeToString(deterministic=True) == out.SerializeToString(deterministic=True)


def test_is_2_4_detects_violation():
    w = np.ones((2, 8), np.float32)
    assert not is_2_4(w, 1)
    w[:, [1, 2, 4, 7]] = 0
    assert is_2_4(w, 1)
    assert not is_2_4(np.zeros((2, 6)), 1)


# ----------------------------------------------------------------------------- channels
def _zero_half(model, bn):
    """Zero the even channels of every prunable group (filters, biases, BN shift, depthwise bias)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    arrays = _arrays(m)
    zero = {}
    for name, arr in arrays.items():
        if name.startswith("fc.") or name == "scale":
            continue
        arr = arr.copy()
        if name.endswith((".w", ".b", ".be", ".m")) and arr.ndim >= 1:
            arr[0::2] = 0  # output channels (dw weight and bias too: its input is zero anyway)
            zero[name] = arr
    for t in m.graph.initializer:
        if t.name in zero:
            t.CopyFrom(numpy_helper.from_array(zero[t.name], t.name))
    return m


@pytest.mark.parametrize("bn", [False, True])
def test_channel_pruning_residual_exact_when_pruned_filters_are_zero(bn):
    m = _zero_half(residual_net(bn=bn), bn)
    out, rep = prune_channels(m, 0.5)
    groups = {tuple(g["producers"]): g for g in rep["groups"]}
    # the residual Add ties the stem conv to the block's second conv: one group, pruned together
    assert any(len(p) == 2 for p in groups)
    assert all(g["kept"] == g["channels"] // 2 for g in groups.values() if g["frozen"] is None)
    assert rep["totals"]["groups_pruned"] == 5 and rep["totals"]["groups_frozen"] == 1
    onnx.checker.check_model(out, full_check=True)
    for feeds in random_feeds(m, seed=3, batches=3):
        ref, act = run_model(m, feeds), run_model(out, feeds)
        np.testing.assert_allclose(act["y"], ref["y"], rtol=1e-5, atol=1e-6)
    assert _macs(out) < 0.4 * _macs(m)
    shapes = {t.name: list(t.dims) for t in out.graph.initializer}
    dw = next(n for n in out.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1
                                                                       for a in n.attribute))
    assert shapes[dw.input[1]][:2] == [12, 1]  # the depthwise conv after the Concat follows it: 8 + 4
    assert onnx.helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 12
    assert shapes["scale"] == [12, 1, 1]  # the per-channel Mul constant shrinks too
    assert shapes["fc.w"] == [10, 6]


def test_channel_pruning_flatten_and_matmul():
    m = flatten_net()
    out, rep = prune_channels(m, 0.5)
    shapes = {t.name: list(t.dims) for t in out.graph.initializer}
    assert shapes["c1.w"][0] == 4
    assert shapes["fc1.w"] == [64, 8]   # 4 channels x 4 x 4 positions in, 8 features out
    assert shapes["fc2.w"] == [8, 5]
    assert run_model(out, random_feeds(m)[0])["y"].shape == (2, 5)


def test_channel_pruning_frozen_groups_and_bad_ratio():
    m = mlp()
    out, rep = prune_channels(m, 0.25, multiple_of=8)
    g = {g["producers"][0]: g for g in rep["groups"]}
    assert g["Gemm_1"]["kept"] == 24 and g["Gemm_3"]["kept"] == 16  # 12 rounds up to 16 (= all)
    assert g["Gemm_5"]["frozen"] == "graph output 'y'"
    with pytest.raises(InputError):
        prune_channels(m, 1.0)


@pytest.mark.skipif(not REPO_EXAMPLE.exists(), reason="examples/digits/digits_cnn.onnx not built yet")
def test_channel_pruning_exported_cnn_runs():
    from edgesqueeze.model import load_model

    m = load_model(REPO_EXAMPLE)
    out, rep = prune_channels(m, 0.25)
    assert rep["totals"]["groups_pruned"] >= 3
    feeds = random_feeds(m)[0]
    assert run_model(out, feeds)["logits"].shape == (1, 10)
    assert _macs(out) < _macs(m)
    d = compare_outputs(run_model(m, feeds), run_model(out, feeds))["logits"]
    assert np.isfinite(d["max_abs"])


@pytest.mark.parametrize("name", ["light_squeezenet.onnx", "light_densenet121.onnx"])
def test_channel_pruning_model_zoo_concats(light_models_dir, name):
    from edgesqueeze.model import load_model
    from random_weights import materialize_random_weights

    m = materialize_random_weights(load_model(light_models_dir / name))
    out, rep = prune_channels(m, 0.25)
    assert rep["totals"]["groups_pruned"] > 20
    assert _macs(out) < 0.7 * _macs(m)
    onnx.checker.check_model(out)
    feeds = random_feeds(m)[0]
    ref, act = run_model(m, feeds), run_model(out, feeds)
    assert {k: v.shape for k, v in ref.items()} == {k: v.shape for k, v in act.items()}


@pytest.mark.slow
def test_channel_pruning_resnet50_residuals(light_models_dir):
    from edgesqueeze.model import load_model
    from random_weights import materialize_random_weights

    m = materialize_random_weights(load_model(light_models_dir / "light_resnet50.onnx"))
    out, rep = prune_channels(m, 0.25)
    tied = [g for g in rep["groups"] if len(g["producers"]) > 1]   # each stage's shortcut + block outputs
    assert len(tied) == 4 and all(g["frozen"] is None for g in tied)
    assert _macs(out) < 0.7 * _macs(m)
    feeds = random_feeds(m)[0]
    assert run_model(out, feeds)[m.graph.output[0].name].shape == run_model(m, feeds)[m.graph.output[0].name].shape


def test_channel_pruning_ratio_zero_changes_nothing():
    m = residual_net()
    out, rep = prune_channels(m, 0.0)
    assert [n.SerializeToString() for n in out.graph.node] == [n.SerializeToString() for n in m.graph.node]
    assert {t.name: t.SerializeToString() for t in out.graph.initializer} == \
        {t.name: t.SerializeToString() for t in m.graph.initializer}
    assert all(g["kept"] == g["channels"] for g in rep["groups"])


def test_macs_of_a_dynamic_model_are_counted_at_the_check_shape_or_unknown():
    """A dynamic H x W has no MAC count (None, 'n/a' in the report), never 0; with --input's shape it has one."""
    from onnx import TensorProto, helper, numpy_helper

    from edgesqueeze.compress._macs import count_macs
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, "h", "w"])
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = helper.make_model(helper.make_graph([conv], "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.graph.value_info.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, ["n"]))
    assert count_macs(model) is None
    assert count_macs(model, {"x": [1, 3, 10, 12]}) == 8 * 10 * 12 * 27
    assert len(model.graph.input[0].type.tensor_type.shape.dim[2].dim_param) == 1   # the model is unchanged
