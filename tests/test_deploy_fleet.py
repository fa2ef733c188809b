"""Fleet runs: one bundle on two real sshd "devices" in parallel, merged into one comparison report."""
from __future__ import annotations

import json
import re
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


def _timed_fleet(root, servers, run: str, boards: int) -> Path:
    """A fleet.toml of ``boards`` boards spread over ``servers``; each board's ``python`` is a wrapper that logs
    ``<board> start|end <ns>`` around every remote Python it runs, so a board's session is the span from its
    first start to its last end."""
    log = root / f"{run}.log"
    text = ""
    for i in range(boards):
        srv, name = servers[i % len(servers)], f"board-{i}"
        wrapper = root / f"{run}-{name}.sh"
        wrapper.write_text(f'#!/bin/sh\necho "{name} start $(date +%s%N)" >> {log}\n{PY} "$@"\nrc=$?\n'
                           f'echo "{name} end $(date +%s%N)" >> {log}\nexit $rc\n')
        wrapper.chmod(0o755)
        text += (f'[[device]]\nname = "{name}"\nhost = "{srv.device}"\ntarget = "cpu"\nidentity = "{srv.identity}"\n'
                 f'remote_dir = "{root / run / name / "dense"}"\npython = "{wrapper}"\n\n')
    path = root / f"{run}.toml"
    path.write_text(text)
    return path


def _most_at_once(log: Path) -> int:
    """The most board sessions (first start .. last end of a board's remote commands) that overlapped."""
    spans: dict = {}
    for line in log.read_text().split("\n"):
        if line:
            name, _, ns = line.split()
            lo, hi = spans.get(name, (int(ns), int(ns)))
            spans[name] = (min(lo, int(ns)), max(hi, int(ns)))
    events = sorted([(lo, 1) for lo, _ in spans.values()] + [(hi, -1) for _, hi in spans.values()])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


BLANKED = ("started_at", "finished_at", "remote_dir", "python", "runner", "free_bytes")


def _same_apart_from_timings(results: dict) -> dict:
    """Results with every float (latencies, throughput, seconds) zeroed and the times and paths that differ
    between two runs of the same fleet (start/finish, remote folder, python wrapper, free disk) blanked."""
    def zero(x):
        if isinstance(x, dict):
            return {k: "" if k in BLANKED else zero(v) for k, v in x.items()}
        if isinstance(x, list):
            return [zero(v) for v in x]
        return 0.0 if isinstance(x, float) else x

    return zero(json.loads(json.dumps(results)))


def test_max_parallel_bounds_the_boards_at_once_and_changes_no_result(fleet, tmp_path, cli):
    """--max-parallel 2 on 4 boards: never more than 2 board sessions at once (timestamps logged by the boards'
    python), and the same results as the default (all 4 at once) apart from timings (~15 s on 2 cores)."""
    root, a, b, known = fleet
    bundle = make_bundle(tmp_path / "dense")
    out = {}
    for run, extra in (("bounded", ["--max-parallel", "2"]), ("default", [])):
        toml = _timed_fleet(tmp_path, [a, b], run, 4)
        code, stdout, err = cli("bench", bundle, "--devices", toml, "-o", tmp_path / f"{run}.json", "-n", "5",
                                "--warmup", "1", "--power", "none", "--known-hosts", known, *extra)
        assert code == 0, err
        out[run] = json.loads((tmp_path / f"{run}.json").read_text())
        assert {line.split()[0] for line in (tmp_path / f"{run}.log").read_text().split("\n") if line} == {
            f"board-{i}" for i in range(4)}
    assert _most_at_once(tmp_path / "bounded.log") <= 2
    assert [r["device"]["label"] for r in out["bounded"]] == [f"board-{i}" for i in range(4)]
    assert all(r["runs"] and not r.get("error") for r in out["bounded"])
    assert [_same_apart_from_timings(r) for r in out["bounded"]] == [_same_apart_from_timings(r)
                                                                        for r in out["default"]]


@pytest.mark.parametrize("args, message", [
    (["--devices", "FLEET", "--max-parallel", "0"], "--max-parallel must be a whole number >= 1"),
    (["--devices", "FLEET", "--max-parallel", "-3"], "--max-parallel must be a whole number >= 1"),
    (["--device", "nvidia@10.0.0.1", "--max-parallel", "2"], "--max-parallel goes with --devices"),
])
@pytest.mark.parametrize("verb", ["bench", "deploy"])
def test_max_parallel_is_checked_before_anything_runs(tmp_path, cli, verb, args, message):
    fleet_toml = tmp_path / "fleet.toml"
    fleet_toml.write_text("[[device]]\nname = 'x'\nhost = 'nvidia@10.0.0.1'\n")
    bundle = make_bundle(tmp_path / "dense")
    code, stdout, err = cli(verb, bundle, *[str(fleet_toml) if a == "FLEET" else a for a in args])
    assert code == 3 and message in err and "benchmarking" not in err, err
    with pytest.raises(InputError, match="whole number >= 1"):
        fleet_bench(bundle, fleet_toml, max_parallel=0)


def test_max_parallel_default_is_written_once(cli):
    """The --help text, the playbook's forks and fleet_bench share DEFAULT_MAX_PARALLEL."""
    import inspect

    from edgesqueeze.deploy.fleet import DEFAULT_MAX_PARALLEL
    from edgesqueeze.deploy.playbook import write_playbook

    for verb in ("bench", "deploy"):
        code, stdout, _ = cli(verb, "--help")
        assert code == 0 and f"[default: {DEFAULT_MAX_PARALLEL}]" in " ".join(stdout.split())
    assert inspect.signature(fleet_bench).parameters["max_parallel"].default == DEFAULT_MAX_PARALLEL
    assert inspect.signature(write_playbook).parameters["forks"].default == DEFAULT_MAX_PARALLEL
    code, stdout, _ = cli("fleet", "playbook", "--help")
    assert re.search(rf"--forks .*\[default: {DEFAULT_MAX_PARALLEL};", " ".join(stdout.split()))


def test_bench_identity_and_python_serve_the_devices_that_name_none(fleet, tmp_path, cli):
    """bench --devices passes --identity and --python to the boards whose entry has no identity/python (as
    deploy --devices does); an entry's own keys win."""
    root, a, b, known = fleet
    bundle = make_bundle(tmp_path / "dense", features=16, hidden=32)
    log = tmp_path / "python.log"
    wrapper = tmp_path / "python.sh"
    wrapper.write_text(f'#!/bin/sh\necho run >> {log}\nexec {PY} "$@"\n')
    wrapper.chmod(0o755)
    toml = tmp_path / "fleet.toml"
    toml.write_text(f'[[device]]\nname = "bare"\nhost = "{a.device}"\ntarget = "cpu"\n'
                    f'remote_dir = "{tmp_path / "dev" / "dense"}"\n')
    code, _, err = cli("bench", bundle, "--devices", toml, "--identity", a.identity, "--python", wrapper,
                       "--known-hosts", known, "-n", "3", "--warmup", "1", "--power", "none")
    assert code == 0, err
    assert log.is_file() and log.read_text().count("run") >= 2  # probe, sync, run: all through --python
