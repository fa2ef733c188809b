"""`edgesqueeze plugins bench`: the reason and exit code 6 without a GPU, the printing of a recorded --json result,
the cost model, and the benchmark harness compiling for Orin (its timings need a GPU: none is measured here)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from edgesqueeze.plugins import bench
from edgesqueeze.plugins import check as chk
from edgesqueeze.plugins.build import detect_arch
from edgesqueeze.plugins.sources import plugin_source_dir


def test_no_gpu_exits_6_with_the_reason(cli):
    if detect_arch():
        pytest.skip("a GPU is present: the benchmark would run")
    code, out, err = cli("plugins", "bench", "--dtype", "fp32", "--json")
    assert code == 6 and out == "" and "no NVIDIA GPU here" in err and "Traceback" not in err


def test_bad_dtype_is_input_error(cli):
    code, _, err = cli("plugins", "bench", "--dtype", "fp8")
    assert code == 3 and "unknown dtype fp8" in err


def _recorded(tmp_path):
    """A result in the shape run_bench returns (the numbers are placeholders for the printing, not measurements)."""
    rows = []
    for kernel, ms in (("fast", 0.05), ("chunked", 0.12), ("reference", 0.9)):
        cost = bench.layer_cost(384, 384, 14, 4)
        gbs, gflops = cost["bytes"] / (ms / 1e3) / 1e9, cost["flops"] / (ms / 1e3) / 1e9
        rows.append({"layer": "384x14x14", "dtype": "fp32", "kernel": kernel, "ms": ms, "gbs": round(gbs, 2),
                     "gflops": round(gflops, 1), "pct_peak_bandwidth": round(100 * gbs / 68.0, 1),
                     "pct_peak_gflops": round(100 * gflops / 1280.0, 1)})
    result = {"target": "orin-nano", "arch": "sm_87", "iters": 50,
              "peaks": {"bandwidth_gbs": 68.0, "gflops": {"fp32": 1280.0}}, "results": rows}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(result))
    return path, result


def test_from_result_json_and_text(cli, tmp_path):
    path, result = _recorded(tmp_path)
    code, out, err = cli("plugins", "bench", "--from-result", str(path), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data == result
    assert set(data["results"][0]) == {"layer", "dtype", "kernel", "ms", "gbs", "gflops", "pct_peak_bandwidth",
                                       "pct_peak_gflops"}
    code, out, _ = cli("plugins", "bench", "--from-result", str(path))
    assert code == 0 and "384x14x14" in out and "% peak BW" in out and "sm_87 GPU, peaks of orin-nano" in out


def test_layer_cost():
    # MobileNet 512 -> 512 at 14x14 (the example): 2*196*512*(9+512) FLOP over X+Y+weights once.
    cost = bench.layer_cost(512, 512, 14, 4)
    assert cost["flops"] == 2 * 196 * 512 * 521
    assert cost["bytes"] == 196 * 1024 * 4 + (512 * 9 + 512 + 512 * 512 + 512) * 4
    assert 50 < cost["flops"] / cost["bytes"] < 60                      # FP32: ~56 FLOP/byte
    half = bench.layer_cost(512, 512, 14, 2)
    assert 100 < half["flops"] / half["bytes"] < 120                    # FP16: ~112, compute-bound on every Jetson
    assert [n for n, _, _ in bench.LAYERS][0] == "32x112x112" and len(bench.LAYERS) == 7


def test_bench_harness_compiles_for_orin(tmp_path):
    nv = chk.nvcc_info()
    if nv is None or "87" not in nv["archs"] or not shutil.which("g++"):
        pytest.skip("needs an nvcc that targets sm_87")
    root = plugin_source_dir()
    proc = subprocess.run([nv["path"], "-std=c++14", "-O2", "-c", "-gencode=arch=compute_87,code=sm_87",
                           f"-I{root / 'include'}", str(root / bench.BENCH_HARNESS), "-o", str(tmp_path / "b.o")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---- the TensorRT reference: pairing, ratios, text and JSON from injected timings; the real runs need a GPU ------
def _with_reference_result():
    """Kernel rows and TensorRT rows with chosen milliseconds (injected, not measured) for the pairing logic."""
    from edgesqueeze.devices import get_profile

    profile = get_profile("orin-nano")
    cost = bench.layer_cost(384, 384, 14, 2)
    sparse = bench.sparse_cost(384, 384, 14, 2, 384 * 192, 384 * 192 * 2 + 384 * 12 * 4)
    rows = [bench._row(profile, "384x14x14", "fp16", "dwsep", "fast", 0.05, cost),
            bench._row(profile, "384x14x14", "fp16", "dwsep", "chunked", 0.2, cost),
            bench._row(profile, "384x14x14", "fp16", "pointwise-2:4", "tiled", 0.04, sparse),
            bench._row(profile, "384x14x14", "int8", "dwsep", "fast-int8", 0.03, bench.layer_cost(384, 384, 14, 1))]
    result = {"target": "orin-nano", "arch": "sm_87", "iters": 50,
              "peaks": {"bandwidth_gbs": profile.peak_bandwidth_gbs, "gflops": dict(profile.peak_gflops)},
              "results": rows}
    reference = {"engine": "TensorRT 10.3.0", "skipped": None, "rows": [
        {"layer": "384x14x14", "dtype": "fp16", "op": "dwsep", "engine": "tensorrt", "ms": 0.1},
        {"layer": "384x14x14", "dtype": "fp16", "op": "pointwise-2:4", "engine": "tensorrt", "ms": 0.03},
        {"layer": "384x14x14", "dtype": "fp16", "op": "pointwise-2:4", "engine": "tensorrt-sparse", "ms": 0.02}]}
    return result, reference


def test_with_reference_pairs_each_kernel_with_tensorrt():
    result, reference = _with_reference_result()
    out = bench.with_reference(result, reference)
    assert out["reference"] == reference and out["results"] == result["results"]
    pairs = {(c["op"], c["kernel"], c["engine"]): c["speedup"] for c in out["comparison"]}
    assert pairs == {("dwsep", "fast", "tensorrt"): 2.0, ("dwsep", "chunked", "tensorrt"): 0.5,
                     ("pointwise-2:4", "tiled", "tensorrt"): 0.75, ("pointwise-2:4", "tiled", "tensorrt-sparse"): 0.5}
    assert not any(c["dtype"] == "int8" for c in out["comparison"])  # no INT8 reference engine
    skipped = bench.with_reference(result, {"engine": None, "skipped": "no TensorRT", "rows": []})
    assert skipped["comparison"] == [] and skipped["reference"]["skipped"] == "no TensorRT"


def test_side_by_side_text_and_json(cli, tmp_path):
    result, reference = _with_reference_result()
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench.with_reference(result, reference)))
    code, out, err = cli("plugins", "bench", "--from-result", str(path), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"target", "arch", "iters", "peaks", "results", "reference", "comparison"}
    assert set(data["comparison"][0]) == {"layer", "dtype", "op", "kernel", "ms", "engine", "engine_ms", "speedup"}
    code, out, _ = cli("plugins", "bench", "--from-result", str(path))
    assert code == 0 and "speed-up" in out and "2.00x" in out and "0.50x" in out and "tensorrt-sparse" in out
    assert "reference: TensorRT 10.3.0" in out and "% peak BW" in out
    path.write_text(json.dumps(bench.with_reference(result, {"engine": None, "skipped": "no tensorrt", "rows": []})))
    code, out, _ = cli("plugins", "bench", "--from-result", str(path))
    assert code == 0 and "TensorRT reference skipped: no tensorrt" in out and "speed-up" not in out


def test_reference_plan_per_version_and_gpu():
    from edgesqueeze.bench import plugin_reference as ref

    assert ref.network_flags("8.2.1", "fp16") == ["EXPLICIT_BATCH"]
    assert ref.network_flags("10.3.0", "fp32") == []
    assert ref.network_flags("10.13.0", "fp16") == ["STRONGLY_TYPED"]       # weak typing deprecated there
    assert ref.builder_flags("8.5.2", "fp16", False) == ["FP16"]
    assert ref.builder_flags("11.0", "fp16", True) == ["SPARSE_WEIGHTS"]
    layers = [("384x14x14", 384, 14)]
    ops = ["dwsep", "pointwise-2:4", "pointwise-csr"]
    xavier = ref.reference_jobs(layers, ["fp16", "int8"], ops, sm=72)
    orin = ref.reference_jobs(layers, ["fp16", "int8"], ops, sm=87)
    assert [j["engine"] for j in xavier] == ["tensorrt"] * 3                  # no sparse tensor cores, no INT8
    assert [(j["op"], j["engine"]) for j in orin if j["sparse_weights"]] == [("pointwise-2:4", "tensorrt-sparse")]


def test_reference_without_tensorrt_says_why():
    from edgesqueeze import _lazy
    from edgesqueeze.bench import plugin_reference as ref

    if _lazy.available("tensorrt"):
        pytest.skip("TensorRT is installed here")
    out = ref.time_reference([("384x14x14", 384, 14)], ["fp32"], ["dwsep"], 87, 5, bench.reference_weight)
    assert out["rows"] == [] and "tensorrt" in out["skipped"] and "pip install" in out["skipped"]


def test_reference_weights_match_the_kernels():
    import numpy as np

    w24 = bench.reference_weight("pointwise-2:4", 32, 8)
    assert w24.shape == (8, 32, 1, 1) and np.count_nonzero(w24) == 8 * 16
    csr = bench.reference_weight("pointwise-csr", 384, 384)
    assert 0.08 < np.count_nonzero(csr) / csr.size < 0.12
    assert np.count_nonzero(bench.reference_weight("dwsep", 16, 16)) == 256


@pytest.mark.trt
def test_tensorrt_reference_runs_here():
    """On a GPU with TensorRT: the reference engines build and time (the side-by-side the issue asks for)."""
    from edgesqueeze.bench import plugin_reference as ref

    out = ref.time_reference([("960x7x7", 960, 7)], ["fp32", "fp16"], ["dwsep", "pointwise-csr"], 87, 5,
                             bench.reference_weight)
    assert out["skipped"] is None and len(out["rows"]) == 4 and all(r["ms"] > 0 for r in out["rows"])


@pytest.mark.gpu
def test_bench_runs_the_sparse_kernels(tmp_path):
    result = bench.run_bench("orin-nano", dtypes=["fp16"], iters=3, layers=["960x7x7"], cache_dir=tmp_path)
    ops = {(r["op"], r["kernel"]) for r in result["results"]}
    assert {("pointwise-2:4", "tiled"), ("pointwise-csr", "tiled"), ("dwsep", "fast")} <= ops
