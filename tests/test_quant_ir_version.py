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
