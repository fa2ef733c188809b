"""Calibration runs models that a newer onnx labelled with an IR version onnxruntime does not know yet."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.data import open_data
from edgesqueeze.quant import calibrate


def test_calibrates_an_ir14_model(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 14  # what onnx 1.23's helper writes; onnxruntime 1.31 knows 13 at most
    data = tmp_path / "d.npz"
    np.savez(data, x=np.linspace(-2, 2, 32, dtype=np.float32).reshape(8, 4))
    amax = calibrate(model, open_data(str(data), model), method="minmax", cache_dir=str(tmp_path / "cache"))
    assert amax["x"] == np.float32(2.0) and amax["y"] == np.float32(2.0)


def test_fp16_conversion_of_a_qdq_model_runs(tmp_path):
    """FP16 conversion keeps Q/DQ nodes (and their FP32 scales) in FP32, so the converted QDQ model loads and agrees."""
    from pathlib import Path

    from edgesqueeze.model import load_model
    from edgesqueeze.ortutil import make_session
    from edgesqueeze.quant import convert_fp16, quantize_qdq

    digits = Path(__file__).resolve().parents[1] / "examples" / "digits"
    fp32 = load_model(digits / "digits_cnn.onnx")
    amax = calibrate(fp32, open_data(str(digits / "calib.npz"), fp32, limit=16), method="minmax",
                     cache_dir=str(tmp_path))
    qdq = quantize_qdq(fp32, amax)
    half = convert_fp16(qdq)
    val = np.load(digits / "val.npz")
    a, b = make_session(qdq), make_session(half)
    for i in range(20):
        x = val["input"][i:i + 1]
        ra, rb = a.run(None, {"input": x})[0], b.run(None, {"input": x})[0]
        assert rb.dtype == np.float32 and ra.argmax() == rb.argmax()
        np.testing.assert_allclose(rb, ra, atol=2e-2 * float(np.abs(ra).max()))
