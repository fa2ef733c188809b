"""Real bundles from `edgesqueeze build` (the digits example) deployed and benchmarked over a real sshd.

The orin-nano case runs on a "device" whose PATH holds a trtexec STAND-IN (tests/sshd.py: TensorRT cannot be
installed here): it checks the plumbing around trtexec — build_engine.sh run on the device, the engine cache,
--loadEngine, --exportTimes parsing — not TensorRT itself.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd import SshServer, sshd_skip_reason, write_fake_trtexec  # noqa: E402

from edgesqueeze.deploy import deploy, remote_bench  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
pytestmark = pytest.mark.skipif(sshd_skip_reason() is not None, reason=f"ssh: {sshd_skip_reason()}")
PY = sys.executable


def _build(target, out, archive=False):
    if not (DIGITS / "digits_cnn.onnx").is_file():
        pytest.skip("examples/digits/digits_cnn.onnx is not there")
    from edgesqueeze.pipeline import build

    summary = build(DIGITS / "digits_cnn.onnx", target, out, calib=str(DIGITS / "calib.npz"), progress=False,
                    archive=archive)
    return (out, Path(summary["archive"])) if archive else out


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    root = tmp_path_factory.mktemp("trtdev")
    fake = write_fake_trtexec(root / "bin")
    with SshServer(root / "sshd", extra_config=[f"SetEnv PATH={fake.parent}:/usr/local/bin:/usr/bin:/bin "
                                                f"FAKE_TRTEXEC_LOG={root / 'trtexec.log'}"]) as srv:
        yield srv, root


def test_cpu_bundle_from_build_runs_on_the_device(tmp_path, device):
    srv, _ = device
    bundle, archive = _build("cpu", tmp_path / "cpu", archive=True)
    results = remote_bench(bundle, srv.device, iterations=20, warmup=2, remote_dir=str(tmp_path / "remote"),
                           python=PY, out_dir=tmp_path / "out", plots=False, **srv.ssh_options())
    from edgesqueeze.bench.schema import validate_result

    validate_result(results)
    assert results["backend"]["name"] == "ort" and results["device"]["profile"] == "cpu"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert results["model"]["path"] == manifest["models"]["deploy"]
    assert results["model"]["sha256"] == manifest["files"][manifest["models"]["deploy"]]["sha256"]
    assert results["deploy"]["engine"]["path"] is None  # cpu bundles carry no build_engine.sh
    assert (tmp_path / "out" / "report.md").is_file()
    # the --archive .tar.gz deploys the same files: the device already has them all
    again = deploy(archive, srv.device, remote_dir=str(tmp_path / "remote"), python=PY, **srv.ssh_options())
    assert again["files"]["bytes_sent"] == 0 and again["files"]["verified"] == len(manifest["files"]) + 1


def test_tensorrt_bundle_builds_and_caches_its_engine_on_the_device(tmp_path, device):
    srv, root = device
    bundle = _build("orin-nano", tmp_path / "orin")
    kw = dict(remote_dir=str(tmp_path / "remote"), python=PY, engine_cache=str(tmp_path / "engines"), force=True,
              build_env={"ESQ_PLUGIN": "off"}, **srv.ssh_options())
    first = deploy(bundle, srv.device, **kw)
    engine = first["engine"]
    assert engine["built"] is True and engine["how"] == "build_engine.sh"
    assert engine["path"].startswith(str(tmp_path / "engines") + "/") and ".trt100300.int8." in engine["path"]
    assert Path(engine["path"]).is_file()
    assert any("not a Jetson" in w for w in first["warnings"])

    second = deploy(bundle, srv.device, **kw)
    assert second["engine"]["cached"] is True and second["engine"]["path"] == engine["path"]
    assert second["files"]["bytes_sent"] == 0

    results = remote_bench(bundle, srv.device, iterations=15, **kw)
    assert results["backend"]["name"] == "trtexec" and results["backend"]["version"] == "10.3.0"
    assert f"--loadEngine={engine['path']}" in results["backend"]["command"]
    run = results["runs"][0]
    assert len(run["latency_ms"]["samples"]) == 15
    assert run["compute_ms"]["stats"]["n"] == 15 and run["h2d_ms"]["samples"][0] == pytest.approx(0.01)
    calls = [json.loads(line) for line in (root / "trtexec.log").read_text().splitlines()]
    builds = [c for c in calls if any(a.startswith("--saveEngine=") for a in c)]
    assert len(builds) == 1  # built once, then served from the cache
    assert "--int8" in builds[0] and "--memPoolSize=workspace:1024" in builds[0]
