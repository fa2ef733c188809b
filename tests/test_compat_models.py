"""edgesqueeze.compat on real models: the digits example for JetPack 4.6, a tx2 build, the Model-Zoo light models,
and the ``convert`` verb."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgesqueeze.compat import downgrade_opset, make_target_compatible
from edgesqueeze.model import load_model, random_feeds
from edgesqueeze.ortutil import make_session, run_model

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"


def _opset(m):
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


def test_digits_to_jetpack46_equal_on_onnxruntime():
    before = DIGITS.read_bytes()
    m = load_model(DIGITS)
    assert (_opset(m), m.ir_version) == (18, 10)  # what torch's dynamo exporter writes
    out, rep = make_target_compatible(m, "tx2")
    assert (_opset(out), out.ir_version) == (13, 8) and rep["changed"]
    assert rep["opset"]["rewrites"]  # Relu 14 -> 13, Reshape allowzero
    onnx.checker.check_model(out, full_check=True)
    val = np.load(ROOT / "examples" / "digits" / "val.npz")["input"][:64]
    sess_a, sess_b = make_session(m), make_session(out)
    for x in val[:16]:
        feeds = {"input": x[None]}
        np.testing.assert_allclose(run_model(out, feeds, session=sess_b)["logits"],
                                   run_model(m, feeds, session=sess_a)["logits"], rtol=1e-5, atol=1e-6)
    assert DIGITS.read_bytes() == before


def test_tx2_build_bundle_models_load_on_jetpack46(tmp_path):
    from edgesqueeze.pipeline import build

    out_dir = tmp_path / "b"
    summary = build(DIGITS, "tx2", out_dir, progress=False)
    assert summary["stages"]["compat"]["status"] == "done"
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["onnx_compat"]["max_opset"] == 13 and manifest["onnx_compat"]["max_ir"] == 8
    models = sorted((out_dir / "models").glob("*.onnx"))
    assert any("trt_plugin" in p.name for p in models) and any("trt_inlined" in p.name for p in models)
    ref_model = load_model(DIGITS)
    feeds = random_feeds(ref_model, seed=1)[0]
    ref = run_model(ref_model, feeds)["logits"]
    for p in models:
        m = onnx.load(p)
        assert _opset(m) <= 13 and m.ir_version <= 8, p.name
        if "trt_plugin" in p.name:  # custom node for the TensorRT plugin: not for onnxruntime
            assert any(n.domain == "edgesqueeze" for n in m.graph.node) and not m.functions
            continue
        got = run_model(m, feeds)["logits"]
        np.testing.assert_allclose(got, ref, rtol=2e-2 if "fp16" in p.name else 1e-4, atol=1e-3, err_msg=p.name)


def _layernorm_model(tmp_path):
    """One LayerNormalization node (opset 17: no older opset has it) saved as ln.onnx."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], name="ln")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
                          [numpy_helper.from_array(np.ones(8, np.float32), "s"),
                           numpy_helper.from_array(np.zeros(8, np.float32), "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "ln.onnx"
    onnx.save(m, path)
    return path


def test_build_fails_clearly_when_the_target_cannot_hold_the_model(tmp_path):
    from edgesqueeze.errors import UnsupportedError
    from edgesqueeze.pipeline import build

    path = _layernorm_model(tmp_path)
    with pytest.raises(UnsupportedError) as err:
        build(path, "tx2", tmp_path / "out", progress=False, optimize=False)
    assert "tx2" in str(err.value) and "LayerNormalization node 'ln'" in str(err.value) and err.value.exit_code == 4
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "shufflenet"])
def test_light_models_round_trip(light_models_dir, name):
    from edgesqueeze.model import convert_opset
    from random_weights import materialize_random_weights

    m9 = materialize_random_weights(load_model(light_models_dir / f"light_{name}.onnx"))
    m13 = convert_opset(m9, 13)
    back, rep = downgrade_opset(m13, 9)
    assert _opset(back) == 9 and rep["verification"]["checked"]
    feeds = random_feeds(m9, seed=2)[0]
    ref, got = run_model(m9, feeds), run_model(back, feeds)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)


