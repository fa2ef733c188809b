"""``edgesqueeze quantize`` and ``edgesqueeze eval`` end to end on the digits example."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesqueeze.fileio import sha256_file
from edgesqueeze.quant import read_calibration_cache

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
MODEL, CALIB, VAL = (str(DIGITS / f) for f in ("digits_cnn.onnx", "calib.npz", "val.npz"))
pytestmark = pytest.mark.skipif(not (DIGITS / "digits_cnn.onnx").exists(), reason="examples/digits not built")


def test_quantize_int8_writes_qdq_model_and_trt_cache(cli, tmp_path):
    before = sha256_file(MODEL)
    out = tmp_path / "q.onnx"
    code, stdout, err = cli("quantize", MODEL, "-t", "xavier-nx", "--calib", CALIB, "--val", VAL, "-o", out,
                            "--cache-dir", tmp_path / "cc", "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["precision"] == "int8" and "INT8" in s["precision_reason"]
    assert s["trt_version"] == "8.5.2" and len(s["quantized"]["quantized_nodes"]) == 4
    assert all("GEMV" in s["quantized"]["skipped"][n] for n in ("node_linear", "node_linear_1"))
    assert abs(s["accuracy"]["top1_drop"]["int8"]) <= 1.0
    header, amax = read_calibration_cache(tmp_path / "q.cache")
    assert header == "TRT-8502-EntropyCalibration2" and "input" in amax and len(amax) == 12  # the GEMVs' inputs: no range
    assert sha256_file(MODEL) == before
    first = out.read_bytes()
    code, _, _ = cli("quantize", MODEL, "-t", "xavier-nx", "--calib", CALIB, "-o", out, "--no-cache")
    assert code == 0 and out.read_bytes() == first  # deterministic, cached or not
    # ranges from an existing cache (trtexec/Polygraphy) instead of calibrating
    code, stdout, err = cli("quantize", MODEL, "-p", "int8", "--from-cache", tmp_path / "q.cache",
                            "-o", tmp_path / "r.onnx", "--json")
    assert code == 0, err
    assert json.loads(stdout)["calibration"]["method"].startswith("cache (TRT-8502")


def test_quantize_text_output_sensitivity_keep_and_auto_keep(cli, tmp_path):
    code, out, err = cli("quantize", MODEL, "-p", "int8", "--calib", CALIB, "--val", VAL, "--limit", "100",
                         "--method", "minmax", "--sensitivity", "--auto-keep", "0.5", "--keep", "node_linear_1",
                         "-o", tmp_path / "q.onnx", "--no-cache")
    assert code == 0, err
    assert "per-layer sensitivity" in out and "auto-keep:" in out and "node_linear_1: kept" in out
    assert "wrote calibration cache" in out and "top-1 %" in out
    _, amax = read_calibration_cache(tmp_path / "q.cache")
    assert "relu_3" not in amax  # read only by the kept layer: no range, so TensorRT keeps it out of INT8 too


def test_quantize_fp16_by_target_and_eval(cli, tmp_path):
    out = tmp_path / "h.onnx"
    code, stdout, err = cli("quantize", MODEL, "-t", "nano", "--val", VAL, "-o", out, "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["precision"] == "fp16" and abs(s["accuracy"]["top1_drop"]["fp16"]) <= 0.2
    code, stdout, err = cli("eval", out, "--data", VAL, "--reference", MODEL, "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["n"] == 400 and r["top1"] > 90 and r["agreement"] >= 99.5 and not r["random"]
    code, text, _ = cli("eval", MODEL, "--data", "random", "--limit", "4")
    assert code == 0 and "RANDOM" in text and "top-1: -" in text


@pytest.mark.parametrize("args, code, words", [
    (["-p", "int8"], 3, "needs calibration data"),
    (["-t", "tx2", "-p", "int8", "--calib", CALIB], 4, "sm_62"),
    (["-p", "int8", "--calib", "missing.npz"], 3, "no such file"),
    (["-p", "int8", "--calib", CALIB, "--method", "percentile", "--percentile", "0"], 3, "percentile"),
    (["-p", "fp16", "--sensitivity"], 3, "apply to INT8"),
    (["-p", "int8", "--from-cache", VAL], 3, "not a TensorRT calibration cache"),
])
def test_quantize_errors_are_one_line_with_exit_codes(cli, tmp_path, args, code, words):
    got, out, err = cli("quantize", MODEL, "-o", tmp_path / "x.onnx", "--no-cache", *args)
    assert got == code and words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_quantize_refuses_to_overwrite_its_input(cli, tmp_path):
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(MODEL, model)
    before = sha256_file(model)
    code, _, err = cli("quantize", model, "-p", "fp16", "-o", model)
    assert code == 3 and "overwrite" in err and sha256_file(model) == before


def test_auto_without_calibration_data_falls_back_with_a_warning(cli, tmp_path):
    code, out, err = cli("quantize", MODEL, "-t", "orin-nano", "-o", tmp_path / "a.onnx", "--json")
    assert code == 0 and "no calibration data" in err
    assert json.loads(out)["precision"] == "fp16" and "needs --calib" in json.loads(out)["precision_reason"]
