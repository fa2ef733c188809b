"""build --sparsity 2:4 prunes the pointwise convolutions before they are fused into DepthwiseSeparableConv."""
import json

import onnx
import pytest

from edgesqueeze.compress.sparse24 import is_2_4
from edgesqueeze.passes.zoo import mobilenet_v2


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
