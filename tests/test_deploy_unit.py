"""Deploy pieces that need no SSH: device addresses, probe interpretation, target checks, the on-device runner."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd import find_python36, make_bundle  # noqa: E402

from edgesqueeze.deploy import check_target, engine_key, jetpack_for_l4t, parse_device, parse_tegra_release  # noqa: E402
from edgesqueeze.deploy.device_runner import stats, trtexec_build_flags, version_from_tag  # noqa: E402
from edgesqueeze.deploy.probe import interpret  # noqa: E402
from edgesqueeze.devices import get_profile  # noqa: E402
from edgesqueeze.errors import InputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "edgesqueeze" / "deploy" / "device_runner.py"
DEVICE_SCRIPTS = [RUNNER, REPO / "edgesqueeze" / "deploy" / "device_probe.py",
                  REPO / "edgesqueeze" / "deploy" / "remote_files.py"]
TX2_LINE = ("RAM 696/7854MB (lfb 1675x4MB) CPU [2%@345,off,off,1%@345,0%@345,0%@345] EMC_FREQ 1%@665 GR3D_FREQ 0%@140 "
            "APE 150 MTS fg 0% bg 0% BCPU@30C MCPU@30C GPU@28C PLL@30C Tboard@26C Tdiode@28C PMIC@100C thermal@29C "
            "VDD_IN 1383/1383 VDD_CPU 153/191 VDD_GPU 76/76 VDD_SOC 384/384 VDD_WIFI 364/335 VDD_DDR 192/201")


@pytest.mark.parametrize("spec, host, user, port", [
    ("nvidia@10.0.0.5", "10.0.0.5", "nvidia", None),
    ("nvidia@tx2.local:2222", "tx2.local", "nvidia", 2222),
    ("jetson", "jetson", None, None),
    ("ssh://me@[::1]:22", "::1", "me", 22),
    ("me@fe80::1", "fe80::1", "me", None),
])
def test_parse_device(spec, host, user, port):
    d = parse_device(spec)
    assert (d.host, d.user, d.port) == (host, user, port)


@pytest.mark.parametrize("spec", ["", "user@host:http", "user@host:70000", "user@"])
def test_parse_device_rejects_bad_addresses(spec):
    with pytest.raises(InputError):
        parse_device(spec)


@pytest.mark.parametrize("text, l4t, jetpack", [
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t186ref, EABI: aarch64, DATE: Sat Feb 19 2022",
     "32.7.1", "4.6.1"),
    ("# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64", "32.6.1", "4.6"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", "35.4.1", "5.1.2"),
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64", "36.4.3", "6.2"),
    ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64", "36.4.0", "6.1"),
    ("garbage", None, None),
])
def test_l4t_to_jetpack(text, l4t, jetpack):
    assert parse_tegra_release(text) == l4t
    assert jetpack_for_l4t(l4t) == jetpack


def _raw(**kw):
    raw = {"hostname": "tx2", "arch": "aarch64", "python": "3.6.9", "trtexec": "/usr/src/tensorrt/bin/trtexec",
           "trtexec_version_tag": "8201", "tensorrt_python": None, "tensorrt_header": None, "tensorrt_dpkg": None,
           "nv_tegra_release": "# R32 (release), REVISION: 7.1, GCID: 1, BOARD: t186ref, EABI: aarch64",
           "device_tree_compatible": ["nvidia,p3310-1000+p3489-0000", "nvidia,tegra186"],
           "device_tree_model": "quill", "onnxruntime": None, "pycuda": None}
    raw.update(kw)
    return interpret(raw)


def test_probe_interpretation_and_target_check():
    tx2 = _raw()
    assert (tx2["l4t"], tx2["jetpack"], tx2["tensorrt"], tx2["soc"], tx2["candidates"]) == \
        ("32.7.1", "4.6.1", "8.2.1", "tegra186", ["tx2"])
    assert check_target(tx2, get_profile("tx2").to_dict()) == ([], [])
    mism, _ = check_target(tx2, get_profile("orin-nano").to_dict())
    assert any("targets orin-nano" in m for m in mism) and any("TensorRT 10.3" in m for m in mism)

    nx = _raw(device_tree_compatible=["nvidia,p3509-0000+p3668-0001", "nvidia,tegra194"],
              device_tree_model="NVIDIA Jetson Xavier NX Developer Kit", trtexec_version_tag="8502",
              nv_tegra_release="# R35 (release), REVISION: 4.1, GCID: 1")
    assert nx["candidates"] == ["xavier-nx"] and nx["jetpack"] == "5.1.2"
    assert check_target(nx, get_profile("xavier-nx").to_dict())[0] == []

    old = _raw(python="3.5.2")
    assert any("needs 3.6+" in m for m in check_target(old, get_profile("tx2").to_dict())[0])

    pc = interpret({"hostname": "pc", "arch": "x86_64", "python": "3.11.7", "onnxruntime": "1.31.1"})
    mism, notes = check_target(pc, get_profile("tx2").to_dict())
    assert any("not a Jetson" in m for m in mism) and any("fall back to onnxruntime" in n for n in notes)
    assert check_target(pc, get_profile("cpu").to_dict())[0] == []
    bare = interpret({"hostname": "pc", "arch": "x86_64", "python": "3.11.7", "onnxruntime": None})
    assert any("no onnxruntime" in m for m in check_target(bare, get_profile("cpu").to_dict())[0])


def test_engine_key_names_tensorrt_precision_and_model():
    manifest = {"precision": "fp16", "models": {"deploy": "m.onnx"}, "files": {"m.onnx": {"sha256": "ab" * 32}}}
    key = engine_key(_raw(), manifest)
    assert key == "trt8.2.1-tegra186-fp16-" + "ab" * 8
    assert engine_key(_raw(trtexec_version_tag="100300"), manifest).startswith("trt10.3.0-")


def test_trtexec_flags_follow_the_tensorrt_version():
    m = {"precision": "int8", "models": {"deploy": "models/model.fp32.onnx"}}
    assert trtexec_build_flags(m, "calib/calibration.cache", 8, "libesq.so") == [
        "--workspace=1024", "--fp16", "--int8", "--calib=calib/calibration.cache", "--plugins=libesq.so"]
    assert trtexec_build_flags(m, None, 10, "/no/such/lib.so")[-1] == "--staticPlugins=/no/such/lib.so"
    assert trtexec_build_flags(m, "c", 10, None) == ["--memPoolSize=workspace:1024", "--fp16", "--int8", "--calib=c"]
    assert trtexec_build_flags(m, "c", 11, None) == ["--memPoolSize=workspace:1024"]  # precision from Q/DQ only
    assert (version_from_tag("8201"), version_from_tag("100300")) == ("8.2.1", "10.3.0")


def test_plugin_flag_follows_what_the_library_exports(tmp_path):
    from edgesqueeze.deploy.device_runner import plugin_flag

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a test library")
    libs = {}
    for name, code in (("dyn", "int getCreators(void) { return 0; }"), ("static", "int esq_registered = 1;")):
        (tmp_path / f"{name}.c").write_text(code + "\n")
        libs[name] = tmp_path / f"lib{name}.so"
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(libs[name]), str(tmp_path / f"{name}.c")], check=True,
                       timeout=60)
    assert plugin_flag(str(libs["dyn"]), 10) == f"--dynamicPlugins={libs['dyn']}"
    assert plugin_flag(str(libs["static"]), 10) == f"--staticPlugins={libs['static']}"
    assert plugin_flag(str(libs["dyn"]), 8) == f"--plugins={libs['dyn']}"


def test_runner_statistics_match_numpy():
    rng = np.random.default_rng(1)
    x = list(rng.gamma(2.0, 0.5, size=257))
    st = stats(x)
    for key, q in (("median", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert st[key] == pytest.approx(float(np.percentile(x, q)), rel=1e-12)
    assert st["std"] == pytest.approx(float(np.std(x)), rel=1e-12)
    assert st["mean"] == pytest.approx(float(np.mean(x)), rel=1e-12)
    assert stats([]) is None


def test_device_scripts_run_on_python_3_6():
    vermin = shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install vermin)")
    out = subprocess.run([vermin, "-t=3.6-", "--no-tips", "--violations", *map(str, DEVICE_SCRIPTS)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def _run(bundle, out, *args, env=None, **kw):
    return subprocess.run([sys.executable, str(RUNNER), "--bundle", str(bundle), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120, env=env, **kw)


def _validate(results):
    from edgesqueeze.bench.schema import validate_result

    return validate_result(results)


def test_runner_on_this_machine_writes_bench_schema(tmp_path):
    bundle = make_bundle(tmp_path / "b", hidden=64)
    proc = _run(bundle, tmp_path / "r.json", "--iterations", "25", "--warmup", "2")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    v = _validate(r)
    assert v["backend"]["name"] == "ort" and r["partial"] is False and r["warnings"] == []
    assert len(r["runs"][0]["latency_ms"]["samples"]) == 25 and r["runs"][0]["batch"] == 1
    assert r["device"]["profile"] == "cpu" and r["versions"]["onnxruntime"]


def test_runner_refuses_a_corrupted_or_missing_bundle(tmp_path):
    bundle = make_bundle(tmp_path / "b", hidden=64)
    model = bundle / "models" / "model.fp32.onnx"
    data = bytearray(model.read_bytes())
    data[-5] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = _run(bundle, tmp_path / "r.json", "--iterations", "5")
    assert proc.returncode == 7
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["partial"] is True and "models/model.fp32.onnx (sha256 differs)" in r["error"]["message"]
    assert _run(tmp_path / "nothing", tmp_path / "r2.json").returncode == 3


def test_runner_falls_back_with_a_warning_and_samples_tegrastats(tmp_path):
    """A TensorRT target on a machine without TensorRT: onnxruntime with a warning; a recorded TX2 tegrastats
    line replayed by a tegrastats stand-in on PATH becomes power.raw, which the bench schema parses."""
    bundle = make_bundle(tmp_path / "b", target="tx2", precision="fp16", hidden=64)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ts = bindir / "tegrastats"
    ts.write_text(f"#!/bin/sh\nwhile true; do echo '{TX2_LINE}'; sleep 0.05; done\n")
    ts.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    proc = _run(bundle, tmp_path / "r.json", "--iterations", "200", "--idle-s", "0.3", "--power-interval-ms", "50",
                env=env)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["backend"]["name"] == "ort"
    text = " ".join(r["warnings"])
    assert "trtexec not found" in text and "not TensorRT" in text and "FP16" in text
    assert r["power"]["probe"] == "tegrastats" and r["power"]["available"] is True
    assert r["power"]["raw"][0] == TX2_LINE and len(r["power"]["raw"]) == len(r["power"]["raw_t_s"])
    assert r["power"]["window_s"][0] >= 0.25  # the idle baseline came first
    v = _validate(r)
    assert v["power"]["summary"]  # the host parsed the raw lines


def test_runner_stops_on_sigterm_and_keeps_partial_results(tmp_path):
    bundle = make_bundle(tmp_path / "b", hidden=64)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, str(RUNNER), "--bundle", str(bundle), "--out", str(out),
                             "--duration", "60", "--pid-file", str(tmp_path / "pid")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (tmp_path / "pid").exists():
        time.sleep(0.05)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    r = json.loads(out.read_text())
    assert r["partial"] is True and "interrupted after" in r["warnings"][0]
    assert len(r["runs"][0]["latency_ms"]["samples"]) > 10
    _validate(r)


def test_device_scripts_under_a_real_python_3_6(tmp_path):
    """vermin reads the code; this runs it on a real Python 3.6 (JetPack 4.6's), when one is installed."""
    py36 = find_python36()
    if py36 is None:
        pytest.skip("no Python 3.6 interpreter here (set EDGESQUEEZE_TEST_PY36=/path/to/python3.6)")
    deploy_dir = REPO / "edgesqueeze" / "deploy"
    probe = json.loads(subprocess.run([py36, str(deploy_dir / "device_probe.py"), str(tmp_path)], capture_output=True,
                                      text=True, timeout=60, check=True).stdout)
    assert probe["python"].startswith("3.6.") and probe["free_bytes"] > 0

    helper = (deploy_dir / "remote_files.py").read_text()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    frame = json.dumps({"rel": "a/b.bin", "offset": 0, "size": src.stat().st_size}).encode() + b"\n" + src.read_bytes()
    got = subprocess.run([py36, "-c", helper, "receive", str(tmp_path / "dev")], input=frame, capture_output=True,
                         timeout=60, check=True)
    assert json.loads(got.stdout) == {"a/b.bin": 300_000}
    import hashlib

    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    done = subprocess.run([py36, "-c", helper, "commit", str(tmp_path / "dev"),
                           json.dumps({"commit": {"a/b.bin": sha}, "verify": {"a/b.bin": sha}})],
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == {"commit": {"a/b.bin": "ok"}, "verify": {"a/b.bin": "ok"}}

    bundle = make_bundle(tmp_path / "b", hidden=64)
    proc = subprocess.run([py36, str(RUNNER), "--bundle", str(bundle), "--out", str(tmp_path / "r.json"),
                           "--iterations", "20"], capture_output=True, text=True, timeout=120)
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["versions"]["python"].startswith("3.6.")
    if proc.returncode == 0:  # this Python 3.6 has onnxruntime
        assert r["backend"]["name"] == "ort" and len(r["runs"][0]["latency_ms"]["samples"]) == 20
    else:
        assert proc.returncode == 6 and "no backend can run the model here" in r["error"]["message"]
