"""TensorRT runner: version decisions, engine-cache keys and calibration caches here; real builds where a GPU is."""
import struct
from pathlib import Path

import numpy as np
import pytest

from edgesqueeze._lazy import available
from edgesqueeze.backends.calib_cache import cache_bytes_for, format_cache, parse_cache
from edgesqueeze.backends.trt_plan import engine_cache_key, parse_shape_profiles, plan_build
from edgesqueeze.devices import get_profile
from edgesqueeze.errors import InputError, MissingDependencyError, UnsupportedError

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits" / "digits_cnn.onnx"


def test_api_flavour_follows_the_version_not_string_order():
    old = plan_build("8.2.1", "fp16")
    assert old.workspace_api == "max_workspace_size" and old.io_api == "bindings" and old.explicit_batch_flag
    assert plan_build("8.4.3", "fp32").workspace_api == "memory_pool_limit"
    mid = plan_build("8.5.2", "fp16")
    assert mid.io_api == "tensors" and mid.explicit_batch_flag
    new = plan_build("10.3.0", "fp16")
    assert not new.explicit_batch_flag and new.flags == ("FP16",)
    # "10.13" < "8.5" as strings; as versions it is newer
    assert plan_build("10.13", "fp32").io_api == "tensors"


def test_precision_from_the_target():
    assert plan_build("8.2.1", "auto", profile=get_profile("tx2")).precision == "fp16"
    with pytest.raises(UnsupportedError, match="no INT8"):
        plan_build("8.2.1", "int8", profile=get_profile("tx2"), has_calibration=True)
    p = plan_build("8.5.2", "auto", profile=get_profile("xavier-nx"), has_calibration=True)
    assert p.precision == "int8" and p.flags == ("FP16", "INT8") and p.calibrator == "cache"
    q = plan_build("10.3", "int8", profile=get_profile("orin-nano"), has_qdq=True)
    assert q.calibrator is None and q.explicit_quantization and "INT8" in q.flags
    with pytest.raises(UnsupportedError, match="calibration cache"):
        plan_build("10.3", "int8")
    with pytest.raises(InputError, match="unknown precision"):
        plan_build("10.3", "bf12")


def test_tensorrt_11_is_strongly_typed_only():
    p = plan_build("11.0", "int8", has_qdq=True)
    assert p.strongly_typed and p.flags == () and p.calibrator is None
    with pytest.raises(UnsupportedError, match="no implicit INT8"):
        plan_build("11.0", "int8", has_calibration=True)
    assert any("strongly typed" in n for n in plan_build("11.0", "fp16").notes)


def test_sparsity_and_dla():
    p = plan_build("8.5.2", "int8", profile=get_profile("xavier-nx"), has_qdq=True, sparse=True, dla_core=1)
    assert "SPARSE_WEIGHTS" in p.flags and "GPU_FALLBACK" in p.flags and p.dla_core == 1
    assert any("no 2:4" in n for n in p.notes)
    with pytest.raises(UnsupportedError, match="DLA"):
        plan_build("10.3", "fp16", profile=get_profile("orin-nano"), dla_core=0)
    with pytest.raises(InputError):
        plan_build("10.3", "fp16", dla_core=-1)


def test_engine_cache_key_changes_with_everything_that_matters():
    base = dict(trt_version="8.5.2", gpu_name="Orin", compute_capability=(8, 7), precision="fp16",
                model_sha256="a" * 64, options={"dla": None})
    k = engine_cache_key(**base)
    assert k == engine_cache_key(**base) and len(k) == 24
    for change in ({"trt_version": "8.6.2"}, {"gpu_name": "Xavier"}, {"compute_capability": (7, 2)},
                   {"precision": "int8"}, {"model_sha256": "b" * 64}, {"options": {"dla": 0}}):
        assert engine_cache_key(**dict(base, **change)) != k
    assert engine_cache_key(**dict(base, trt_version="8.5.2.0")) == k  # same version, spelled differently


def test_shape_profiles():
    assert parse_shape_profiles({"x": ([1, 3], [4, 3], [8, 3])}) == {"x": ((1, 3), (4, 3), (8, 3))}
    with pytest.raises(InputError, match="min <= opt <= max"):
        parse_shape_profiles({"x": ([4, 3], [1, 3], [8, 3])})
    with pytest.raises(InputError, match="min, opt, max"):
        parse_shape_profiles({"x": ([1, 3],)})


