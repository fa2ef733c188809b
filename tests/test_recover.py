"""Accuracy recovery by distillation (``edgesqueeze recover``) and the channel-pruning no-op guard."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.compress import prune_channels
from edgesqueeze.errors import UnsupportedError
from edgesqueeze.model import load_model
from edgesqueeze.ortutil import make_session

pytest.importorskip("torch")
DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


def _top1(path, val):
    s = make_session(load_model(path))
    name = s.get_inputs()[0].name
    out = np.concatenate([s.run(None, {name: val["input"][i:i + 1]})[0] for i in range(len(val["label"]))])
    return float((out.argmax(1) == val["label"]).mean())


def _zeros(path):
    return {t.name: numpy_helper.to_array(t) == 0 for t in load_model(path).graph.initializer
            if len(t.dims) > 1}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    out = d / "pruned.onnx"
    subprocess.run([sys.executable, "-m", "edgesqueeze", "compress", str(DIGITS / "digits_cnn.onnx"), "--prune",
                    "0.9", "-o", str(out)], check=True, capture_output=True)
    return out


def _recover(pruned, out):
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "recover", str(pruned), "--teacher",
                        str(DIGITS / "digits_cnn.onnx"), "--data", str(DIGITS / "calib.npz"), "--epochs", "12",
                        "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_recover_raises_top1_keeps_mask_and_is_reproducible(pruned, tmp_path):
    val = np.load(DIGITS / "val.npz")
    before = _top1(pruned, val)
    a = _recover(pruned, tmp_path / "a.onnx")
    after = _top1(a, val)
    assert before < 0.3 and after > before + 0.4, (before, after)
    zb, za = _zeros(pruned), _zeros(a)
    assert sum(int(m.sum()) for m in zb.values()) > 0
    # every pruned weight stays zero (the exporter may rename or transpose weights: count them)
    assert sum(int(m.sum()) for m in za.values()) >= sum(int(m.sum()) for m in zb.values())
    b = _recover(pruned, tmp_path / "b.onnx")
    assert a.read_bytes() == b.read_bytes()


def test_recover_refuses_unsupported_op(tmp_path):
    from edgesqueeze.compress.onnx_torch import onnx_module

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Erf", ["x"], ["y"], name="erf0")], "g", [x], [y]))
    with pytest.raises(UnsupportedError, match="Erf"):
        onnx_module(m)


def test_channels_refuses_when_every_group_is_frozen():
    rng = np.random.RandomState(0)
    w1, w2 = rng.randn(8, 3, 3, 3).astype(np.float32), rng.randn(8, 8, 3, 3).astype(np.float32)
    bn = [np.ones(8, np.float32), np.zeros(8, np.float32), np.zeros(8, np.float32), np.ones(8, np.float32)]
    inits = [numpy_helper.from_array(a, n) for a, n in zip([w1, w2] + bn, ["w1", "w2", "s", "b", "m", "v"])]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"]),  # BN params shared
             helper.make_node("Conv", ["n1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c2", "s", "b", "m", "v"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    with pytest.raises(UnsupportedError, match="BatchNormalization"):
        prune_channels(m, 0.3)
