"""The build's accuracy guard names the stage that lost accuracy; --strict makes a loss an error (exit 7)."""
from __future__ import annotations

from pathlib import Path

from edgesqueeze.cli import main
from edgesqueeze.pipeline.support import accuracy_warnings

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
MODEL, CALIB, VAL = DIGITS / "digits_cnn.onnx", DIGITS / "calib.npz", DIGITS / "val.npz"


def _acc(ref, fp32, deploy, kind):
    return {"reference_top1": ref, "models": {"fp32": {"top1": fp32, "outputs": {}}, kind: {"top1": deploy, "outputs": {}}}}


def test_loss_in_compression_is_not_blamed_on_calibration():
    msgs = accuracy_warnings(_acc(0.985, 0.9525, 0.9525, "fp16"), "fp16", 0.01, fp32_cause="2:4 sparsity (compress)")
    assert len(msgs) == 1 and "2:4 sparsity (compress) lost it" in msgs[0] and "calib" not in msgs[0]


def test_loss_in_int8_gets_calibration_advice_and_fp16_its_own():
    (m,) = accuracy_warnings(_acc(0.985, 0.985, 0.90, "int8_qdq"), "int8_qdq", 0.01)
    assert m.startswith("quantizing to int8_qdq loses 8.50 top-1 points") and "--method" in m
    (m,) = accuracy_warnings(_acc(0.985, 0.985, 0.95, "fp16"), "fp16", 0.01)
    assert "--keep" in m and "calib" not in m
    assert accuracy_warnings(_acc(0.985, 0.98, 0.978, "int8_qdq"), "int8_qdq", 0.01) == []


def test_sparsity_build_warns_about_the_compress_stage(tmp_path, capsys):
    code = main(["build", str(MODEL), "-t", "orin-nano", "--sparsity", "2:4", "--val", str(VAL), "-o",
                 str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 0
    assert "2:4 sparsity (compress) lost it" in err and "calib-method" not in err


def test_strict_is_exit_7_and_writes_no_bundle(tmp_path, capsys):
    out = tmp_path / "b"
    code = main(["build", str(MODEL), "-t", "orin-nano", "--sparsity", "2:4", "--val", str(VAL), "--strict",
                 "-o", str(out)])
    assert code == 7 and not out.exists()
    assert "--strict: no bundle written" in capsys.readouterr().err
