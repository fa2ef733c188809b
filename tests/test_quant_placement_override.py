"""docs/quantize.md, "Layers left in float for TensorRT": pinning a dynamic batch with ``--input ... --static``
judges a fully connected layer at that batch (a GEMM there, so INT8); without --static at batch 1 (a GEMV, left in
float); ``trt_rules=False`` in the Python API quantizes every layer."""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.quant import plan_qdq


def _model(path):
    """x [batch, 8, 64] -> MatMul 64x32 -> Relu -> MatMul 32x32 (8 rows per sample: a GEMM at any batch), and a
    mean over the 8 rows -> MatMul 32x32 (one row per sample: a GEMV at batch 1)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "W2")
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2"),
             helper.make_node("ReduceMean", ["r"], ["p"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["p", "W2"], ["z"], name="head")]
    graph = helper.make_graph(nodes, "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 32]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 32])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return model


def test_a_pinned_batch_judges_the_head_at_that_batch(tmp_path, cli):
    src = tmp_path / "fc.onnx"
    _model(src)
    skipped = {}
    for run, extra in (("dynamic", []), ("pinned", ["-i", "x:8x8x64", "--static"])):
        code, stdout, err = cli("quantize", src, "-p", "int8", "--calib", "random", "-o", tmp_path / f"{run}.onnx",
                                "--json", *extra)
        assert code == 0, err
        skipped[run] = json.loads(stdout)["quantized"]["skipped"]
    assert list(skipped["dynamic"]) == ["head"] and "GEMV" in skipped["dynamic"]["head"]
    assert skipped["pinned"] == {}


def test_trt_rules_false_quantizes_every_layer(tmp_path):
    model = onnx.shape_inference.infer_shapes(_model(tmp_path / "fc.onnx"))  # rows come from inferred shapes
    amax = {"x": 1.0, "r": 1.0, "p": 1.0}
    assert list(plan_qdq(model, amax).skipped) == ["head"]
    plan = plan_qdq(model, amax, trt_rules=False)
    assert plan.skipped == {} and sorted(plan.nodes) == ["fc1", "fc2", "head"]
