"""What a real board would hit: each test failed before its fix.

* build_engine.sh handed trtexec a calibration cache whose header named the bundle's TensorRT (8.5.2) on a board
  with another minor version (Xavier NX on JetPack 5.0.2: 8.4.1); trtexec skips such a cache and calibrates on
  random data, silently. The script now re-tags a copy, and refuses a cache from another major version.
* TensorRT 10's Python API: a plugin library exporting getCreators does not register itself when dlopen'ed; the
  device runner now loads it through the plugin registry's load_library.
* Device numbers: Xavier NX 8 GB has 51.2 GB/s (the 16 GB module 59.7), Thor's tensor peaks follow its 20 SMs,
  and ``plugins check`` covers Thor's sm_110 by default.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types

import pytest

from engine_script_harness import run_script, script_bundle
from edgesqueeze.backends.calib_cache import read_calibration_cache, write_calibration_cache
from edgesqueeze.deploy import device_runner
from edgesqueeze.devices import get_profile, list_profiles
from tests.test_bundle_engine_script import _spec

BASH = shutil.which("bash")

# records its arguments and the header of the cache --calib names (the calibration cache trtexec would read)
FAKE_TRTEXEC = """#!/usr/bin/env bash
if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_TAG}] # trtexec --help"; exit 0; fi
printf '%s\\n' "$@" > "${FAKE_ARGS}"
for a in "$@"; do case "$a" in
  --calib=*) head -n 1 "${a#--calib=}" > "${FAKE_ARGS}.calib" ;;
  --saveEngine=*) echo engine > "${a#--saveEngine=}" ;;
