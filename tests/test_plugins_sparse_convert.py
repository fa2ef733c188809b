"""convert_sparse_convs: pruned Conv layers become SparseConv nodes; onnxruntime proves the outputs unchanged."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.ortutil import run_model
from edgesqueeze.plugins.sparse_convert import convert_sparse_convs


def _model(opset=17):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)         # 2:4 along input channels
    g = w1.transpose(0, 2, 3, 1).reshape(32, 3, 3, 4, 4)
    np.put_along_axis(g, np.argsort(np.abs(g), axis=-1)[..., :2], 0, axis=-1)
    w1 = g.reshape(32, 3, 3, 16).transpose(0, 3, 1, 2).copy()
    w2 = rng.standard_normal((40, 32, 1, 1)).astype(np.float32)         # 90 % zeros → CSR
    w2[rng.random(w2.shape) < 0.9] = 0
    w3 = rng.standard_normal((8, 40, 3, 3)).astype(np.float32)          # dense: stays a Conv
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (rng.standard_normal(32).astype(np.float32), "b1"),
                                                         (w2, "w2"), (w3, "w3"), (np.float32(0), "lo"),
                                                         (np.float32(6), "hi"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_convert_keeps_outputs_and_shrinks_weights():
    model = _model()
    before = model.SerializeToString()
    new, report = convert_sparse_convs(model)
    assert model.SerializeToString() == before                      # input untouched
    onnx.checker.check_model(new, full_check=True)
    assert [(c["node"], c["format"], c["activation"]) for c in report["converted"]] == [
        ("conv1", "2:4", "relu"), ("conv2", "csr", "clip")]
    assert [s["node"] for s in report["skipped"]] == ["conv3"]
    assert report["weight_bytes_after"] < 0.6 * report["weight_bytes_before"]
    assert [n.op_type for n in new.graph.node] == ["SparseConv", "SparseConv", "Conv"]
    assert {"w1", "w2"}.isdisjoint(t.name for t in new.graph.initializer)
    x = np.random.default_rng(1).standard_normal((1, 16, 9, 9)).astype(np.float32)
    ref, got = run_model(model, {"x": x})["y"], run_model(new, {"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    again, _ = convert_sparse_convs(model)
    assert again.SerializeToString() == new.SerializeToString()    # deterministic


def test_old_opset_skips_csr_with_a_reason():
    new, report = convert_sparse_convs(_model(opset=13))
    assert [c["format"] for c in report["converted"]] == ["2:4"]
    assert {"node": "conv2", "reason": "CSR needs ai.onnx opset >= 16"} in report["skipped"]
    x = np.random.default_rng(2).standard_normal((1, 16, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run_model(new, {"x": x})["y"], run_model(_model(13), {"x": x})["y"], rtol=1e-5,
                               atol=1e-4)
