"""`build` takes every INT8 option of `quantize` (--keep, --method, --percentile, --sensitivity, --auto-keep) through
the one quantization API, and its pipeline is a list of named stages over typed options."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import onnx
import pytest

from edgesqueeze.bundle import read_manifest

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
MODEL, CALIB, VAL = DIGITS / "digits_cnn.onnx", DIGITS / "calib.npz", DIGITS / "val.npz"
INT8 = ("-t", "orin-nano", "-p", "int8", "--calib", CALIB, "--calib-limit", "32", "--local-engine", "off")


def _quantized_inputs(bundle: Path) -> dict:
    """``{node name: True when its activation input comes from a DequantizeLinear}`` for weighted nodes."""
    m = onnx.load(str(bundle / read_manifest(bundle)["models"]["int8_qdq"]))
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    return {n.name: producer.get(n.input[0]) == "DequantizeLinear" for n in m.graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul")}


def test_keep_leaves_that_node_unquantized(cli, tmp_path):
    code, _, err = cli("build", MODEL, *INT8, "-o", tmp_path / "all")
    assert code == 0, err
    before = _quantized_inputs(tmp_path / "all")
    assert before == {"node_Conv_66": True, "node_Conv_68": True, "node_linear": False,  # batch-1 GEMVs:
                      "node_linear_1": False}                                       # TensorRT keeps them FP16
    code, out, err = cli("build", MODEL, *INT8, "--keep", "node_Conv_68", "-o", tmp_path / "kept", "--json")
    assert code == 0, err
    after = _quantized_inputs(tmp_path / "kept")
    assert after.pop("node_Conv_68") is False  # kept in higher precision: no Q/DQ on its input
    assert after == {k: v for k, v in before.items() if k != "node_Conv_68"}  # every other layer as before
    s = json.loads(out)
    assert s["stages"]["quantize"]["keep"] == ["node_Conv_68"]
    assert read_manifest(tmp_path / "kept")["options"]["calibration"]["keep"] == ["node_Conv_68"]
    assert "keep" not in read_manifest(tmp_path / "all")["options"]["calibration"]  # unchanged without --keep


def test_method_alias_and_percentile_reach_the_calibrator(cli, tmp_path):
    scales = {}
    for p in ("90", "99.99"):
        code, out, err = cli("build", MODEL, *INT8, "--method", "percentile", "--percentile", p,
                             "-o", tmp_path / p, "--json")
        assert code == 0, err
        q = json.loads(out)["stages"]["quantize"]
        assert q["method"] == "percentile" and q["percentile"] == float(p)
        scales[p] = (tmp_path / p / "calib" / "calibration.cache").read_text()
    assert scales["90"] != scales["99.99"]  # the percentile changed the ranges
    code, out, err = cli("build", MODEL, *INT8, "--calib-method", "minmax", "-o", tmp_path / "old", "--json")
    assert code == 0, err
    assert json.loads(out)["stages"]["quantize"]["method"] == "minmax"  # the old option name works
    code, _, err = cli("build", MODEL, *INT8, "--method", "percentile", "--percentile", "0", "-o", tmp_path / "bad")
    assert code == 3 and "--percentile" in err and not (tmp_path / "bad").exists()


def test_sensitivity_and_auto_keep(tmp_path):
    from edgesqueeze.pipeline import build

    s = build(MODEL, "orin-nano", tmp_path / "b", precision="int8", calib=str(CALIB), calib_limit=32,
              val=str(VAL), val_limit=32, sensitivity=True, auto_keep_drop=100.0, progress=False,
              local_engine="off")
    q = s["stages"]["quantize"]
    assert {r["node"] for r in q["sensitivity"]} >= {"node_Conv_68", "node_Conv_66"}
    assert q["auto_keep"]["met"] and q["auto_keep"]["keep"] == [] and q["auto_keep"]["budget"] == 100.0


def test_options_are_validated_once_and_typed(tmp_path):
    from edgesqueeze.devices import DeviceProfile
    from edgesqueeze.errors import InputError
    from edgesqueeze.pipeline import StageRecord, make_options
    from edgesqueeze.precision import Precision
    from edgesqueeze.quant.methods import CalibMethod
    from edgesqueeze.quant.run import QuantOptions

    quant = QuantOptions("MinMax", keep=["a"])
    assert quant.method is CalibMethod.MINMAX and quant.keep == ("a",)
    o = make_options(MODEL, "tx2", tmp_path / "b", quant=quant)
    assert isinstance(o.profile, DeviceProfile) and o.precision is Precision.FP16 and o.deploy_kind == "fp16"
    assert json.dumps({"p": o.precision}) == '{"p": "fp16"}' and f"{o.precision}" == "fp16"
    with pytest.raises(InputError, match="unknown calibration method"):
        QuantOptions("kl")
    with pytest.raises(InputError, match="needs calibration data"):
        make_options(MODEL, "orin-nano", tmp_path / "c", precision="int8", quant=quant)
    with pytest.raises(Exception):  # frozen
        o.precision = Precision.INT8
    r = StageRecord("engine", "skipped", reason="no GPU", payload={"x": 1})
    assert r.to_dict() == {"status": "skipped", "reason": "no GPU", "x": 1, "seconds": 0.0}


def test_stage_list_and_short_functions():
    from edgesqueeze.pipeline import STAGES

    assert [s.__name__ for s in STAGES] == ["load", "optimize", "compress", "quantize", "compat", "validate",
                                            "engine", "bundle"]
    files = list((REPO / "edgesqueeze" / "pipeline").glob("*.py")) + [REPO / "edgesqueeze" / "quant" / "run.py"]
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 80, f"{path.name}:{node.name}"
            if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name):
                assert node.type.id != "ImportError" or path.name == "support.py", path.name  # find_spec only