esac; done
"""


def _bundle(tmp_path, spec, cache_version):
    b, fake = script_bundle(tmp_path, spec, FAKE_TRTEXEC)
    write_calibration_cache(b / "calib" / "calibration.cache", {"input": 2.5, "conv1_out": 6.0}, cache_version)
    return b, fake


def _run(b, fake, tag, *args, **env):
    return run_script(b, fake, tag, *args, **env)


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_xavier_nx_on_jetpack_502_gets_a_retagged_cache(tmp_path):
    """Bundle for TensorRT 8.5.2, board with 8.4.1: trtexec must read a cache headed TRT-8401-..."""
    b, fake = _bundle(tmp_path, _spec("xavier-nx", "int8"), "8.5.2")
    r = _run(b, fake, 8401)
    assert r.returncode == 0, r.stderr
    args = (b / "args.txt").read_text().split("\n")
    calib = [a for a in args if a.startswith("--calib=")][0].split("=", 1)[1]
    assert calib == "engines/calibration.trt8401.cache"
    assert (b / "args.txt.calib").read_text().strip() == "TRT-8401-EntropyCalibration2"
    assert "re-labelled TRT-8401-EntropyCalibration2" in r.stdout
    # the scales are the bundle's, unchanged; the bundle's own cache is untouched
    assert read_calibration_cache(b / calib)[1] == read_calibration_cache(b / "calib/calibration.cache")[1]
    assert (b / "calib/calibration.cache").read_text().startswith("TRT-8502-EntropyCalibration2\n")


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_matching_cache_is_passed_as_it_is(tmp_path):
    b, fake = _bundle(tmp_path, _spec("xavier-nx", "int8"), "8.5.2")
    r = _run(b, fake, 8502)
    assert r.returncode == 0, r.stderr
    assert "--calib=calib/calibration.cache" in (b / "args.txt").read_text().split("\n")
    assert "re-labelled" not in r.stdout and not (b / "engines" / "calibration.trt8502.cache").exists()


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_cache_from_another_major_is_refused(tmp_path):
    b, fake = _bundle(tmp_path, _spec("xavier-nx", "int8"), "10.3")  # a cache made for TensorRT 10
    r = _run(b, fake, 8502)
    assert r.returncode == 1 and not (b / "args.txt").exists()
    assert "written for TensorRT v100300 and this trtexec is v8502" in r.stderr
    # even when the engine's own version check is forced past
    b2, fake2 = _bundle(tmp_path / "2", _spec("orin-nano", "int8"), "8.5.2")
    r = _run(b2, fake2, 100300, ESQ_INT8_SOURCE="cache")
    assert r.returncode == 1 and "written for TensorRT v8502 and this trtexec is v100300" in r.stderr


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_dry_run_shows_the_retagged_cache_without_writing(tmp_path):
    b, fake = _bundle(tmp_path, _spec("xavier-nx", "int8"), "8.5.2")
    r = _run(b, fake, 8401, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "--calib=engines/calibration.trt8401.cache" in r.stdout and not (b / "engines").exists()


# ---------------------------------------------------------------- TensorRT 10 plugin loading (device runner)
@pytest.mark.parametrize("version,exports,method", [
    ("8.2.1.8", False, "ctypes"), ("8.5.2", True, "ctypes"), ("10.3.0", True, "registry"),
    ("10.0.1", True, "registry"), ("10.3.0", False, "ctypes"), ("11.0", True, "registry")])
def test_plugin_load_method(version, exports, method):
    assert device_runner.plugin_load_method(version, exports) == method


class _Lib:
    def __init__(self, exports):
        if exports:
            self.getCreators = object()


def _fake_trt(version, calls, ok=True):
    registry = types.SimpleNamespace(load_library=lambda p: calls.append(("load_library", p)) or (object() if ok
                                                                                                  else None))
    return types.SimpleNamespace(__version__=version, get_plugin_registry=lambda: registry)


@pytest.mark.parametrize("version,exports,registry", [("10.3.0", True, True), ("8.5.2", False, False),
                                                      ("10.3.0", False, False)])
def test_load_plugin_library_uses_the_registry_on_10(version, exports, registry):
    calls = []
    fake_ctypes = types.SimpleNamespace(RTLD_GLOBAL=256,
                                        CDLL=lambda p, mode=0: calls.append(("CDLL", p, mode)) or _Lib(exports))
    device_runner.load_plugin_library(_fake_trt(version, calls), fake_ctypes, "lib/libp.so")
    path = os.path.abspath("lib/libp.so")
    assert calls[0] == ("CDLL", path, 256)
    assert (("load_library", path) in calls) is registry


def test_load_plugin_library_failure_is_an_error():
    calls = []
    fake_ctypes = types.SimpleNamespace(RTLD_GLOBAL=256, CDLL=lambda p, mode=0: _Lib(True))
    with pytest.raises(device_runner.RunnerError, match="could not load the plugin library"):
        device_runner.load_plugin_library(_fake_trt("10.3.0", calls, ok=False), fake_ctypes, "libp.so")


# ---------------------------------------------------------------- device numbers
def test_xavier_nx_memory_variants():
    nx = get_profile("xavier-nx")
    assert nx.peak_bandwidth_gbs == 51.2 and nx.emc_max_mhz == 1600 and nx.memory_gb == 8
    assert nx.emc_bandwidth(100.0) / 1e9 == pytest.approx(51.2)
    big = get_profile("xavier-nx-16gb")
    assert big.peak_bandwidth_gbs == 59.7 and big.emc_max_mhz == 1866 and big.memory_gb == 16
    assert big.emc_bandwidth(100.0) / 1e9 == pytest.approx(59.7, rel=1e-3)
    assert big.compute_capability == nx.compute_capability and big.tensorrt == nx.tensorrt
    names = [p.name for p in list_profiles()]
    assert names.index("xavier-nx-16gb") == names.index("xavier-nx") + 1
    variants = {v["name"]: v for v in nx.to_dict()["memory_variants"]}
    assert variants["8gb"]["default"] and "Data Sheet" in variants["16gb"]["source"]
    assert any("59.7" in s for s in big.sources)


def test_devices_command_shows_both_xavier_nx_modules():
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "devices", "xavier-nx"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "peak_bandwidth_gbs: 51.2" in r.stdout and "59.7 GB/s" in r.stdout and "51.2 GB/s" in r.stdout


def test_thor_peaks_follow_its_sm_count():
    thor = get_profile("thor")
    sms = thor.extra["sm_count"]
    assert sms * 128 == thor.cuda_cores == 2560 and thor.tensor_cores == sms * 4
    g = thor.peak_gflops
    assert g["fp32"] == pytest.approx(thor.cuda_cores * 2 * thor.gpu_max_clock_mhz / 1000)
    assert g["fp16"] == pytest.approx(thor.tensor_cores * 2048 * thor.gpu_max_clock_mhz / 1000)
    assert g["fp8"] == 2 * g["fp16"] and g["fp4"] == 2 * g["fp8"] and g["fp4_sparse"] == 2 * g["fp4"]
    assert g["fp4_sparse"] / 1000 == pytest.approx(2070, rel=0.01)  # NVIDIA: up to 2070 FP4 TFLOPS (sparse)
    assert "2070" in thor.notes and any("forums.developer.nvidia.com" in s for s in thor.sources)


def test_plugins_check_covers_thor_by_default():
    from edgesqueeze.plugins.check import CHECK_ARCHS

    assert "110" in CHECK_ARCHS and {"53", "62", "72", "87"} <= set(CHECK_ARCHS)
