"""build --sparsity 2:4 prunes the pointwise convolutions before they are fused into DepthwiseSeparableConv."""
import json

import onnx
import pytest

from edgesqueeze.compress.sparse24 import is_2_4
from netzoo import mobilenet_v2


@pytest.fixture(scope="module")
def mnv2(tmp_path_factory):
    path = tmp_path_factory.mktemp("mnv2") / "mnv2.onnx"
    onnx.save(mobilenet_v2(width=0.35, input_size=64, num_classes=10), str(path))
    return path


def _build(cli, model, out, *extra):
    code, stdout, err = cli("-q", "build", model, "--target", "orin-nano", "--precision", "fp32", "--sparsity", "2:4",
                            "-o", out, "--json", *extra)
    assert code == 0, err
    return json.loads(stdout)


def test_pointwise_convs_of_fused_blocks_are_pruned(cli, mnv2, tmp_path):
    fused = _build(cli, mnv2, tmp_path / "fused")
    unfused = _build(cli, mnv2, tmp_path / "unfused", "--skip", "fuse_depthwise_separable")
    changed = fused["stages"]["compress"]["changed"]
    assert changed == unfused["stages"]["compress"]["changed"] > 10
    model = onnx.load(str(tmp_path / "fused" / "models" / "model.fp32.onnx"))
    dwsep = [n for n in model.graph.node if n.op_type == "DepthwiseSeparableConv"]
    assert dwsep, "the depthwise-separable fusion still runs after compression"
    inits = {t.name: t for t in model.graph.initializer}
    pw = [onnx.numpy_helper.to_array(inits[n.input[3]]) for n in dwsep if n.input[3] in inits]
    assert any(is_2_4(w, axis=1) for w in pw)


def test_model_finite_only_on_real_data_builds_with_that_data(cli, tmp_path):
    """A Log of the input is NaN on random inputs: build runs its final check on the user's data instead."""
    import numpy as np
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Log", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "log.onnx"
    onnx.save(model, str(path))
    data = tmp_path / "pos.npz"
    np.savez(data, x=np.random.default_rng(0).uniform(0.5, 2.0, (8, 4)).astype(np.float32))
    code, _, err = cli("-q", "build", path, "--target", "cpu", "--precision", "fp32", "-o", tmp_path / "b1")
    assert code == 7 and "NaN/Inf on random inputs" in err
    code, _, err = cli("-q", "build", path, "--target", "cpu", "--precision", "fp32", "--val", data,
                       "-o", tmp_path / "b2")
    assert code == 0, err
