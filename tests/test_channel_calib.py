"""Data-aware channel pruning (``compress --channels F --calib DATA``) and the per-layer spare rules."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress_nets import flatten_net, residual_net
from edgesqueeze.compress import prune_channels
from edgesqueeze.errors import InputError
from edgesqueeze.model import load_model, random_feeds
from edgesqueeze.ortutil import make_session, run_model

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


def _top1(model, x, y) -> float:
    s = make_session(model)
    name = s.get_inputs()[0].name
    out = np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    return float((out.argmax(1) == y).mean())


def _constant_half_net():
    """x [1,4,6,6] -> Conv 1x1 (8 out; filters 4..7 all zero, biases not) -> Relu -> Conv 3x3 -> y [1,5,4,4].
    Channels 4..7 are constants (relu of their bias): removing them is exact once their contribution moves
    into the next layer's bias; the L1 rule removes them too but loses that contribution."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 4, 1, 1)).astype(np.float32)
    w1[4:] = 0
    b1 = np.concatenate([rng.normal(size=4), [1.0, 2.0, 0.5, 1.5]]).astype(np.float32)
    w2 = rng.normal(size=(5, 8, 3, 3)).astype(np.float32) * 0.3
    b2 = rng.normal(size=5).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_calib_removes_constant_channels_exactly_where_l1_does_not():
    m = _constant_half_net()
    x = np.random.default_rng(1).normal(size=(32, 4, 6, 6)).astype(np.float32)
    ref = np.concatenate([run_model(m, {"x": x[i:i + 1]})["y"] for i in range(8)])
    l1, _ = prune_channels(m, 0.5)
    data, rep = prune_channels(m, 0.5, calib=x)
    got = {name: np.concatenate([run_model(mm, {"x": x[i:i + 1]})["y"] for i in range(8)])
           for name, mm in (("l1", l1), ("data", data))}
    # the zero filters go either way (L1 0, variance 0) ...
    assert numpy_helper.to_array(next(t for t in data.graph.initializer if t.name == "w1")).shape[0] == 4
    # ... but only the data-aware path keeps the output (up to the ridge term of the refit)
    err = {k: float(np.abs(v - ref).max() / np.abs(ref).max()) for k, v in got.items()}
    assert err["l1"] > 0.2 and err["data"] < 0.01, err
    row = rep["refit"][0]
    assert row["node"] == "conv2" and row["error_after"] < row["error_before"]
    assert rep["selection"].startswith("activation variance")


def test_calib_static_batch_and_flatten_gemm():
    """A model with a static batch of 2 and a Flatten -> Gemm consumer: refitted, runs, closer than L1."""
    m = flatten_net()
    x = np.concatenate([f["x"] for f in random_feeds(m, seed=4, batches=24)])
    out, rep = prune_channels(m, 0.5, calib=x)
    assert [r["node"] for r in rep["refit"]][0].startswith("Gemm")
    feeds = random_feeds(m, seed=99)[0]
    ref = run_model(m, feeds)["y"]
    l1 = run_model(prune_channels(m, 0.5)[0], feeds)["y"]
    got = run_model(out, feeds)["y"]
    assert np.abs(got - ref).mean() < np.abs(l1 - ref).mean()


def test_spare_rules_keep_residual_and_pooled_groups():
    m = residual_net()
    _, rep = prune_channels(m, 0.5, spare=("residual",))
    tied = next(g for g in rep["groups"] if len(g["producers"]) == 2)
    assert tied["kept"] == tied["channels"] and tied["frozen"].startswith("spared: residual Add")
    assert rep["totals"]["groups_pruned"] == 4
    with pytest.raises(InputError, match="unknown channel spare rule"):
        prune_channels(m, 0.5, spare=("stem",))


def _se_net():
    """Conv 3->8 -> Relu -> squeeze-excitation (GAP -> Conv 8->4 -> Relu -> Conv 4->8 -> Sigmoid -> Mul) ->
    Conv 8->6 -> y."""
    rng = np.random.default_rng(0)
    arrays = {"w0": (8, 3, 3, 3), "w1": (4, 8, 1, 1), "w2": (8, 4, 1, 1), "w3": (6, 8, 1, 1)}
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in arrays.items()]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("GlobalAveragePool", ["r0"], ["p"]),
             helper.make_node("Conv", ["p", "w1"], ["s1"], name="se_reduce"),
             helper.make_node("Relu", ["s1"], ["s2"]),
             helper.make_node("Conv", ["s2", "w2"], ["s3"], name="se_expand"),
             helper.make_node("Sigmoid", ["s3"], ["gate"]),
             helper.make_node("Mul", ["r0", "gate"], ["se"]),
             helper.make_node("Conv", ["se", "w3"], ["y"], name="head")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_spare_pooled_keeps_the_squeeze_not_the_gated_channels():
    _, rep = prune_channels(_se_net(), 0.5, spare=("pooled",))
    g = {tuple(r["producers"]): r for r in rep["groups"]}
    assert g[("se_reduce",)]["frozen"] == "spared: pooled branch (1x1 map)"
    assert g[("stem", "se_expand")]["frozen"] is None and g[("stem", "se_expand")]["kept"] == 4


@pytest.mark.skipif(not (DIGITS / "digits_cnn.onnx").exists(), reason="examples/digits not built")
def test_calib_digits_cnn_keeps_accuracy_without_training():
    """The digits CNN at --channels 0.5: L1 leaves ~37 % top-1, data-aware selection + refit ~97 %."""
    m = load_model(DIGITS / "digits_cnn.onnx")
    val, calib = np.load(DIGITS / "val.npz"), np.load(DIGITS / "calib.npz")
    base = _top1(m, val["input"], val["label"])
    l1 = _top1(prune_channels(m, 0.5)[0], val["input"], val["label"])
    data = _top1(prune_channels(m, 0.5, calib=calib["input"])[0], val["input"], val["label"])
    assert l1 < base - 0.3 and data > base - 0.04, (base, l1, data)


@pytest.mark.skipif(not (DIGITS / "digits_cnn.onnx").exists(), reason="examples/digits not built")
def test_compress_cli_calib(tmp_path):
    out = tmp_path / "c.onnx"
    cmd = [sys.executable, "-m", "edgesqueeze", "compress", str(DIGITS / "digits_cnn.onnx"), "--channels", "0.5",
           "--calib", str(DIGITS / "calib.npz"), "-o", str(out), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"refit"' in r.stdout and onnx.load(str(out)).graph.node
    r = subprocess.run(cmd[:5] + ["--prune", "0.5"] + cmd[7:], capture_output=True, text=True)
    assert r.returncode == 3 and "--calib needs --channels" in r.stderr
