"""Fleet runs: one bundle on two real sshd "devices" in parallel, merged into one comparison report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd import SshServer, free_port, make_bundle, sshd_skip_reason  # noqa: E402

from edgesqueeze.deploy import fleet_bench, read_fleet  # noqa: E402
from edgesqueeze.errors import InputError  # noqa: E402

pytestmark = pytest.mark.skipif(sshd_skip_reason() is not None, reason=f"ssh: {sshd_skip_reason()}")
PY = sys.executable


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    with SshServer(root / "a") as a, SshServer(root / "b") as b:
        known = root / "known_hosts"
        known.write_text(a.known_hosts.read_text() + b.known_hosts.read_text())
        yield root, a, b, known


def _toml(root, a, b, extra=""):
    text = f"""
# two boards on the bench
[[device]]
name = "board-a"
host = "{a.device}"
target = "cpu"
identity = "{a.identity}"
remote_dir = "{root / 'dev-a' / 'dense'}"
python = "{PY}"

[[device]]
name = "board-b"
host = "127.0.0.1"
user = "{b.user}"
port = {b.port}
target = "cpu"
identity = "{b.identity}"
remote_dir = "{root / 'dev-b' / 'dense'}"
python = "{PY}"
""" + extra
    path = root / "fleet.toml"
    path.write_text(text)
    return path


def test_two_devices_in_parallel_give_one_merged_report(fleet, tmp_path):
    root, a, b, known = fleet
    bundle = make_bundle(tmp_path / "dense")
    out = tmp_path / "out"
    results = fleet_bench(bundle, _toml(root, a, b), out_dir=out, iterations=20, warmup=2, known_hosts=str(known),
                          record_host=True)
    assert [r["device"]["label"] for r in results] == ["board-a", "board-b"]
    assert {r["device"]["address"] for r in results} == {a.device, b.device}
    for r in results:
        assert r["partial"] is False and "error" not in r
        assert len(r["runs"][0]["latency_ms"]["samples"]) == 20
    # each device got its own copy of the bundle
    for dev in ("dev-a", "dev-b"):
        assert (root / dev / "dense" / "models" / "model.fp32.onnx").is_file()
    summary = json.loads((out / "fleet.json").read_text())
    assert [d["status"] for d in summary["devices"]] == ["ok", "ok"]
    report = (out / "report.md").read_text()
    assert "Run 1" in report and "Run 2" in report and "board-a" in report and "board-b" in report
    assert (out / "board-a" / "results.json").is_file() and (out / "board-b" / "results.json").is_file()
    assert (out / "latency.png").stat().st_size > 10_000  # the merged plot of both boards
    fleet_md = (out / "fleet.md").read_text()
    assert "board-a" in fleet_md and "board-b" in fleet_md


def test_a_dead_board_does_not_hide_the_others(fleet, tmp_path, cli):
    root, a, b, known = fleet
    bundle = make_bundle(tmp_path / "dense")
    toml = _toml(root, a, b, extra=f"""
[[device]]
name = "board-dead"
host = "{a.user}@127.0.0.1:{free_port()}"
identity = "{a.identity}"
""")
    out = tmp_path / "out"
    code, stdout, err = cli("deploy", bundle, "--devices", toml, "-o", out, "--known-hosts", known, "-n", "10", "--no-plots",
                            "--connect-timeout", "3")
    assert code == 6, err
    assert "board-dead" in err and "connection refused" in err
    assert "board-a" in stdout and "board-b" in stdout and "error" in stdout
    summary = {d["name"]: d for d in json.loads((out / "fleet.json").read_text())["devices"]}
    assert summary["board-a"]["status"] == summary["board-b"]["status"] == "ok"
    assert summary["board-dead"]["status"] == "error" and "connection refused" in summary["board-dead"]["error"]


@pytest.mark.parametrize("text, message", [
    ("", "no devices"),
    ("[[device]]\nname = 'x'\n", "'host' is required"),
    ("[[device]]\nname = 'x'\nhost = 'h'\ncolour = 'red'\n", "unknown key"),
    ("[[device]]\nname = 'x'\nhost = 'h'\ntarget = 'tx3'\n", "unknown target 'tx3'"),
    ("[[device]]\nname = 'x'\nhost = 'h'\n[[device]]\nname = 'x'\nhost = 'g'\n", "duplicate name"),
    ("[[device]\nname = 'x'\n", "not valid TOML"),
])
def test_bad_fleet_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        read_fleet(path)
    assert str(path) in str(info.value)


def test_fleet_paths_are_relative_to_the_fleet_file(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text("[devices.tx2-lab]\nhost = 'nvidia@10.0.0.5'\ntarget = 'tx2'\nidentity = 'keys/id'\n"
                    "bundle = 'bundles/tx2'\n")
    (dev,) = read_fleet(path)
    assert dev["name"] == "tx2-lab" and dev["device"] == "nvidia@10.0.0.5"
    assert dev["identity"] == str(tmp_path / "keys" / "id") and dev["bundle"] == str(tmp_path / "bundles" / "tx2")
