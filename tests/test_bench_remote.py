"""`edgesqueeze bench --device`: the same verb on a real sshd "device" on 127.0.0.1 (edgesqueeze.deploy does the SSH)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd import SshServer, make_bundle, sshd_skip_reason  # noqa: E402

from edgesqueeze.bench import load_result  # noqa: E402

pytestmark = pytest.mark.skipif(sshd_skip_reason() is not None, reason=f"ssh: {sshd_skip_reason()}")


def _bench_over_ssh(tmp_path, cli, *args):
    """``bench`` of a small bundle on a fresh loopback sshd: ``(exit code, stdout, stderr, results file, device)``."""
    bundle = make_bundle(tmp_path / "bundle", features=16, hidden=32)
    out = tmp_path / "remote.json"
    with SshServer(tmp_path / "sshd") as srv:
        code, stdout, err = cli("-q", "bench", bundle, "--device", srv.device, "--identity", srv.identity,
                                "--known-hosts", srv.known_hosts, "--python", sys.executable, "--power", "none",
                                "-o", out, *args)
    return code, stdout, err, out, srv.device


def test_bench_on_a_device_over_ssh(tmp_path, cli):
    code, stdout, err, out, device = _bench_over_ssh(tmp_path, cli, "-n", "20", "--warmup", "2",
                                                     "--report", tmp_path / "rep", "--record-host")
    assert code == 0, err
    r = load_result(out)
    assert len(r["runs"][0]["latency_ms"]["samples"]) == 20
    assert r["device"].get("address") == device
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "latency.png").exists()
    assert "median ms" in stdout and r["model"]["sha256"] == json.loads(out.read_text())["model"]["sha256"]


def test_device_results_leave_out_the_address_unless_asked(tmp_path, cli):
    code, _, err, out, device = _bench_over_ssh(tmp_path, cli, "-n", "5", "--warmup", "1")
    assert code == 0, err
    text = out.read_text()
    r = json.loads(text)
    assert "address" not in r["device"] and "hostname" not in r["device"]
    assert device not in text and "remote_dir" not in r.get("deploy", {})