def test_convert_cli(tmp_path):
    from click.testing import CliRunner

    from edgesqueeze.cli.convert import command

    before = DIGITS.read_bytes()
    out = tmp_path / "d13.onnx"
    r = CliRunner().invoke(command, [str(DIGITS), "-o", str(out), "--target", "tx2"])
    assert r.exit_code == 0, r.output
    assert "opset 18 -> 13, IR 10 -> 8 for tx2" in r.output and "verified on onnxruntime" in r.output
    m = onnx.load(out)
    assert (_opset(m), m.ir_version) == (13, 8)
    r = CliRunner().invoke(command, [str(DIGITS), "-o", str(tmp_path / "d11.onnx"), "--opset", "11", "--json"])
    rep = json.loads(r.output)
    assert r.exit_code == 0 and rep["opset"] == {**rep["opset"], "from": 18, "to": 11}
    assert rep["verification"]["max_rel"] <= 1e-5
    # same input and options: byte-identical output
    r = CliRunner().invoke(command, [str(DIGITS), "-o", str(tmp_path / "again.onnx"), "--target", "tx2"])
    assert (tmp_path / "again.onnx").read_bytes() == out.read_bytes()
    r = CliRunner().invoke(command, [str(DIGITS), "-o", str(DIGITS), "--opset", "13"])
    assert r.exit_code != 0 and DIGITS.read_bytes() == before  # never overwrites its input
    r = CliRunner().invoke(command, [str(DIGITS), "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code != 0 and "--opset" in str(r.exception or r.output)


def test_convert_exit_codes(cli, tmp_path):
    path = _layernorm_model(tmp_path)
    code, out, err = cli("convert", str(path), "-o", str(tmp_path / "ln13.onnx"), "--target", "tx2")
    assert code == 4 and "LayerNormalization node 'ln'" in err and "first appears in opset 17" in err
    assert not (tmp_path / "ln13.onnx").exists()
    code, out, err = cli("convert", str(path), "-o", str(tmp_path / "x.onnx"))
    assert code == 3 and "--opset" in err
    code, out, err = cli("convert", str(DIGITS), "-o", str(tmp_path / "d.onnx"), "--target", "tx2", "--json")
    assert code == 0 and json.loads(out)["ir"] == {"from": 10, "to": 8}


@pytest.mark.torch
def test_torch_dynamo_export_lowered(tmp_path):
    """A small net through torch's dynamo exporter (opset 18): HardSwish, Resize, chunk (Split num_outputs), Pad,
    mean/sum (Reduce with axes inputs), GELU, Softmax, Unsqueeze/Squeeze, lowered to 13 and to 11."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.hs = nn.Conv2d(3, 8, 3, 2, 1), nn.Hardswish()
            self.up, self.fc = nn.Upsample(scale_factor=2, mode="nearest"), nn.Linear(8, 10)

        def forward(self, x):
            y = self.up(self.hs(self.c1(x)))
            a, b = torch.chunk(y, 2, dim=1)
            y = nn.functional.pad(torch.cat([b, a], 1), (1, 1, 0, 0)).mean(dim=(2, 3))
            y = nn.functional.gelu(self.fc(y))
            return torch.softmax(y, dim=-1), y.unsqueeze(1).squeeze(1).sum(-1, keepdim=True)

    torch.manual_seed(0)
    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=True, opset_version=18)
    m = load_model(path)
    assert _opset(m) == 18
    for dst in (13, 11):
        out, rep = downgrade_opset(m, dst)
        assert _opset(out) == dst and rep["verification"]["max_rel"] <= 1e-5
        assert "HardSwish" not in {n.op_type for n in out.graph.node}
        assert any(k.startswith("Split: num_outputs") for k in rep["rewrites"])
