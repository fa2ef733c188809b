"""FP16 conversion: fp16 weights and compute, fp32 I/O, kept nodes, fp32-only slots, overflow clipping."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.model import infer_shapes, input_specs, model_bytes
from edgesqueeze.ortutil import run_model
from edgesqueeze.quant import convert_fp16


def small_net(big_weight=False):
    """x[1,2,4,4] -> Conv -> Relu -> Resize(x2, scales) -> GlobalAveragePool -> Flatten -> MatMul -> Softmax,
    plus a second output taken after the Conv."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (3, 2, 1, 1)).astype(np.float32)
    if big_weight:
        w[0, 0, 0, 0] = 1e6
    m = rng.normal(0, 0.5, (3, 4)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(m, "m"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Resize", ["r", "", "scales"], ["up"], name="resize", mode="nearest"),
             helper.make_node("GlobalAveragePool", ["up"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "m"], ["logits"], name="mm"),
             helper.make_node("Softmax", ["logits"], ["prob"], name="softmax")]
    g = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 4]),
                           helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 4, 4])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return infer_shapes(model)


def _x(seed=0):
    return {"x": np.random.default_rng(seed).normal(size=(1, 2, 4, 4)).astype(np.float32)}


def test_fp16_runs_on_onnxruntime_with_fp32_io():
    model = small_net()
    report = {}
    half = convert_fp16(model, report=report)
    assert input_specs(half)["x"]["dtype"] == np.float32
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in half.graph.output)
    inits = {t.name: t.data_type for t in half.graph.initializer}
    assert inits["w"] == TensorProto.FLOAT16 and inits["m"] == TensorProto.FLOAT16
    assert inits["scales"] == TensorProto.FLOAT  # Resize scales are float32 by the ONNX spec
    for seed in range(3):
        ref, got = run_model(model, _x(seed)), run_model(half, _x(seed))
        for name in ("prob", "c"):
            assert got[name].dtype == np.float32
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-2, atol=1e-3)
            assert not np.array_equal(got[name], ref[name])  # really computed in fp16
    assert report["fp32_nodes"] == 0 and report["casts"] >= 3


def test_keep_fp32_by_op_type_and_name():
    model = small_net()
    half = convert_fp16(model, keep_fp32=["Softmax", "conv"])
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    softmax = next(n for n in half.graph.node if n.op_type == "Softmax")
    assert softmax.input[0].endswith("_to_fp32")
    conv = next(n for n in half.graph.node if n.name == "conv")
    assert conv.input[0] == "x" and {t.name: t.data_type for t in half.graph.initializer}["w"] == TensorProto.FLOAT
    assert len(casts) >= 2
    np.testing.assert_allclose(run_model(half, _x())["prob"], run_model(model, _x())["prob"], rtol=1e-2, atol=1e-3)


def test_fp16_io_and_clipping_and_input_untouched():
    model = small_net(big_weight=True)
    before = model_bytes(model)
    report = {}
    half = convert_fp16(model, keep_io_types=False, report=report)
    assert input_specs(half)["x"]["dtype"] == np.float16
    assert report["clipped_weights"] == ["w"]
    out = run_model(half, {"x": _x()["x"].astype(np.float16)})
    assert out["prob"].dtype == np.float16 and np.isfinite(out["prob"]).all()
    assert model_bytes(model) == before
    assert model_bytes(convert_fp16(model, keep_io_types=False)) == model_bytes(half)  # deterministic


def test_layers_that_overflow_fp16_are_found_on_data(tmp_path):
    from edgesqueeze.quant.run import quantize_model

    big = helper.make_node("Mul", ["x", "k"], ["big"], name="scale_up")
    back = helper.make_node("Mul", ["big", "kinv"], ["y"], name="scale_down")
    g = helper.make_graph([big, back], "ovf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [numpy_helper.from_array(np.array(1e5, np.float32), "k"),
                           numpy_helper.from_array(np.array(1e-5, np.float32), "kinv")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "ovf.onnx")
    np.save(tmp_path / "x.npy", np.ones((3, 4), np.float32))
    warnings = []
    s = quantize_model(tmp_path / "ovf.onnx", tmp_path / "h.onnx", precision="fp16", calib=str(tmp_path / "x.npy"),
                       warn=warnings.append)
    assert s["fp16"]["overflow"] == ["scale_up", "scale_down"]
    assert "--keep scale_up,scale_down" in warnings[0]
    wrong = run_model(onnx.load(tmp_path / "h.onnx"), {"x": np.ones((1, 4), np.float32)})["y"]
    assert np.abs(wrong - 1.0).max() > 0.3 and s["fp16"]["clipped_weights"] == ["k"]  # 1e5 clipped to 65504
    kept = quantize_model(tmp_path / "ovf.onnx", tmp_path / "k.onnx", precision="fp16",
                          keep=["scale_up", "scale_down"], calib=str(tmp_path / "x.npy"), warn=warnings.append)
    assert len(warnings) == 1 and kept["fp16"]["fp32_nodes"] == 2
    out = run_model(onnx.load(tmp_path / "k.onnx"), {"x": np.ones((1, 4), np.float32)})["y"]
    np.testing.assert_allclose(out, 1.0, rtol=1e-2)


def test_range_stays_fp32_in_an_fp16_model():
    """ONNX Range has no float16: a dynamic-shape detector's grid (YOLOv8's anchors) keeps it fp32 with Casts."""
    import numpy as np
    from onnx import TensorProto, helper

    from edgesqueeze.ortutil import run_model
    from edgesqueeze.quant import convert_fp16

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m"])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["sf"], ["lim"], keepdims=0),
             helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.5])),
             helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.FLOAT, [], [1.0])),
             helper.make_node("Range", ["zero", "lim", "one"], ["r"]), helper.make_node("Mul", ["r", "one"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    out = convert_fp16(m)
    rng = next(n for n in out.graph.node if n.op_type == "Range")
    assert rng.op_type == "Range"
    got = run_model(out, {"x": np.zeros(5, np.float32)})["y"]
    np.testing.assert_allclose(got, np.arange(0.5, 5.0, 1.0))


def test_batchnorm_with_statistics_beyond_fp16_stays_fp32():
    """A BatchNorm variance of 1e8 (ppocr_det's first BatchNorm, stored as a Constant node by paddle2onnx)
    clipped to 65504 wrecks the layer (-1.9 dB output SQNR): that BatchNorm stays fp32, nothing is clipped."""
    c = 4
    var = np.full(c, 1e8, np.float32)
    nodes = [helper.make_node("Constant", [], ["var"], value=numpy_helper.from_array(var, "var_value")),
             helper.make_node("BatchNormalization", ["x", "s", "b", "mean", "var"], ["y"], name="bn"),
             helper.make_node("Relu", ["y"], ["out"], name="relu")]
    inits = [numpy_helper.from_array(np.full(c, 5e3, np.float32), "s"),
             numpy_helper.from_array(np.zeros(c, np.float32), "b"),
             numpy_helper.from_array(np.zeros(c, np.float32), "mean")]
    g = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 4, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, 4, 4])], inits)
    model = infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)], ir_version=8))
    x = np.random.default_rng(0).normal(0, 1e3, (1, c, 4, 4)).astype(np.float32)
    report = {}
    half = convert_fp16(model, report=report)
    assert report["clipped_weights"] == [] and report["fp32_nodes"] == 2  # the BatchNorm and its Constant
    ref = run_model(model, {"x": x})["out"]
    np.testing.assert_allclose(run_model(half, {"x": x})["out"], ref, rtol=2e-2, atol=1e-2 * np.abs(ref).max())
