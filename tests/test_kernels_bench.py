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
