"""build_engine.sh: trtexec flags per TensorRT version, and the script itself run against a stand-in trtexec.

TensorRT cannot be installed here, so the script runs with a small executable on PATH that prints trtexec's
version banner, records its arguments and writes the engine file; that checks the script's own logic (version
check, model and flag choice, plugin/inlined path, engine naming) end to end in bash.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from engine_script_harness import run_script, script_bundle
from edgesqueeze.bundle import ScriptSpec, plan_engine, render_build_engine_sh
from edgesqueeze.devices import get_profile

BASH = shutil.which("bash")


def _spec(target, precision, *, custom=False, sparsity=False, dla=False):
    p = get_profile(target)
    plan = plan_engine(p.tensorrt, precision, fast_fp16=p.fast_fp16)
    sources = {}
    for kind in [plan.model] + ([plan.alt_model] if plan.alt_model else []):
        for v in (("plugin", "inlined") if custom else ("plain",)):
            rel = f"models/model.{kind}.onnx" if v == "plain" else f"models/model.{kind}.trt_{v}.onnx"
            sources[(kind, v)] = (rel, f"{kind[:4]}{v[:4]}0000")
    calib = "calib/calibration.cache" if precision == "int8" else None
    return ScriptSpec(target=p.name, display_name=p.display_name, sm=p.sm, jetpack=p.jetpack,
                      trt_tag=p.trt_version_tag(), plan=plan, sources=sources, calib_cache=calib, custom_nodes=custom,
                      sparsity=sparsity, dla=dla,
                      cmake_args=("-S", "plugins", "-B", "plugins/build", f"-DCUDA_ARCHITECTURES={p.sm}") if custom
                      else ())


def _cmd_lines(script: str):
    """The lines that build the trtexec command (flags), without comments."""
    return [ln for ln in script.splitlines() if not ln.lstrip().startswith("#")]


def test_tx2_fp16_uses_workspace_and_no_int8():
    s = render_build_engine_sh(_spec("tx2", "fp16"))
    body = "\n".join(_cmd_lines(s))
    assert "--fp16" in body
    assert "--int8" not in body and "--calib" not in body
    assert '"--workspace=${WORKSPACE_MIB}"' in body and "--memPoolSize" not in body
    assert "--buildOnly" in body and "--skipInference" not in body
    assert "EXPECTED_TAG=8201" in body
    assert "models/model.fp32.onnx" in body  # TensorRT 8.2 makes FP16 itself from the FP32 model


def test_tx2_int8_is_refused_by_the_profile():
    from edgesqueeze.errors import UnsupportedError
    with pytest.raises(UnsupportedError):
        get_profile("tx2").require("int8")


def test_orin_nano_int8_uses_mempool_and_qdq_or_cache():
    spec = _spec("orin-nano", "int8")
    s = render_build_engine_sh(spec)
    body = "\n".join(_cmd_lines(s))
    assert '"--memPoolSize=workspace:${WORKSPACE_MIB}"' in body and "--workspace=" not in body
    assert "--skipInference" in body
    # default: explicit quantization from the QDQ model; ESQ_INT8_SOURCE=cache: FP32 model + cache
    assert "KIND=int8_qdq" in body and "models/model.int8_qdq.onnx" in body
    assert "cache) KIND=fp32; PREC_FLAGS=(--int8 --fp16 --calib=calib/calibration.cache)" in body
    assert "EXPECTED_TAG=100300" in body
    assert "--stronglyTyped" not in body


def test_thor_int8_relies_on_the_qdq_model_only():
    s = render_build_engine_sh(_spec("thor", "int8"))
    body = "\n".join(_cmd_lines(s))
    assert "KIND=int8_qdq" in body and "PREC_FLAGS=(--stronglyTyped)" in body
    for flag in ("--int8", "--fp16", "--calib", "ESQ_INT8_SOURCE"):
        assert flag not in body, flag


def test_xavier_int8_uses_the_calibration_cache_with_mempool():
    plan = plan_engine("8.5.2", "int8")
    assert plan.model == "fp32" and plan.uses_calib_cache
    assert plan.workspace_flag.startswith("--memPoolSize") and plan.build_only_flag == "--buildOnly"
    assert plan.plugin_flag == "--plugins"
    assert plan_engine("8.2.1", "int8").workspace_flag == "--workspace=1024"


def test_strongly_typed_fp16_uses_the_fp16_model():
    plan = plan_engine("10.13", "fp16")
    assert plan.model == "fp16" and plan.precision_flags == ["--stronglyTyped"]
    assert plan_engine("10.3", "fp16").precision_flags == ["--fp16"]
    assert plan_engine("11.0", "int8").precision_flags == ["--stronglyTyped"]


def test_sparsity_and_dla_flags():
    s = render_build_engine_sh(_spec("agx-orin", "int8", sparsity=True, dla=True))
    assert "--sparsity=enable" in s
    assert '"--useDLACore=$DLA_CORE" --allowGPUFallback' in s
    assert ".dla$DLA_CORE." in s
    plain = render_build_engine_sh(_spec("agx-orin", "int8"))
    assert "--sparsity" not in plain and "useDLACore" not in plain


@pytest.mark.skipif(BASH is None, reason="bash not found")
@pytest.mark.parametrize("target,precision", [("tx2", "fp16"), ("nano", "fp32"), ("xavier-nx", "int8"),
                                              ("orin-nano", "int8"), ("thor", "int8"), ("thor", "fp16"),
                                              ("agx-orin", "fp16")])
@pytest.mark.parametrize("custom", [False, True])
def test_every_script_is_valid_bash(tmp_path, target, precision, custom):
    path = tmp_path / "build_engine.sh"
    path.write_text(render_build_engine_sh(_spec(target, precision, custom=custom)))
    r = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


FAKE_TRTEXEC = """#!/usr/bin/env bash
# stand-in for trtexec: banner on --help, records the arguments, writes the engine
if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_TAG}] # trtexec --help"; exit 0; fi
printf '%s\\n' "$@" > "${FAKE_ARGS}"
printf '%s\\n' "$@" >> "${FAKE_ARGS}.all"
for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}";; esac; done
"""


def _bundle_dir(tmp_path, spec):
    return script_bundle(tmp_path, spec, FAKE_TRTEXEC)


def _run(b, fake, tag, *args, **env):
    return run_script(b, fake, tag, *args, **env)


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_script_runs_trtexec_with_the_planned_flags(tmp_path):
    b, fake = _bundle_dir(tmp_path, _spec("orin-nano", "int8"))
    r = _run(b, fake, 100300)
    assert r.returncode == 0, r.stderr
    args = (b / "args.txt").read_text().split("\n")
    assert "--onnx=models/model.int8_qdq.onnx" in args
    assert "--memPoolSize=workspace:1024" in args and "--int8" in args and "--skipInference" in args
    engine = [a for a in args if a.startswith("--saveEngine=")][0].split("=", 1)[1]
    assert engine == "engines/model.trt100300.int8.int8plai0000.engine"
    assert (b / engine).exists()
    # second run: the engine is there, trtexec is not called again
    (b / "args.txt").unlink()
    r = _run(b, fake, 100300)
    assert r.returncode == 0 and "already built" in r.stdout and not (b / "args.txt").exists()
    # the calibration-cache route
    r = _run(b, fake, 100300, ESQ_INT8_SOURCE="cache", ESQ_REBUILD="1", WORKSPACE_MIB="512")
    args = (b / "args.txt").read_text().split("\n")
    assert "--onnx=models/model.fp32.onnx" in args and "--calib=calib/calibration.cache" in args
    assert "--memPoolSize=workspace:512" in args


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_script_refuses_another_tensorrt_major(tmp_path):
    b, fake = _bundle_dir(tmp_path, _spec("tx2", "fp16"))
    r = _run(b, fake, 100300)
    assert r.returncode == 1
    assert "made for TensorRT 8.2.1 (v8201) but trtexec is v100300" in r.stderr
    r = _run(b, fake, 8203, "--dry-run")  # same major, other patch: a warning
    assert r.returncode == 0 and "warning: bundle made for TensorRT 8.2.1" in r.stdout
    assert "--workspace=1024" in r.stdout and "--fp16" in r.stdout and not (b / "args.txt").exists()


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_script_falls_back_to_the_inlined_model_without_a_plugin(tmp_path):
    spec = _spec("orin-nano", "fp16", custom=True)
    b, fake = _bundle_dir(tmp_path, spec)
    (b / "plugins").mkdir()
    (b / "plugins" / "CMakeLists.txt").write_text("this is not cmake(\n")  # the plugin build must fail
    r = _run(b, fake, 100300, "--dry-run")  # a dry run builds nothing and shows the inlined route
    assert r.returncode == 0, r.stderr
    assert "not built yet" in r.stdout and "inlined path" in r.stdout
    assert not (b / "plugins" / "build").exists()
    r = _run(b, fake, 100300)
    assert r.returncode == 0, r.stderr
    assert "the plugin library did not build" in r.stdout and "inlined path" in r.stdout
    args = (b / "args.txt").read_text().split("\n")
    assert "--onnx=models/model.fp32.trt_inlined.onnx" in args and not any("Plugins" in a for a in args)
    r = _run(b, fake, 100300, ESQ_PLUGIN="on", ESQ_REBUILD="1")
    assert r.returncode == 1 and "plugin library did not build" in r.stderr + r.stdout
    r = _run(b, fake, 100300, "--dry-run", ESQ_PLUGIN="off")
    assert "ESQ_PLUGIN=off" in r.stdout and "inlined path" in r.stdout


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_dry_run_without_trtexec(tmp_path):
    b, _ = _bundle_dir(tmp_path, _spec("thor", "int8"))
    env = {k: v for k, v in os.environ.items() if k != "TRTEXEC"}
    env["PATH"] = "/usr/bin:/bin"
    r = subprocess.run([BASH, str(b / "build_engine.sh"), "--dry-run"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "trtexec not found (dry run goes on)" in r.stdout and "--stronglyTyped" in r.stdout
    assert "model.trt110000" not in r.stdout and "engines/model.trt" in r.stdout
    r = subprocess.run([BASH, str(b / "build_engine.sh")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "trtexec not found" in r.stderr


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_script_takes_the_plugin_path_when_the_library_builds(tmp_path):
    """A CMake project that builds a real shared library (no TensorRT needed) stands in for the plugin tree."""
    if shutil.which("cmake") is None or shutil.which("cc") is None:
        pytest.skip("cmake or a C compiler not found")
    spec = _spec("tx2", "fp16", custom=True)
    spec = ScriptSpec(**{**spec.__dict__, "cmake_args": ("-S", "plugins", "-B", "plugins/build")})
    b, fake = _bundle_dir(tmp_path, spec)
    (b / "plugins").mkdir()
    (b / "plugins" / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.10)\nproject(p C)\nadd_library(edgesqueeze_plugins SHARED p.c)\n")
    (b / "plugins" / "p.c").write_text("int esq_plugin_marker(void) { return 1; }\n")
    r = _run(b, fake, 8201)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "plugin path" in r.stdout
    args = (b / "args.txt.all").read_text().split("\n")  # every call: the plugin engine, then the native one
    assert "--onnx=models/model.fp32.trt_plugin.onnx" in args
    assert any(a.startswith("--plugins=plugins/build/libedgesqueeze_plugins.so") for a in args)
