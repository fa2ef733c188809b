"""TensorRT 10.13+ builds INT8 strongly typed: the bundle carries the QDQ model on an FP16 base for it."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from edgesqueeze.ortutil import make_session

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


def _build(cli, target, out):
    code, stdout, err = cli("-q", "build", DIGITS / "digits_cnn.onnx", "--target", target, "--precision", "int8",
                            "--calib", DIGITS / "calib.npz", "-o", out, "--json")
    assert code == 0, err
    return json.loads((out / "manifest.json").read_text())


def test_thor_bundle_builds_from_the_fp16_base_qdq_model(cli, tmp_path):
    manifest = _build(cli, "thor", tmp_path / "thor")
    rel = manifest["models"]["int8_qdq_fp16"]
    body = [ln for ln in (tmp_path / "thor" / "build_engine.sh").read_text().splitlines() if not ln.startswith("#")]
    script = "\n".join(body)
    assert "model.int8_qdq_fp16" in script and "PREC_FLAGS=(--stronglyTyped)" in body and "--int8" not in script
    model = onnx.load(str(tmp_path / "thor" / rel))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    inits = {t.name: t for t in model.graph.initializer}
    scales = [inits[n.input[1]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
              and n.input[1] in inits]
    assert scales and all(t.data_type == TensorProto.FLOAT16 for t in scales)
    # runs on onnxruntime and classifies like the FP32-base QDQ model
    a = make_session(str(tmp_path / "thor" / manifest["models"]["int8_qdq"]))
    b = make_session(str(tmp_path / "thor" / rel))
    val = np.load(DIGITS / "val.npz")
    same = sum(int(a.run(None, {"input": x[None]})[0].argmax() == b.run(None, {"input": x[None]})[0].argmax())
               for x in val["input"][:100])
    assert same >= 98


@pytest.mark.parametrize("target", ["orin-nano", "xavier-nx"])
def test_weakly_typed_targets_keep_one_qdq_model(cli, tmp_path, target):
    manifest = _build(cli, target, tmp_path / target)
    assert "int8_qdq_fp16" not in manifest["models"]
