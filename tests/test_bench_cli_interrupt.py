"""`edgesqueeze bench --device`: Ctrl-C during the remote run writes the partial results, labelled, exit 130."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "digits_cnn.onnx"


@pytest.fixture
def partial_result():
    from edgesqueeze.bench.api import bench

    r = bench(str(DIGITS), backend="ort", iterations=5, warmup=1, power="none")
    r["runs"][0]["latency_ms"]["samples"] = r["runs"][0]["latency_ms"]["samples"][:3]  # stopped after 3
    return r


def test_ctrl_c_writes_partial_results(tmp_path, cli, monkeypatch, partial_result):
    import edgesqueeze.deploy as deploy
    from edgesqueeze.deploy.remote import BenchInterrupted

    seen = {}

    def interrupted(path, device, **opts):
        seen.update(opts)
        raise BenchInterrupted(partial_result, "the timed run")

    monkeypatch.setattr(deploy, "remote_bench", interrupted)
    out, rep = tmp_path / "r.json", tmp_path / "rep"
    code, stdout, err = cli("bench", str(tmp_path), "--device", "nvidia@jetson", "-o", str(out), "--report", str(rep),
                            "--power", "none")
    assert code == 130, err
    assert seen["out_dir"] == str(rep)  # remote_bench gets the out dir (it writes partial results there too)
    r = json.loads(out.read_text())
    assert r["partial"] is True and any("interrupted" in w for w in r["warnings"])
    assert len(r["runs"][0]["latency_ms"]["samples"]) == 3
    assert (rep / "report.md").exists() and "partial" in err


def test_ctrl_c_before_any_result(tmp_path, cli, monkeypatch):
    import edgesqueeze.deploy as deploy
    from edgesqueeze.deploy.remote import BenchInterrupted

    def interrupted(path, device, **opts):
        raise BenchInterrupted(None, "deploy")

    monkeypatch.setattr(deploy, "remote_bench", interrupted)
    code, stdout, err = cli("bench", str(tmp_path), "--device", "nvidia@jetson", "-o", str(tmp_path / "r.json"))
    assert code == 130 and "before the device returned any result" in err and not (tmp_path / "r.json").exists()
