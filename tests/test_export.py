"""export: torch -> ONNX, verified against torch on onnxruntime; loud failure when they disagree."""
import json
from pathlib import Path

import numpy as np
import pytest

from edgesqueeze.errors import VerificationError

pytestmark = pytest.mark.torch
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_export_cli_digits_with_weights(cli, tmp_path):
    out = tmp_path / "digits.onnx"
    code, stdout, err = cli("export", f"{EXAMPLES}/digits_model.py:make_model", "--weights",
                            EXAMPLES / "digits" / "digits_cnn.pt", "--input", "1x1x8x8", "-o", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert max(report["verification"]["max_abs_error"]) < 1e-4
    # the trained weights are in: the exported model classifies the validation split like the committed one
    from edgesqueeze.ortutil import make_session

    val = np.load(EXAMPLES / "digits" / "val.npz")
    sess = make_session(str(out))
    preds = [int(np.argmax(sess.run(None, {"input": val["input"][i:i + 1]})[0])) for i in range(100)]
    assert np.mean(np.array(preds) == val["label"][:100]) > 0.95


def test_export_detects_disagreement(tmp_path):
    import torch

    from edgesqueeze.export import export_torch

    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)  # random in torch and in onnxruntime: they cannot agree

    out = tmp_path / "noisy.onnx"
    with pytest.raises(VerificationError, match="disagrees with torch"):
        export_torch(Noisy(), torch.zeros(1, 4), out)
    assert not out.exists()


def test_export_bad_factory(cli, tmp_path):
    code, _, err = cli("export", f"{tmp_path}/missing.py:make", "--input", "1x4", "-o", tmp_path / "x.onnx")
    assert code == 3 and "no such file" in err
    code, _, err = cli("export", f"{EXAMPLES}/digits_model.py:nothing_here", "--input", "1x4", "-o", tmp_path / "x.onnx")
    assert code == 3 and "nothing_here" in err
