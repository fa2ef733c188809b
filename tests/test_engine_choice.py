"""Plugins pay or stand aside: build_engine.sh builds the plugin engine and the native one (custom ops inlined),
times both with trtexec and keeps the faster, recording both timings and the choice next to the engine.

The stand-in trtexec reports a chosen median GPU compute time per engine, in trtexec's own summary format.
"""
from __future__ import annotations

import json
import shutil

import pytest

from engine_script_harness import run_script, script_bundle
from edgesqueeze.bundle import ScriptSpec
from tests.test_bundle_engine_script import _spec

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None or shutil.which("cmake") is None or shutil.which("cc") is None,
                                reason="bash, cmake or a C compiler not found")

FAKE_TRTEXEC = """#!/usr/bin/env bash
if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_TAG}] # trtexec --help"; exit 0; fi
printf '%s\\n' "$*" >> "${FAKE_ARGS}"
for a in "$@"; do case "$a" in
  --saveEngine=*) echo engine > "${a#--saveEngine=}" ;;
  --loadEngine=*plug0000.engine) MS=$FAKE_PLUGIN_MS ;;
  --loadEngine=*inli0000.engine) MS=$FAKE_NATIVE_MS ;;
esac; done
if [ -n "${MS:-}" ]; then
  echo "[05/01/2025-10:00:00] [I] Latency: min = 1.9 ms, max = 3.1 ms, mean = 2.2 ms, median = 2.1 ms"
  echo "[05/01/2025-10:00:00] [I] GPU Compute Time: min = 0.5 ms, max = 9.5 ms, mean = 5.25 ms, median = $MS ms, percentile(99%) = 9.1 ms"
fi
"""


def _bundle(tmp_path, target="orin-nano", tag=100300):
    spec = _spec(target, "fp16", custom=True)
    spec = ScriptSpec(**{**spec.__dict__, "cmake_args": ("-S", "plugins", "-B", "plugins/build")})
    b, fake = script_bundle(tmp_path, spec, FAKE_TRTEXEC)
    (b / "plugins").mkdir()
    (b / "plugins" / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.10)\nproject(p C)\nadd_library(edgesqueeze_plugins SHARED p.c)\n")
    (b / "plugins" / "p.c").write_text("int esq_plugin_marker(void) { return 1; }\n")
    return b, fake, tag


def _run(b, fake, tag, plugin_ms, native_ms, **env):
    return run_script(b, fake, tag, record="calls.txt", FAKE_PLUGIN_MS=str(plugin_ms),
                      FAKE_NATIVE_MS=str(native_ms), **env)


def _engine_line(stdout):
    return [ln for ln in stdout.splitlines() if ln.startswith("edgesqueeze: engine: ")][-1].split(": ", 2)[2]


@pytest.mark.parametrize("plugin_ms,native_ms,chosen", [(0.8, 1.3, "plugin"), (1.6, 1.1, "native")])
def test_the_faster_engine_is_kept(tmp_path, plugin_ms, native_ms, chosen):
    b, fake, tag = _bundle(tmp_path)
    r = _run(b, fake, tag, plugin_ms, native_ms)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = (b / "calls.txt").read_text().splitlines()
    builds = [c for c in calls if "--saveEngine=" in c]
    assert len(builds) == 2
    assert "--onnx=models/model.fp32.trt_plugin.onnx" in builds[0] and "Plugins=" in builds[0]
    assert "--onnx=models/model.fp32.trt_inlined.onnx" in builds[1] and "Plugins=" not in builds[1]
    timings = [c for c in calls if "--loadEngine=" in c]
    assert len(timings) == 2 and all("--iterations=" in c for c in timings)
    assert "Plugins=" in timings[0] and "Plugins=" not in timings[1]  # the plugin engine needs its library
    plugin_engine = "engines/model.trt100300.fp16.fp32plug0000.engine"
    choice = json.loads((b / (plugin_engine + ".choice.json")).read_text())
    assert choice["plugin_ms"] == plugin_ms and choice["native_ms"] == native_ms and choice["chosen"] == chosen
    want = plugin_engine if chosen == "plugin" else "engines/model.trt100300.fp16.fp32inli0000.engine"
    assert choice["engine"] == want and _engine_line(r.stdout) == want
    assert f"keeping the {chosen} engine" in r.stdout
    # a second run finds the engines and reports the same choice, without calling trtexec to build
    (b / "calls.txt").unlink()
    r = _run(b, fake, tag, plugin_ms, native_ms)
    assert r.returncode == 0 and "already built" in r.stdout and _engine_line(r.stdout.replace(
        "engine already built: ", "engine: ").split(" (ESQ_REBUILD")[0]) == want
    assert not (b / "calls.txt").exists() or "--saveEngine" not in (b / "calls.txt").read_text()


def test_plugin_on_skips_the_comparison(tmp_path):
    b, fake, tag = _bundle(tmp_path)
    r = _run(b, fake, tag, 5.0, 1.0, ESQ_PLUGIN="on")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--loadEngine" not in (b / "calls.txt").read_text() and "keeping" not in r.stdout
    assert _engine_line(r.stdout).endswith("fp32plug0000.engine")


def test_deploy_reads_and_shows_the_choice():
    from edgesqueeze.cli.deploy import engine_choice_text
    from edgesqueeze.deploy.core import _engine_choice

    text = ('edgesqueeze: built x\nedgesqueeze: engine choice: {"plugin_ms": 1.6, "native_ms": 1.1, "chosen": '
            '"native", "plugin_engine": "a", "native_engine": "b", "engine": "b"}\nedgesqueeze: engine: b\n')
    choice = _engine_choice(text)
    assert choice == {"plugin_ms": 1.6, "native_ms": 1.1, "chosen": "native"}
    assert engine_choice_text(choice) == "plugin 1.6 ms, native 1.1 ms (median GPU compute): native"
    assert _engine_choice("edgesqueeze: engine: b\n") is None


def test_bench_summary_shows_the_device_engine_choice():
    """bench --device: results carry deploy.engine.engine_choice; the summary prints both timings and the pick."""
    from pathlib import Path

    from edgesqueeze.backends import get_runner
    from edgesqueeze.bench import run_benchmark
    from edgesqueeze.cli.bench import summary_text
    from edgesqueeze.data import open_data
    from edgesqueeze.model import load_model

    model = load_model(Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits_cnn.onnx")
    with get_runner("ort", model) as runner:
        result = run_benchmark(runner, open_data(None, model), iterations=5, warmup=1, power="none")
    result["deploy"] = {"engine": {"engine_choice": {"plugin_ms": 1.6, "native_ms": 1.1, "chosen": "native"}}}
    text = summary_text(result)
    assert "engine choice:" in text and "native" in text and "1.6" in text and "1.1" in text


def test_build_states_which_engine_it_expects_for_custom_nodes(tmp_path):
    from pathlib import Path

    from edgesqueeze.pipeline import build

    model = Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits_cnn.onnx"
    s = build(model, "orin-nano", tmp_path / "b", precision="fp16", progress=False)
    assert s["plugin_expectation"].startswith("expects the plugin engine: 1 fused block(s)")
    assert "keeps the faster" in s["plugin_expectation"]
    assert build(model, "cpu", tmp_path / "c", progress=False).get("plugin_expectation") is None
