"""`edgesqueeze compare`: error statistics and top-1 agreement between models, bundles and backends."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.compare import compare, compare_runs

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
MODEL, CALIB, VAL = DIGITS / "digits_cnn.onnx", DIGITS / "calib.npz", DIGITS / "val.npz"


def _linear(path: Path, w: np.ndarray, out_name: str = "y") -> Path:
    """y = x @ w, x [1, 4] -> [1, 3]."""
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], [out_name])], "lin",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [1, 3])],
                          [numpy_helper.from_array(w.astype(np.float32), "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    a = _linear(tmp_path / "a.onnx", w)
    b = _linear(tmp_path / "b.onnx", w + 0.01)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    labels = (x @ w).argmax(-1).astype(np.int64)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, label=labels)
    return a, b, w, x, labels, data


def test_statistics_match_a_numpy_reference(pair):
    a, b, w, x, labels, data = pair
    r = compare(a, b, str(data))
    ya, yb = x @ w, x @ (w + 0.01)
    diff = np.abs(yb - ya)
    s = r["outputs"]["y"]
    assert r["samples"] == 50
    assert s["max_abs"] == pytest.approx(diff.max(), rel=1e-5)
    assert s["mean_abs"] == pytest.approx(diff.mean(), rel=1e-5)
    assert s["max_rel"] == pytest.approx(diff.max() / np.abs(ya).max(), rel=1e-5)
    assert s["mean_rel"] == pytest.approx(diff.mean() / np.abs(ya).mean(), rel=1e-5)
    assert s["top1_agreement"] == pytest.approx(np.mean(ya.argmax(-1) == yb.argmax(-1)))
    assert r["accuracy"]["a"] == 1.0 and r["accuracy"]["n"] == 50
    assert r["accuracy"]["b"] == pytest.approx(np.mean(yb.argmax(-1) == labels))


def test_renamed_outputs_pair_by_position(pair, tmp_path):
    a, _, w, _, _, data = pair
    c = _linear(tmp_path / "c.onnx", w, out_name="scores")
    r = compare(a, c, str(data))
    assert list(r["outputs"]) == ["y | scores"] and r["outputs"]["y | scores"]["max_abs"] == 0.0


def test_top1_disagreement_is_counted():
    feeds = [{"x": np.zeros(1)}] * 4
    outs_a = iter([{"p": np.array([[0.9, 0.1]])}] * 4)
    outs_b = iter([{"p": np.array([[0.9, 0.1]])}, {"p": np.array([[0.1, 0.9]])}] * 2)
    r = compare_runs(lambda f: next(outs_a), lambda f: next(outs_b), feeds, labels=np.array([0, 0, 1, 1]))
    assert r["outputs"]["p"]["top1_agreement"] == 0.5
    assert r["accuracy"]["a"] == 0.5 and r["accuracy"]["b"] == 0.5


def test_model_against_its_int8_bundle(cli, tmp_path):
    from edgesqueeze.pipeline import build

    out = tmp_path / "bundle"
    build(MODEL, "orin-nano", out, precision="int8", calib=str(CALIB), progress=False)
    code, text, err = cli("compare", MODEL, out, "--data", VAL)
    assert code == 0, err
    assert "model.int8_qdq.onnx" in text and "logits" in text and "top-1 accuracy on 400 labelled samples" in text
    code, text, _ = cli("compare", MODEL, out, "--data", VAL, "--json")
    r = json.loads(text)
    s = r["outputs"]["logits"]
    assert 0 < s["max_abs"] and 0.9 < s["top1_agreement"] <= 1.0
    assert r["accuracy"]["a"] - r["accuracy"]["b"] < 0.03
    # the same model against itself: exactly zero, full agreement
    code, text, _ = cli("compare", f"ort:{MODEL}", out / "models" / "model.fp32.onnx", "-d", VAL, "--json",
                        "--limit", "20")
    r = json.loads(text)
    assert r["samples"] == 20 and r["outputs"]["logits"]["top1_agreement"] == 1.0
    assert r["outputs"]["logits"]["max_rel"] < 1e-5  # optimized vs input model: fp32 rounding only
    # thresholds turn the comparison into a check
    code, _, err = cli("compare", MODEL, out, "-d", VAL, "--max-rel", "1e-6")
    assert code == 7 and "logits" in err
    # the bundle archive works as a side too
    from edgesqueeze.bundle import write_archive

    arc = write_archive(out, tmp_path / "bundle.tar.gz")
    code, text, _ = cli("compare", out, arc, "-d", VAL, "--json", "--limit", "5")
    assert code == 0 and json.loads(text)["outputs"]["logits"]["max_abs"] == 0.0


def test_random_data_is_labelled(cli, pair):
    a, b, *_ = pair
    code, text, _ = cli("compare", a, b)
    assert code == 0 and "random" in text


def test_errors(cli, pair, tmp_path):
    a, *_ = pair
    code, _, err = cli("compare", a, tmp_path / "nope.onnx")
    assert code == 3 and "nope.onnx" in err
    other = tmp_path / "bundle-broken"
    other.mkdir()
    code, _, err = cli("compare", a, other)
    assert code == 3 and "manifest.json" in err
