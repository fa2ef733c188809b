"""The JetPack 4.6 software on the host: a tx2 bundle on onnxruntime 1.10 under Python 3.6 (its device runner too).

Needs a Python 3.6 with onnxruntime 1.10 and numpy, named by EDGESQUEEZE_ORT110_PYTHON (skipped otherwise):

    python3.6 -m venv /tmp/ort110 && /tmp/ort110/bin/pip install -U "pip<22" && \\
        /tmp/ort110/bin/pip install onnxruntime==1.10.0
    EDGESQUEEZE_ORT110_PYTHON=/tmp/ort110/bin/python python -m pytest -q tests/test_compat_jetpack46.py
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

PY = os.environ.get("EDGESQUEEZE_ORT110_PYTHON")
ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"

pytestmark = pytest.mark.skipif(not PY, reason="set EDGESQUEEZE_ORT110_PYTHON to a Python 3.6 with onnxruntime 1.10")

RUN = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])
try:
    s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
except Exception as e:
    print("LOAD FAILED: " + str(e).strip().splitlines()[-1]); sys.exit(3)
np.save(sys.argv[3], np.concatenate([s.run(None, {"input": xi[None]})[0] for xi in x]))
print(ort.__version__)
"""


def _run(model, x_path, out):
    return subprocess.run([PY, "-c", RUN, str(model), str(x_path), str(out)], capture_output=True, text=True,
                          timeout=120)


def test_tx2_bundle_runs_on_onnxruntime_110(tmp_path):
    from edgesqueeze.model import load_model
    from edgesqueeze.ortutil import make_session
    from edgesqueeze.pipeline import build

    x = np.load(ROOT / "examples" / "digits" / "val.npz")["input"][:32]
    np.save(tmp_path / "x.npy", x)
    r = _run(DIGITS, tmp_path / "x.npy", tmp_path / "y.npy")  # the user's problem, reproduced
    assert r.returncode == 3 and "Unsupported model IR version: 10, max supported IR version: 8" in r.stdout

    bundle = tmp_path / "bundle"
    build(DIGITS, "tx2", bundle, progress=False)
    sess = make_session(load_model(DIGITS))
    ref = np.concatenate([sess.run(None, {"input": xi[None]})[0] for xi in x])
    for p in sorted((bundle / "models").glob("*.onnx")):
        if "trt_plugin" in p.name:
            continue  # TensorRT with the plugin library only
        r = _run(p, tmp_path / "x.npy", tmp_path / "y.npy")
        assert r.returncode == 0 and r.stdout.strip() == "1.10.0", (p.name, r.stdout, r.stderr)
        got = np.load(tmp_path / "y.npy")
        tol = 2e-2 if "fp16" in p.name else 1e-4
        assert np.abs(got - ref).max() <= tol * np.abs(ref).max(), p.name
        assert (got.argmax(1) == ref.argmax(1)).all()

    out = tmp_path / "results.json"
    r = subprocess.run([PY, str(bundle / "run_on_device.py"), "--bundle", str(bundle), "--out", str(out),
                        "--backend", "ort", "--iterations", "20"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["backend"]["version"] == "1.10.0" and len(res["runs"][0]["latency_ms"]["samples"]) == 20
