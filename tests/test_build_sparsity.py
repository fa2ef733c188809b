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


# ---- 2:4 SparseConv layers: TensorRT's sparse tensor cores on sm_80+, the plugin's tiled kernel before -------------
def _two_sparse_convs():
    """Conv (2:4-pruned) -> Relu -> Conv (~85 % zeros): SparseConv 2:4 + SparseConv CSR after conversion."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgesqueeze.plugins.sparse_convert import convert_sparse_convs

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    g = w1.transpose(0, 2, 3, 1).reshape(32, 3, 3, 8, 4)
    mask = np.zeros(g.shape, bool)
    np.put_along_axis(mask, np.argsort(-np.abs(g), axis=-1)[..., :2], True, axis=-1)
    w1 = np.where(mask, g, 0).reshape(32, 3, 3, 32).transpose(0, 3, 1, 2).copy()
    w2 = rng.standard_normal((48, 32, 1, 1)).astype(np.float32)
    w2[rng.random(w2.shape) < 0.85] = 0
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(32, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(48, np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    converted, report = convert_sparse_convs(model)
    assert sorted(c["format"] for c in report["converted"]) == ["2:4", "csr"]
    return converted


def _sparse_formats(model):
    from edgesqueeze.plugins.sparse_convert import sparse_2_4_formats

    return sorted(sparse_2_4_formats(model))


def test_route_2_4_to_tensorrt_only_with_sparse_tensor_cores():
    import numpy as np

    from edgesqueeze.ortutil import run_model
    from edgesqueeze.plugins.sparse_convert import route_sparse_2_4

    model = _two_sparse_convs()
    same, flag = route_sparse_2_4({"fp32": model}, sparse_tensor_cores=False)
    assert same["fp32"] is model and flag is False
    routed, flag = route_sparse_2_4({"fp32": model}, sparse_tensor_cores=True)
    assert flag is True and _sparse_formats(routed["fp32"]) == ["csr"] and _sparse_formats(model) == ["2:4", "csr"]
    conv = [n for n in routed["fp32"].graph.node if n.op_type == "Conv"]
    assert len(conv) == 1  # the 2:4 layer, dense with its zeros (TensorRT prunes nothing, it detects the pattern)
    w = {t.name: onnx.numpy_helper.to_array(t) for t in routed["fp32"].graph.initializer}[conv[0].input[1]]
    assert is_2_4(w, axis=1)
    x = {"x": np.random.default_rng(1).standard_normal((1, 32, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(run_model(routed["fp32"], x)["y"], run_model(model, x)["y"], rtol=1e-5, atol=1e-5)
    dense = {"fp32": mobilenet_v2(width=0.35, input_size=32, num_classes=4)}
    assert route_sparse_2_4(dense, True) == (dense, False)  # no SparseConv: nothing routed, no --sparsity


@pytest.mark.parametrize("target,native", [("orin-nano", True), ("xavier-nx", False)])
def test_bundle_routes_2_4_layers_by_target(cli, tmp_path, target, native):
    """Orin: the 2:4 layer is a dense Conv in TensorRT's plugin model and build_engine.sh passes --sparsity=enable;
    Xavier (no sparse tensor cores): the plugin's 2:4 kernel keeps it, no --sparsity. CSR stays a plugin node."""
    path = tmp_path / "sparse.onnx"
    onnx.save(_two_sparse_convs(), str(path))
    code, stdout, err = cli("-q", "build", path, "--target", target, "--precision", "fp32", "-o", tmp_path / "b",
                            "--json")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["tensorrt"]["sparsity"] is native
    assert ("--sparsity=enable" in (tmp_path / "b" / "build_engine.sh").read_text()) is native
    plugin_model = onnx.load(str(tmp_path / "b" / manifest["tensorrt"]["engine_models"]["fp32.plugin"]))
    assert _sparse_formats(plugin_model) == (["csr"] if native else ["2:4", "csr"])
    inlined = onnx.load(str(tmp_path / "b" / manifest["tensorrt"]["engine_models"]["fp32.inlined"]))
    assert _sparse_formats(inlined) == []


def test_bundle_with_only_2_4_layers_needs_no_plugin_on_orin(cli, tmp_path):
    """Every custom node is 2:4: on Orin TensorRT gets its own dense model, and no plugin library is built."""
    import numpy as np

    from custom_ops import make_sparse_conv_model

    w = np.zeros((8, 16, 1, 1), np.float32)
    w[:, 0::4] = 1.0
    w[:, 3::4] = -0.5
    path = tmp_path / "s24.onnx"
    onnx.save(make_sparse_conv_model((1, 16, 8, 8), w, np.zeros(8, np.float32), sparse_format="2:4",
                                     activation="relu"), str(path))
    code, _, err = cli("-q", "build", path, "--target", "orin-nano", "--precision", "fp32", "-o", tmp_path / "b")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["tensorrt"]["engine_models"] == {"fp32": "models/model.fp32.trt.onnx"}
    assert manifest["tensorrt"]["plugin_sources"] is None and not (tmp_path / "b" / "plugins").exists()
    script = (tmp_path / "b" / "build_engine.sh").read_text()
    assert "--sparsity=enable" in script and "models/model.fp32.trt.onnx" in script
    trt_model = onnx.load(str(tmp_path / "b" / "models" / "model.fp32.trt.onnx"))
    assert [n.op_type for n in trt_model.graph.node] == ["Conv", "Relu"]
