"""Rules written once: the copies that must exist (the on-device runner imports nothing of ours) are pinned here."""
import os
import re

import pytest

from edgesqueeze.backends import calib_cache
from edgesqueeze.backends.trt_plan import plan_build, strongly_typed
from edgesqueeze.bundle.engine_plan import TRTEXEC_FLAGS, plan_engine
from edgesqueeze.bundle.engine_script import ScriptSpec, render_build_engine_sh
from edgesqueeze.deploy import device_runner

VERSIONS = ["8.2.1", "8.4.3", "8.5.2", "10.3", "10.13", "11.0"]


def _script(version, precision="fp16"):
    plan = plan_engine(version, precision)
    kinds = [plan.model] + ([plan.alt_model] if plan.alt_model else [])
    spec = ScriptSpec(target="t", display_name="T", sm=87, jetpack=None, trt_tag="8201", plan=plan,
                      sources={(k, "plain"): (f"models/model.{k}.onnx", "k") for k in kinds})
    return render_build_engine_sh(spec)


def _manifest(precision="fp16", deploy="models/model.fp16.onnx", mib=1024):
    return {"precision": precision, "models": {"deploy": deploy},
            "tensorrt": {"trtexec_flags": TRTEXEC_FLAGS, "workspace_mib": mib}}


@pytest.mark.parametrize("version", VERSIONS)
def test_strongly_typed_threshold_is_the_same_locally_and_in_build_engine_sh(version):
    script = _script(version)
    local = plan_build(version, "fp16").strongly_typed
    assert local == plan_engine(version, "fp16").strongly_typed == strongly_typed(version)
    assert local == ("--stronglyTyped" in script)
    assert plan_build(version, "int8", has_qdq=True).strongly_typed == plan_engine(version, "int8").strongly_typed


@pytest.mark.parametrize("version", VERSIONS)
def test_workspace_flag_is_the_same_in_build_engine_sh_and_the_device_runner(version):
    major, minor = (int(x) for x in version.split(".")[:2])
    runner = device_runner.trtexec_build_flags(_manifest(mib=512), None, (major, minor), None)
    plan = plan_engine(version, "fp16", workspace_mib=512)
    assert runner[0] == plan.workspace_flag
    assert runner[0].replace("512", "${WORKSPACE_MIB}") in _script(version)
    assert ("--stronglyTyped" in runner) == plan.strongly_typed
    # the device runner takes the version from trtexec's banner tag
    tag = calib_cache.version_tag(version)
    assert device_runner.version_tuple(tag)[:2] == (major, minor)


def test_device_runner_flags_follow_the_manifest_table():
    m = _manifest("int8", "models/model.fp32.onnx")
    assert device_runner.trtexec_build_flags(m, "c.cache", (8, 5), None) == [
        "--memPoolSize=workspace:1024", "--fp16", "--int8", "--calib=c.cache"]
    assert device_runner.trtexec_build_flags(m, "c.cache", (8, 2), "lib.so") == [
        "--workspace=1024", "--fp16", "--int8", "--calib=c.cache", "--plugins=lib.so"]
    assert device_runner.trtexec_build_flags(m, "c.cache", (10, 13), None) == [
        "--memPoolSize=workspace:1024", "--stronglyTyped"]


SAMPLES = [
    "TRT-8201-EntropyCalibration2\ninput: 3c010a14\nconv1_out: 3d4a8f12\n",
    "TRT-8502-MinMaxCalibration\r\nimage:0: 0\r\nblock/conv: 3f800000\r\n\r\n",
    "\nTRT-100300-EntropyCalibration2\nz: 0\n",
    "not a cache\nx: 1\n",
    "",
]


def test_calibration_cache_header_pattern_is_the_one_module_s():
    assert device_runner.CALIB_HEADER_PATTERN == calib_cache.HEADER_PATTERN
    assert device_runner.CALIB_ALGORITHM == calib_cache.DEFAULT_ALGORITHM


@pytest.mark.parametrize("text", SAMPLES)
def test_device_runner_retags_caches_like_the_one_module(text):
    for tag in ("8201", "100300", "101300"):
        ours = device_runner.retag_text(text, tag)
        assert ours == calib_cache.retag_text(text, tag)
        if re.search(calib_cache.HEADER_PATTERN, text.strip().split("\n")[0] if text.strip() else "x"):
            assert calib_cache.retag_cache(text, tag) == ours
            assert calib_cache.parse_cache(ours)[2] == calib_cache.parse_cache(text)[2]
            assert calib_cache.parse_cache(ours)[0] == tag


def test_device_runner_relabels_a_cache_for_the_device_s_trtexec(tmp_path):
    cache = tmp_path / "calibration.cache"
    cache.write_text(SAMPLES[0])
    warnings = []
    same, tmp = device_runner.calib_for_trtexec(str(cache), "8201", warnings)
    assert (same, tmp, warnings) == (str(cache), None, [])
    path, tmp = device_runner.calib_for_trtexec(str(cache), "100300", warnings)
    try:
        assert path == tmp and open(path).read().startswith("TRT-100300-EntropyCalibration2\n") and warnings
    finally:
        os.unlink(tmp)