def test_calibration_cache_round_trip_and_tensorrt_md_example():
    tag, algo, scales = parse_cache("TRT-8203-EntropyCalibration2\ninput: 3c010a14\nconv1_out: 3d4a8f12\nz: 0\n")
    assert (tag, algo) == ("8203", "EntropyCalibration2")
    assert scales["input"] == struct.unpack(">f", bytes.fromhex("3c010a14"))[0]
    assert scales["z"] == 0.0
    text = format_cache(scales, "8203")
    assert parse_cache(text)[2] == scales
    for bad in ("", "TRT-x-Entropy\n", "TRT-8201-EntropyCalibration2\nnocolon\n", "TRT-8201-MinMax\nt: xyz\n"):
        with pytest.raises(InputError):
            parse_cache(bad)


def test_cache_is_relabelled_for_the_running_tensorrt(tmp_path):
    cache = tmp_path / "calibration.cache"
    cache.write_text("TRT-8201-EntropyCalibration2\ninput: 3c010a14\n")
    same, note = cache_bytes_for(cache, "8201")
    assert same == cache.read_bytes() and "TRT-8201" in note
    other, note = cache_bytes_for(cache, "100300")
    assert other.startswith(b"TRT-100300-EntropyCalibration2\n") and "re-labelled" in note
    assert parse_cache(other.decode())[2] == parse_cache(cache.read_text())[2]
    from_amax, _ = cache_bytes_for({"input": 127.0 * 0.5}, "8502")
    assert parse_cache(from_amax.decode())[2] == {"input": 0.5}
    with pytest.raises(InputError, match="cannot read"):
        cache_bytes_for(tmp_path / "missing.cache", "8201")


def test_runner_without_tensorrt_says_what_to_install(tmp_path):
    from edgesqueeze.backends import TrtRunner

    if available("tensorrt") and available("pycuda.driver"):
        pytest.skip("TensorRT is installed here")
    if not DIGITS.exists():
        pytest.skip("example model not built yet")
    r = TrtRunner(DIGITS, precision="fp16", cache_dir=tmp_path)
    with pytest.raises(MissingDependencyError, match="edgesqueeze\\[trt\\]"):
        r.activate()
    with pytest.raises(InputError, match="plugin library not found"):
        TrtRunner(DIGITS, plugins=[tmp_path / "libnope.so"])
    with pytest.raises(InputError, match="no such engine"):
        TrtRunner(tmp_path / "x.engine")


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_engine_matches_onnxruntime_and_is_cached(tmp_path):
    from edgesqueeze.backends import OrtRunner, TrtRunner

    x = {"input": np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)}
    with OrtRunner(DIGITS) as ort_runner:
        ref = ort_runner.infer(x)
    with TrtRunner(DIGITS, precision="fp32", cache_dir=tmp_path) as r:
        got = r.infer(x)
        times = r.device_times()
        assert not r.cache_hit
    np.testing.assert_allclose(got["logits"], ref["logits"], rtol=1e-3, atol=1e-4)
    assert times["compute_ms"] > 0 and times["h2d_ms"] >= 0 and times["d2h_ms"] >= 0
    with TrtRunner(DIGITS, precision="fp32", cache_dir=tmp_path) as again:
        assert again.cache_hit
        np.testing.assert_allclose(again.infer(x)["logits"], got["logits"], rtol=1e-6)
    with TrtRunner(DIGITS, precision="fp16", cache_dir=tmp_path) as half:
        np.testing.assert_allclose(half.infer(x)["logits"], ref["logits"], rtol=2e-2, atol=2e-2)


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_bench_reports_compute_and_copies_separately(tmp_path):
    from edgesqueeze.backends import TrtRunner
    from edgesqueeze.bench import run_benchmark

    x = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    r = run_benchmark(TrtRunner(DIGITS, precision="fp16", cache_dir=tmp_path), x, iterations=50, power="none")
    run = r["runs"][0]
    assert run["compute_ms"]["stats"]["n"] == 50 and run["h2d_ms"] and run["d2h_ms"]
    assert run["compute_ms"]["stats"]["median"] <= run["latency_ms"]["stats"]["median"]


def test_cache_only_calibrator_contract():
    """The calibrator's methods as TensorRT calls them (a plain base class stands in for TensorRT's here)."""
    import types

    from edgesqueeze.backends.calib_cache import make_cache_calibrator

    class Base:
        def __init__(self):
            self.base_initialised = True

    cal = make_cache_calibrator(types.SimpleNamespace(IInt8EntropyCalibrator2=Base), b"TRT-8201-EntropyCalibration2\n")
    assert isinstance(cal, Base) and cal.base_initialised
    assert cal.get_batch_size() == 1 and cal.get_batch(["input"]) is None
    assert cal.read_calibration_cache() == b"TRT-8201-EntropyCalibration2\n"
    assert cal.write_calibration_cache(b"other") is None
    assert cal.read_calibration_cache() == b"TRT-8201-EntropyCalibration2\n"  # never overwritten
