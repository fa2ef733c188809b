"""The example digits CNN: INT8 with every calibrator within 1 point of FP32 top-1, FP16 within 0.2 points."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgesqueeze.data import open_data
from edgesqueeze.model import load_model
from edgesqueeze.quant import calibrate, convert_fp16, evaluate, quantize_qdq
from edgesqueeze.quant.sensitivity import auto_keep, layer_sensitivity

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
pytestmark = pytest.mark.skipif(not (DIGITS / "digits_cnn.onnx").exists(), reason="examples/digits not built")


@pytest.fixture(scope="module")
def digits():
    model = load_model(DIGITS / "digits_cnn.onnx")
    calib = open_data(str(DIGITS / "calib.npz"), model)
    val = open_data(str(DIGITS / "val.npz"), model)
    return model, calib, val, evaluate(model, val)["top1"]


@pytest.mark.parametrize("method", ["entropy", "minmax", "percentile", "mse"])
def test_int8_within_one_point_of_fp32(digits, method, tmp_path):
    model, calib, val, fp32 = digits
    amax = calibrate(model, calib, method=method, cache_dir=tmp_path)
    res = evaluate(quantize_qdq(model, amax), val, reference=model)
    assert res["n"] == 400 and fp32 > 90.0
    assert abs(fp32 - res["top1"]) <= 1.0, (method, fp32, res["top1"])
    assert res["output_error"]["logits"]["sqnr_db"] > 20.0
    details = {}
    assert calibrate(model, calib, method=method, cache_dir=tmp_path, details=details) == amax
    assert details["cached"] is True


def test_fp16_within_point_two(digits):
    model, _, val, fp32 = digits
    res = evaluate(convert_fp16(model), val, reference=model)
    assert abs(fp32 - res["top1"]) <= 0.2
    assert res["agreement"] >= 99.75 and res["output_error"]["logits"]["max_rel"] < 1e-2


def test_sensitivity_and_auto_keep(digits):
    model, calib, _, fp32 = digits
    val = open_data(str(DIGITS / "val.npz"), model, limit=200)
    amax = calibrate(model, calib, method="minmax")
    ranking = layer_sensitivity(model, amax, val)
    assert len(ranking) == 4 and all(r["sqnr_db"] is not None for r in ranking)  # the 2 batch-1 Gemms: GEMVs
    assert [r["sqnr_db"] for r in ranking] == sorted(r["sqnr_db"] for r in ranking)
    result = auto_keep(model, amax, val, 0.0, ranking=ranking)
    assert result["met"] and result["metric"] == "top1" and result["drop"] <= 0.0
    given = auto_keep(model, amax, val, 0.0, ranking=ranking, keep=[ranking[-1]["node"]])
    assert given["keep"][0] == ranking[-1]["node"]  # layers given with --keep stay kept


def test_evaluate_without_labels_and_with_a_mismatched_reference(digits):
    from onnx import helper

    from edgesqueeze.errors import InputError

    model, _, _, _ = digits
    res = evaluate(model, open_data("random", model, limit=3), reference=model)
    assert res["top1"] is None and res["random"] and res["agreement"] == 100.0
    assert res["output_error"]["logits"]["max_abs"] == 0.0
    other = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["input"], ["other"])], "g", [model.graph.input[0]],
        [helper.make_tensor_value_info("other", 1, [1, 1, 8, 8])]), opset_imports=model.opset_import, ir_version=8)
    with pytest.raises(InputError, match="no output 'logits'"):
        evaluate(model, open_data("random", model, limit=1), reference=other)
