"""Fleets through Ansible, against 8 real sshd on 127.0.0.1 (own ports and keys) plus one closed port.

Both paths: the built-in one (``bench --devices inventory.ini --limit lab``, ansible-core reading the inventory)
and ``ansible-playbook`` running the playbook ``edgesqueeze fleet playbook`` writes; each report lists every
device with its status, and for the 8 boards of group ``lab`` the two reports are the same apart from timings
(issue 19's done-when; ~45 s on 2 shared cores, in the default run). The slow test adds the dead board, a
resumed rerun and ``edgesqueeze report``.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd import SshServer, free_port, make_bundle, sshd_skip_reason  # noqa: E402

from edgesqueeze.deploy import read_fleet  # noqa: E402
from edgesqueeze.deploy.ansible_inventory import looks_like_inventory, ssh_options_from_args  # noqa: E402
from edgesqueeze.errors import InputError  # noqa: E402

ansible = pytest.importorskip("ansible", reason="ansible-core (the 'ansible' extra) reads inventories")
PY = sys.executable
N = 8


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """8 sshd servers, an INI inventory (groups lab = 0..7, field = a dead board + 6..7) and a known_hosts."""
    if sshd_skip_reason():
        pytest.skip(f"ssh: {sshd_skip_reason()}")
    root = tmp_path_factory.mktemp("ansible-lab")
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(SshServer(root / f"s{i}")) for i in range(N)]
        known = root / "known_hosts"
        known.write_text("".join(s.known_hosts.read_text() for s in servers))
        lines = ["[lab]"] + [f"board-{i} ansible_host=127.0.0.1 ansible_port={s.port} ansible_ssh_private_key_file="
                             f"{s.identity} edgesqueeze_remote_dir={root / 'dev' / str(i) / 'dense'}"
                             for i, s in enumerate(servers)]
        lines += ["", "[field]", f"board-dead ansible_host=127.0.0.1 ansible_port={free_port()} "
                  f"ansible_ssh_private_key_file={servers[0].identity}", "board-6", "board-7"]
        lines += ["", "[all:vars]", f"ansible_user={servers[0].user}", f"ansible_python_interpreter={PY}",
                  "edgesqueeze_target=cpu",
                  f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
                  f"-o ConnectTimeout=5'"]
        inv = root / "inventory.ini"
        inv.write_text("\n".join(lines) + "\n")
        yield root, servers, inv, known


def test_inventory_hosts_become_fleet_devices(lab):
    root, servers, inv, known = lab
    devices = read_fleet(inv, limit="lab")
    assert [d["name"] for d in devices] == [f"board-{i}" for i in range(N)]
    d = devices[3]
    assert d["device"] == f"{servers[3].user}@127.0.0.1:{servers[3].port}" and d["target"] == "cpu"
    assert d["identity"] == str(servers[3].identity) and d["python"] == PY
    assert d["ssh_options"] == [f"UserKnownHostsFile={known}", "StrictHostKeyChecking=yes", "ConnectTimeout=5"]
    # inventory order: board-6 and board-7 are in lab first
    assert [d["name"] for d in read_fleet(inv, limit="field")] == ["board-6", "board-7", "board-dead"]
    assert len(read_fleet(inv, limit="all:!board-dead")) == N
    with pytest.raises(InputError, match="matched no host"):
        read_fleet(inv, limit="nosuchgroup")


def test_yaml_inventory_and_checks(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    orin:\n      vars: {edgesqueeze_target: orin-nano, ansible_user: nvidia}\n"
                   "      hosts:\n        orin-1: {ansible_host: 10.0.0.5}\n        orin-2: {ansible_port: 2222}\n")
    assert looks_like_inventory(inv) and not looks_like_inventory(tmp_path / "fleet.toml")
    devs = read_fleet(inv, limit="orin")
    assert [d["device"] for d in devs] == ["nvidia@10.0.0.5", "nvidia@orin-2:2222"]
    inv.write_text("all:\n  hosts:\n    x: {ansible_user: '-oProxyCommand=evil'}\n")
    with pytest.raises(InputError, match="bad host or port"):
        read_fleet(inv)
    inv.write_text("all:\n  hosts:\n    x: {edgesqueeze_target: tx3}\n")
    with pytest.raises(InputError, match="unknown target 'tx3'"):
        read_fleet(inv)
    assert ssh_options_from_args("-J bastion -oCompression=yes", "x") == ["ProxyJump=bastion", "Compression=yes"]
    with pytest.raises(InputError, match="unsupported ssh argument"):
        ssh_options_from_args("-v", "x")


def test_toml_fleets_take_limit_too(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text("[devices.a1]\nhost = 'h1'\n[devices.a2]\nhost = 'h2'\n[devices.b1]\nhost = 'h3'\n")
    assert [d["name"] for d in read_fleet(path, "a*,!a2")] == ["a1"]


def test_builtin_path_benchmarks_the_lab_group(lab, tmp_path, cli):
    root, servers, inv, known = lab
    bundle = make_bundle(tmp_path / "dense")
    out = tmp_path / "report"
    code, stdout, err = cli("deploy", bundle, "--devices", inv, "--limit", "lab:board-dead", "-o", out,
                            "-n", "5", "--warmup", "1", "--no-plots", "--connect-timeout", "5", "--no-engine")
    assert code == 6, err
    status = {d["name"]: d["status"] for d in json.loads((out / "fleet.json").read_text())["devices"]}
    assert status == {**{f"board-{i}": "ok" for i in range(N)}, "board-dead": "error"}
    assert "connection refused" in err and all(f"board-{i}" in (out / "fleet.md").read_text() for i in range(N))


def test_collect_orders_hosts_as_the_inventory_and_keeps_strays(tmp_path):
    """fleet collect without ssh: files/hosts.json gives order, address and target; a folder it does not list
    still shows (by name); a host with neither results nor error.json is an error; a listed host with no folder
    (outside the run's --limit) is left out."""
    from edgesqueeze.deploy.playbook import collect_results

    play = tmp_path / "play"
    (play / "files").mkdir(parents=True)
    (play / "files" / "hosts.json").write_text(json.dumps([
        {"name": "b", "device": "nvidia@10.0.0.2", "target": "cpu"},
        {"name": "a", "device": "nvidia@10.0.0.1:2222", "target": None},
        {"name": "not-run", "device": "nvidia@10.0.0.3", "target": None}]))
    error = {"host": "a", "task": "the device answers", "message": "unreachable"}
    for host, fname, data in [("a", "error.json", error),
                              ("b", "results.json", {"schema": "edgesqueeze.bench/1", "runs": [], "warnings": []}),
                              ("z", "nothing.txt", {})]:
        (play / "results" / host).mkdir(parents=True)
        (play / "results" / host / fname).write_text(json.dumps(data))
    merged = collect_results(play, tmp_path / "rep", plots=False)
    assert [r["device"]["label"] for r in merged] == ["b", "a", "z"]
    fleet = json.loads((tmp_path / "rep" / "fleet.json").read_text())["devices"]
    assert [(d["name"], d["device"], d["target"], d["status"]) for d in fleet] == [
        ("b", "nvidia@10.0.0.2", "cpu", "ok"), ("a", "nvidia@10.0.0.1:2222", None, "error"), ("z", "z", None, "error")]
    assert fleet[1]["error"] == "the device answers: unreachable" and "no results" in fleet[2]["error"]
    assert "address" not in merged[0]["device"] and merged[0]["device"]["fleet_target"] == "cpu"  # redacted
    assert collect_results(play, record_host=True)[0]["device"]["address"] == "nvidia@10.0.0.2"
    assert (tmp_path / "rep" / "b" / "results.json").is_file() and not (tmp_path / "rep" / "a").exists()
    (play / "results" / "b" / "results.json").write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        collect_results(play)


def _comparable(results: dict) -> dict:
    """One device's results with the timings zeroed and what only the built-in path measures left out.

    Timings: every float (latency samples and statistics, throughput) and the start/finish times. Built-in
    only: its deploy report (files uploaded, seconds), the device probe and the deploy warnings.
    """
    def zero(x):
        if isinstance(x, dict):
            return {k: ("" if k in ("started_at", "finished_at") else zero(v)) for k, v in x.items()}
        if isinstance(x, list):
            return [zero(v) for v in x]
        return 0.0 if isinstance(x, float) else x

    r = json.loads(json.dumps(results))
    r.pop("deploy", None)
    r["device"].pop("probe", None)
    r["warnings"] = [w for w in r.get("warnings") or [] if not w.startswith("deploy: ")]
    return zero(r)


@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-playbook not on PATH")
def test_bench_and_the_playbook_give_the_same_report(lab, tmp_path, cli):
    """Done-when of issue 19: 'bench --devices inventory.ini --limit lab' and the generated playbook benchmark
    8 loopback boards and produce the same merged report, apart from timings (~45 s on 2 shared cores)."""
    root, servers, inv, known = lab
    bundle = make_bundle(tmp_path / "dense")
    code, stdout, err = cli("bench", bundle, "--devices", inv, "--limit", "lab", "-o", tmp_path / "lab.json",
                            "--report", tmp_path / "lab-report", "-n", "3", "--warmup", "1", "--power", "none")
    assert code == 0, err
    builtin = json.loads((tmp_path / "lab.json").read_text())
    play = tmp_path / "play"
    code, stdout, err = cli("fleet", "playbook", bundle, "-i", inv, "--limit", "lab", "-o", play, "-n", "3",
                            "--warmup", "1", "--power", "none", "--remote-dir", str(root / "pb-lab" / "dense"))
    assert code == 0, err
    env = dict(os.environ, ANSIBLE_CONFIG=str(play / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    res = subprocess.run(["ansible-playbook", "playbook.yml", "--limit", "lab"], cwd=play, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    rep = tmp_path / "rep"
    code, stdout, err = cli("fleet", "collect", play, "-o", rep, "--no-plots", "--json")
    assert code == 0, err
    collected = json.loads(stdout)
    names = [f"board-{i}" for i in range(N)]
    assert [r["device"]["label"] for r in builtin] == [r["device"]["label"] for r in collected] == names
    assert [d["status"] for d in json.loads((rep / "fleet.json").read_text())["devices"]] == ["ok"] * N
    assert all(r["runs"] and not r.get("error") for r in builtin)
    for b, a in zip(builtin, collected):
        assert len(a["runs"][0]["latency_ms"]["samples"]) == 3
        assert _comparable(b) == _comparable(a)
        saved = json.loads((rep / b["device"]["label"] / "results.json").read_text())  # before the fleet merge
        assert _comparable(a) == _comparable({**saved, "device": {**saved["device"], "fleet_target": "cpu"}})
    # the Markdown reports' run lines and tables read the same once the numbers are gone
    rows = lambda path: [re.sub(r"\d+(\.\d+)?", "#", line) for line in path.read_text().splitlines()  # noqa: E731
                         if line.startswith(("|", "**Run"))]
    assert rows(tmp_path / "lab-report" / "report.md") == rows(rep / "report.md")
    assert sum("board-" in line for line in rows(rep / "report.md")) >= N


@pytest.mark.slow  # ~60 s for 9 hosts on a 2-core machine
@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-playbook not on PATH")
def test_generated_playbook_runs_with_ansible_playbook(lab, tmp_path, cli):
    root, servers, inv, known = lab
    bundle = make_bundle(tmp_path / "dense")
    play = tmp_path / "play"
    code, stdout, err = cli("fleet", "playbook", bundle, "-i", inv, "-o", play, "-n", "5", "--warmup", "1",
                            "--power", "none", "--remote-dir", str(root / "pb" / "dense"))
    assert code == 0, err
    env = dict(os.environ, ANSIBLE_CONFIG=str(play / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    res = subprocess.run(["ansible-playbook", "playbook.yml"], cwd=play, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode != 0, res.stdout  # board-dead failed, and the recap says so
    assert "board-dead" in res.stdout and "unreachable" in (play / "results" / "board-dead" / "error.json").read_text()
    for i in range(N):
        r = json.loads((play / "results" / f"board-{i}" / "results.json").read_text())
        assert len(r["runs"][0]["latency_ms"]["samples"]) == 5 and r["device"]["label"] == f"board-{i}"
    # a second run uploads nothing: every file's checksum matches
    res2 = subprocess.run(["ansible-playbook", "playbook.yml", "--limit", "board-0"], cwd=play, env=env,
                          capture_output=True, text=True, timeout=300)
    assert res2.returncode == 0, res2.stdout
    assert re.search(r"upload the files whose checksum differs\] \**\nok: \[board-0\]", res2.stdout), res2.stdout
    rep = tmp_path / "rep"
    code, stdout, err = cli("fleet", "collect", play, "-o", rep, "--no-plots")
    assert code == 6, err
    status = {d["name"]: d["status"] for d in json.loads((rep / "fleet.json").read_text())["devices"]}
    assert status == {**{f"board-{i}": "ok" for i in range(N)}, "board-dead": "error"}
    assert "board-dead" in (rep / "fleet.md").read_text() and (rep / "report.md").is_file()
    code, stdout, err = cli("report", *sorted((play / "results").glob("*/results.json")), "-o", tmp_path / "r2",
                            "--no-plots")
    assert code == 0, err
