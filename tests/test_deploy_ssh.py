"""Deploy + bench over a REAL OpenSSH server on 127.0.0.1 (the "device" is this machine: onnxruntime, no trtexec)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd import SilentServer, SshServer, find_python36, free_port, make_bundle, sshd_skip_reason  # noqa: E402

from edgesqueeze.deploy import deploy, read_local_bundle, remote_bench, verify_remote  # noqa: E402
from edgesqueeze.deploy.ssh import SshTransport  # noqa: E402
from edgesqueeze.errors import DeviceError, VerificationError  # noqa: E402

pytestmark = pytest.mark.skipif(sshd_skip_reason() is not None, reason=f"ssh: {sshd_skip_reason()}")
PY = sys.executable  # the device's Python: this one has onnxruntime


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with SshServer(tmp_path_factory.mktemp("sshd")) as srv:
        yield srv


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("b") / "dense")


def _opts(server, remote):
    return dict(remote_dir=str(remote), python=PY, **server.ssh_options())


def _validate(results):
    try:
        from edgesqueeze.bench.schema import validate_result
    except ImportError:
        for key in ("schema", "model", "device", "backend", "runs"):
            assert key in results
        return
    validate_result(results)


def test_full_deploy_bench_fetch_then_nothing_to_upload(server, bundle, tmp_path):
    remote = tmp_path / "device" / "dense"
    first = deploy(bundle, server.device, **_opts(server, remote))
    assert first["files"]["uploaded"] == ["models/model.fp32.onnx", "run_on_device.py", "manifest.json"]
    assert first["files"]["bytes_sent"] == first["files"]["bytes_total"] > 2_000_000
    assert first["files"]["verified"] == 3
    assert first["probe"]["arch"] and first["probe"]["trtexec"] is None and first["probe"]["onnxruntime"]
    assert (remote / "models" / "model.fp32.onnx").read_bytes() == (bundle / "models" / "model.fp32.onnx").read_bytes()
    assert not list(remote.rglob("*.part"))

    second = deploy(bundle, server.device, **_opts(server, remote))
    assert second["files"]["uploaded"] == [] and second["files"]["bytes_sent"] == 0
    assert len(second["files"]["unchanged"]) == 3

    out = tmp_path / "results"
    results = remote_bench(bundle, server.device, iterations=30, warmup=3, out_dir=out, plots=False,
                           **_opts(server, remote))
    _validate(results)
    assert results["partial"] is False and "error" not in results
    assert results["backend"]["name"] == "ort" and results["device"]["profile"] == "cpu"
    assert results["deploy"]["files"]["bytes_sent"] == 0  # deploy-if-needed sent nothing
    samples = results["runs"][0]["latency_ms"]["samples"]
    assert len(samples) == 30 and all(s > 0 for s in samples)
    st = results["runs"][0]["latency_ms"]["stats"]
    import numpy as np

    assert st["median"] == pytest.approx(float(np.median(samples)))
    assert st["p99"] == pytest.approx(float(np.percentile(samples, 99)))
    assert results["power"]["probe"] == "none" and "tegrastats" in results["power"]["reason"]
    assert results["model"]["sha256"] == json.loads((bundle / "manifest.json").read_text())["files"][
        "models/model.fp32.onnx"]["sha256"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"][0]["latency_ms"]["samples"] == samples
    assert (out / "report.md").is_file()


def _settle(path, seconds=10.0):
    """Wait until the device-side receiver has written what reached it (its size stops changing)."""
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else None
        if size is not None and size == last:
            return
        last = size
        time.sleep(0.3)


def test_interrupted_upload_resumes(server, bundle, tmp_path):
    remote = tmp_path / "dense"
    sent = []

    def interrupt(n):
        sent.append(n)
        if sum(sent) >= 1 << 20:  # stop after ~1 MiB of the 2 MiB model
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        deploy(bundle, server.device, progress=interrupt, **_opts(server, remote))
    part = remote / "models" / "model.fp32.onnx.part"
    _settle(part)
    assert part.is_file() and 0 < part.stat().st_size < (bundle / "models" / "model.fp32.onnx").stat().st_size
    assert not (remote / "models" / "model.fp32.onnx").exists()

    report = deploy(bundle, server.device, **_opts(server, remote))
    resumed = report["files"]["resumed"]
    assert resumed == {"models/model.fp32.onnx": part.stat().st_size if part.exists() else resumed.get(
        "models/model.fp32.onnx")}
    offset = resumed["models/model.fp32.onnx"]
    assert 1 << 19 <= offset < report["files"]["bytes_total"]  # what was sent before Ctrl-C landed
    assert report["files"]["bytes_sent"] == report["files"]["bytes_total"] - offset
    assert (remote / "models" / "model.fp32.onnx").read_bytes() == (bundle / "models" / "model.fp32.onnx").read_bytes()
    assert not part.exists()


def test_stale_partial_upload_is_discarded(server, bundle, tmp_path):
    remote = tmp_path / "dense"
    (remote / "models").mkdir(parents=True)
    (remote / "models" / "model.fp32.onnx.part").write_bytes(b"not the model at all")
    report = deploy(bundle, server.device, **_opts(server, remote))
    assert report["files"]["resumed"] == {}
    assert (remote / "models" / "model.fp32.onnx").read_bytes() == (bundle / "models" / "model.fp32.onnx").read_bytes()


def test_corruption_on_device_is_detected_and_repaired(server, bundle, tmp_path):
    remote = tmp_path / "dense"
    deploy(bundle, server.device, **_opts(server, remote))
    # flip one byte on the device, through the device's own shell
    with SshTransport(server.device, **server.ssh_options()) as tr:
        tr.run(f"printf 'Z' | dd of={remote}/models/model.fp32.onnx bs=1 seek=1000 conv=notrunc 2>/dev/null",
               timeout=30)
        files = read_local_bundle(bundle)[1]
        with pytest.raises(VerificationError, match=r"models/model\.fp32\.onnx \(sha256 differs\)"):
            verify_remote(tr, files, str(remote), python=PY)
    # the runner refuses a corrupted bundle too (exit 7), with partial results labelled
    with pytest.raises(VerificationError, match="sha256 differs"):
        remote_bench(bundle, server.device, deploy_first=False, iterations=5, **_opts(server, remote))
    report = deploy(bundle, server.device, **_opts(server, remote))
    assert report["files"]["uploaded"] == ["models/model.fp32.onnx"]
    assert report["files"]["bytes_sent"] == (bundle / "models" / "model.fp32.onnx").stat().st_size


def test_unreachable_and_wrong_key_fail_fast_with_clear_errors(server, bundle, tmp_path, cli):
    t = time.monotonic()
    with pytest.raises(DeviceError, match="connection refused"):
        deploy(bundle, f"root@127.0.0.1:{free_port()}", connect_timeout=3, **_opts(server, tmp_path))
    with SilentServer() as silent:
        with pytest.raises(DeviceError, match="timed out|closed"):
            deploy(bundle, f"root@127.0.0.1:{silent.port}", connect_timeout=2, timeout=8, **_opts(server, tmp_path))
    opts = _opts(server, tmp_path)
    opts["identity"] = str(server.wrong_identity)
    with pytest.raises(DeviceError, match=r"authentication failed on .* with key .*id_wrong"):
        deploy(bundle, server.device, connect_timeout=3, **opts)
    assert time.monotonic() - t < 30
    code, out, err = cli("deploy", bundle, "--device", server.device, "-i", server.wrong_identity,
                         "--known-hosts", server.known_hosts, "--connect-timeout", "3")
    assert code == 6 and "authentication failed" in err and "Traceback" not in err


def test_target_mismatch_refused_then_forced_falls_back_to_onnxruntime(server, tmp_path):
    tx2 = make_bundle(tmp_path / "tx2", target="tx2", precision="fp16")
    remote = tmp_path / "remote"
    with pytest.raises(DeviceError, match=r"targets tx2 .*not a Jetson.*--force"):
        deploy(tx2, server.device, **_opts(server, remote))
    results = remote_bench(tx2, server.device, force=True, iterations=10, warmup=2, **_opts(server, remote))
    _validate(results)
    assert results["backend"]["name"] == "ort" and results["partial"] is False
    text = " ".join(results["warnings"])
    assert "trtexec not found" in text and "onnxruntime" in text and "not TensorRT" in text
    assert "target mismatch (forced)" in text


def test_ctrl_c_stops_the_remote_run_and_keeps_partial_results(server, bundle, tmp_path):
    """A real SIGINT to the CLI (what Ctrl-C sends): exit 130, the runner on the device stopped, results kept."""
    remote = tmp_path / "dense"
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edgesqueeze", "deploy", str(bundle), "--device", server.device,
                             "-i", str(server.identity), "--known-hosts", str(server.known_hosts), "--remote-dir",
                             str(remote), "--python", PY, "--bench", "--duration", "60", "--no-plots", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a terminal's Ctrl-C reaches a CLI whose SIGINT is the default; a suite started in the
                            # background (`cmd &`, nohup) hands its children an ignored SIGINT, and Python then
                            # installs no KeyboardInterrupt handler: restore the terminal's disposition
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pid_file = remote / ".edgesqueeze" / "run.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert pid_file.exists(), proc.communicate(timeout=10)
    time.sleep(1.5)  # let it time some iterations
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 130, err
    assert "partial results kept in" in err and "Traceback" not in err
    results = json.loads((out / "results.json").read_text())
    assert results["partial"] is True
    assert any("interrupted from the host" in w for w in results["warnings"])
    assert len(results["runs"][0]["latency_ms"]["samples"]) > 0
    assert (out / "report.md").is_file()
    time.sleep(0.5)
    runner_pid = pid_file.read_text().strip()
    assert subprocess.run(["kill", "-0", runner_pid], capture_output=True).returncode != 0  # stopped on the device


def test_cli_deploy_and_bench(server, bundle, tmp_path, cli):
    remote = tmp_path / "dense"
    base = ["deploy", bundle, "--device", server.device, "-i", server.identity, "--known-hosts",
            server.known_hosts, "--remote-dir", remote, "--python", PY]
    code, out, err = cli(*base)
    assert code == 0, err
    assert "3 uploaded" in out and "verified by sha256" in out and "runs onnxruntime, not TensorRT" in out
    code, out, err = cli(*base, "--json")
    assert code == 0 and json.loads(out)["files"]["uploaded"] == []
    code, out, err = cli(*base, "--bench", "-n", "20", "--no-plots", "-o", tmp_path / "res")
    assert code == 0, err
    assert "median ms" in out and "ort" in out
    assert (tmp_path / "res" / "results.json").is_file()


def test_a_python_3_6_device(server, bundle, tmp_path):
    """Deploy and run with a real Python 3.6 as the device's Python (JetPack 4.6: TX1, TX2, Nano)."""
    py36 = find_python36()
    if py36 is None:
        pytest.skip("no Python 3.6 interpreter here (set EDGESQUEEZE_TEST_PY36=/path/to/python3.6)")
    has_ort = subprocess.run([py36, "-c", "import onnxruntime"], capture_output=True).returncode == 0
    opts = dict(remote_dir=str(tmp_path / "dense"), python=py36, **server.ssh_options())
    if not has_ort:  # the check against the bundle's target says why it cannot run, before uploading
        with pytest.raises(DeviceError, match="no onnxruntime for Python 3.6"):
            deploy(bundle, server.device, **opts)
        opts["force"] = True
    report = deploy(bundle, server.device, **opts)
    assert report["probe"]["python"].startswith("3.6.") and report["files"]["verified"] == 3
    if has_ort:
        results = remote_bench(bundle, server.device, iterations=20, **opts)
        assert results["versions"]["python"].startswith("3.6.") and results["backend"]["name"] == "ort"
    else:
        with pytest.raises(DeviceError, match="no backend can run the model here"):
            remote_bench(bundle, server.device, iterations=20, **opts)
