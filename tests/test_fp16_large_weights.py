"""FP16 conversion of weights large enough to be read in place (``strip_weights``), not copied: the converted ones
equal the float16 casts, the ones kept FP32 are unchanged, and the input model is not touched."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.model import INLINE_WEIGHT_BYTES, model_bytes
from edgesqueeze.quant import convert_fp16


def test_large_weights_converted_or_kept_exactly():
    n = 160  # 100 KB per float32 weight: above INLINE_WEIGHT_BYTES, so each is stubbed
    assert n * n * 4 > INLINE_WEIGHT_BYTES
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((n, n), dtype=np.float32) for _ in range(3)]
    ws[0][0, 0] = 1e6  # beyond the fp16 range: clipped and reported
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["y0"], name="m0"),
             helper.make_node("MatMul", ["y0", "w1"], ["y1"], name="kept"),
             helper.make_node("Add", ["y1", "w2"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(ws)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = model_bytes(model)
    report: dict = {}
    out = convert_fp16(model, ["kept"], report=report)
    assert model_bytes(model) == before
    got = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert got["w0"].dtype == np.float16 and got["w2"].dtype == np.float16 and got["w1"].dtype == np.float32
    np.testing.assert_array_equal(got["w0"], np.clip(ws[0], -65504, 65504).astype(np.float16))
    np.testing.assert_array_equal(got["w2"], ws[2].astype(np.float16))
    assert got["w1"].tobytes() == ws[1].tobytes()
    assert report["clipped_weights"] == ["w0"] and report["fp32_nodes"] == 1
