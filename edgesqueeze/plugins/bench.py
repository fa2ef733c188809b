"""GPU micro-benchmark of the kernels on MobileNet layer shapes (``edgesqueeze plugins bench``): the fused
depthwise-separable kernel (FP32, FP16, INT8) against the chunked kernel and the one-thread-per-output reference
kernel, and the tiled sparse kernels (a pointwise C -> C layer at 2:4 and at 10 % CSR density) against their
one-thread-per-output versions, with time, effective bandwidth and FLOP rate as a share of the target's peaks.
:func:`with_reference` sets them side by side with TensorRT's own kernels on the same layers (cuDNN / TensorRT
tactics, timed by :mod:`edgesqueeze.bench.plugin_reference`).

The harness (``kernels/tests/bench_harness.cu``) is compiled with nvcc for this machine's GPU at run time; without a
GPU this raises :class:`DeviceError` (exit code 6).
"""
from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..devices import get_profile
from ..errors import DeviceError, InputError, UnsupportedError
from .emulate import _DwsepParams as _Params
from .emulate import _SparseParams
from .sources import plugin_source_dir

BENCH_HARNESS = "tests/bench_harness.cu"
# MobileNetV2 depthwise-separable layers: (name, C = M, H = W), 3x3 depthwise, stride 1.
LAYERS = [("32x112x112", 32, 112), ("96x56x56", 96, 56), ("144x56x56", 144, 56), ("192x28x28", 192, 28),
          ("384x14x14", 384, 14), ("576x14x14", 576, 14), ("960x7x7", 960, 7)]
KERNELS = {"reference": 0, "fast": 1, "chunked": 2, "fast-int8": 3}
# Sparse pointwise layers (1x1, C -> C): op -> (sparse_format, density of the weights).
SPARSE_OPS = {"pointwise-2:4": ("2:4", 0.5), "pointwise-csr": ("csr", 0.1)}
SPARSE_KERNELS = {"reference": 0, "tiled": 1}
_ELEM = {"fp32": 4, "fp16": 2, "int8": 1}


def layer_cost(c: int, m: int, hw: int, elem: int, k: int = 3) -> dict:
    """FLOPs and the minimum bytes of one fused layer (X read once, weights once, Y written once; no intermediate)."""
    flops = 2 * hw * hw * c * (k * k + m)
    weight_elem = 4 if elem == 1 else elem
    nbytes = hw * hw * (c + m) * elem + (c * k * k + c + m * c + m) * weight_elem
    return {"flops": flops, "bytes": nbytes}


def sparse_cost(c: int, m: int, hw: int, elem: int, nnz: int, weight_bytes: int) -> dict:
    """FLOPs of the non-zero multiply-adds and the minimum bytes of one sparse 1x1 layer (X, compressed weights,
    bias and Y once)."""
    return {"flops": 2 * hw * hw * nnz, "bytes": hw * hw * (c + m) * elem + weight_bytes + m * elem}


def _sparse_weight(c: int, m: int, sparse_format: str, density: float, seed: int = 0):
    """A ``[m, c, 1, 1]`` weight: 2 of every 4 input channels kept (2:4), or ``density`` random non-zeros (CSR)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((m, c, 1, 1)).astype(np.float32)
    if sparse_format == "2:4":
        w.reshape(m, c // 4, 4)[:, :, 2:] = 0.0
    else:
        w[rng.random(w.shape) >= density] = 0.0
    return w


def reference_weight(op: str, c: int, m: int):
    """The ``[m, c, 1, 1]`` pointwise weight of ``op`` in both the kernels' and TensorRT's runs (dense for dwsep)."""
    if op in SPARSE_OPS:
        return _sparse_weight(c, m, *SPARSE_OPS[op])
    return _sparse_weight(c, m, "csr", 1.0)


def select_layers(layers: Optional[Sequence[str]]) -> List[tuple]:
    """The :data:`LAYERS` named in ``layers`` (all when empty). Raises InputError when none matches."""
    chosen = [lay for lay in LAYERS if not layers or lay[0] in layers]
    if not chosen:
        raise InputError(f"no layer among {', '.join(layers or [])}; known: {', '.join(n for n, _, _ in LAYERS)}")
    return chosen


def _row(profile, layer: str, dtype: str, op: str, kernel: str, ms: float, cost: dict) -> dict:
    """One result row: time, effective bandwidth and FLOP rate, and their share of ``profile``'s peaks."""
    sec = max(ms, 1e-9) / 1e3
    gbs, gflops = cost["bytes"] / sec / 1e9, cost["flops"] / sec / 1e9
    peak_flops = profile.peak_gflops.get(dtype)
    return {"layer": layer, "dtype": dtype, "op": op, "kernel": kernel, "ms": round(ms, 5), "gbs": round(gbs, 2),
            "gflops": round(gflops, 1),
            "pct_peak_bandwidth": round(100 * gbs / profile.peak_bandwidth_gbs, 1) if profile.peak_bandwidth_gbs
            else None,
            "pct_peak_gflops": round(100 * gflops / peak_flops, 1) if peak_flops else None}


def _build(arch: str, cache_dir: Optional[Path]) -> Path:
    from .build import _find_nvcc
    from .emulate import _compile_cached, default_cache_dir

    nvcc = _find_nvcc()
    if not nvcc:
        raise UnsupportedError("the GPU micro-benchmark needs nvcc", hint="install the CUDA toolkit (JetPack has it)")
    root = plugin_source_dir()
    srcs = [root / BENCH_HARNESS, root / "src" / "dwsep.cu", root / "src" / "sparse.cu"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in srcs + sorted((root / "include").rglob("*.cuh"))))
    lib = Path(cache_dir or default_cache_dir()) / f"esq_bench_{digest.hexdigest()[:16]}_sm{arch}.so"
    if lib.exists():
        return lib
    return _compile_cached(lib, [nvcc, "-std=c++14", "-O3", "-shared", "-Xcompiler", "-fPIC",
                                 f"-gencode=arch=compute_{arch},code=sm_{arch}", f"-I{root / 'include'}"]
                           + [str(s) for s in srcs], "benchmark harness", root / BENCH_HARNESS)


def run_bench(target: str, *, dtypes: Sequence[str] = ("fp32", "fp16", "int8"), iters: int = 50,
              layers: Optional[Sequence[str]] = None, cache_dir: Optional[Path] = None) -> dict:
    """Time the dwsep kernels and the sparse kernels (FP32/FP16) on this machine's GPU and relate the numbers to
    ``target``'s peaks.

    Returns:
        ``{"target", "arch", "iters", "peaks": {"bandwidth_gbs", "gflops": {...}}, "results": [{"layer", "dtype",
        "op", "kernel", "ms", "gbs", "pct_peak_bandwidth", "gflops", "pct_peak_gflops"}]}``; op is ``"dwsep"``,
        ``"pointwise-2:4"`` or ``"pointwise-csr"`` (:data:`SPARSE_OPS`).

    Raises:
        DeviceError: no NVIDIA GPU here. UnsupportedError: no nvcc. InputError: unknown dtype or layer.
    """
    from .build import detect_arch

    profile = get_profile(target)
    bad = [d for d in dtypes if d not in _ELEM]
    if bad:
        raise InputError(f"unknown dtype {', '.join(bad)}; expected fp32, fp16 or int8")
    chosen = select_layers(layers)
    arch = detect_arch()
    if not arch:
        raise DeviceError("no NVIDIA GPU here (nvidia-smi found none and this is not a Jetson): the micro-benchmark "
                          "times kernels on a GPU", hint="run it on the device: edgesqueeze plugins bench --json")
    lib = ctypes.CDLL(str(_build(arch, cache_dir)))
    lib.esq_bench_dwsep.argtypes = [ctypes.POINTER(_Params), ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_float)]
    results: List[dict] = []
    for name, c, hw in chosen:
        p = _Params(1, c, hw, hw, c, hw, hw, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0.0, 0.0, 0.0, 0.0)
        for dtype in dtypes:
            kernels = ["fast-int8"] if dtype == "int8" else ["fast", "chunked", "reference"]
            for kernel in kernels:
                ms = ctypes.c_float(0.0)
                rc = lib.esq_bench_dwsep(ctypes.byref(p), 1 if dtype == "fp16" else 0, KERNELS[kernel], iters,
                                         ctypes.byref(ms))
                if rc != 0:
                    raise DeviceError(f"{kernel} {dtype} on {name} failed with CUDA error {rc}")
                cost = layer_cost(c, c, hw, _ELEM[dtype])
                results.append(_row(profile, name, dtype, "dwsep", kernel, ms.value, cost))
            if dtype != "int8":
                results += _bench_sparse(lib, profile, name, c, hw, dtype, iters)
    return {"target": profile.name, "arch": f"sm_{arch}", "iters": iters,
            "peaks": {"bandwidth_gbs": profile.peak_bandwidth_gbs, "gflops": dict(profile.peak_gflops)},
            "results": results}


def _bench_sparse(lib, profile, name: str, c: int, hw: int, dtype: str, iters: int) -> List[dict]:
    """Time the sparse kernels (tiled and reference) on the 1x1 C -> C layer of ``name``."""
    import numpy as np

    from .sparse_formats import sparse_conv_inputs

    lib.esq_bench_sparse.argtypes = [ctypes.POINTER(_SparseParams)] + [ctypes.c_int] * 3 + \
        [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int,
         ctypes.POINTER(ctypes.c_float)]
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    p = _SparseParams(1, c, hw, hw, c, hw, hw, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0.0, 0.0)
    rows = []
    for op, (fmt, density) in SPARSE_OPS.items():
        w = reference_weight(op, c, c)
        arrays = {k: np.ascontiguousarray(v) for k, v in sparse_conv_inputs(w, fmt, np_dtype).items()}
        index = arrays["metadata"] if fmt == "2:4" else arrays["col"]
        row_ptr = arrays.get("row_ptr")
        weight_bytes = sum(a.nbytes for a in arrays.values())
        cost = sparse_cost(c, c, hw, _ELEM[dtype], int(np.count_nonzero(w)), weight_bytes)
        for kernel, which in SPARSE_KERNELS.items():
            ms = ctypes.c_float(0.0)
            rc = lib.esq_bench_sparse(ctypes.byref(p), 1 if dtype == "fp16" else 0, 0 if fmt == "2:4" else 1, which,
                                      arrays["values"].ctypes.data, arrays["values"].size, index.ctypes.data,
                                      index.size, row_ptr.ctypes.data if row_ptr is not None else None, iters,
                                      ctypes.byref(ms))
            if rc != 0:
                raise DeviceError(f"{op} {kernel} {dtype} on {name} failed with CUDA error {rc}")
            rows.append(_row(profile, name, dtype, op, kernel, ms.value, cost))
    return rows


def with_reference(result: dict, reference: dict) -> dict:
    """``result`` (:func:`run_bench`) with TensorRT's timings of the same layers set beside each kernel.

    Args:
        reference: ``{"engine": "TensorRT 10.3.0", "skipped": reason or None, "rows": [{"layer", "dtype", "op",
            "engine", "ms"}]}`` (:func:`edgesqueeze.bench.plugin_reference.time_reference`); ``engine`` of a row is
            ``"tensorrt"`` (the unfused / dense layers) or ``"tensorrt-sparse"`` (dense 2:4 weights built with
            sparse weights enabled, sm_80+).

    Returns:
        A copy with ``"reference"`` and ``"comparison"``: one row per (kernel row, reference row) of the same layer,
        dtype and op: ``{"layer", "dtype", "op", "kernel", "ms", "engine", "engine_ms", "speedup"}``, speedup =
        engine_ms / ms (above 1: our kernel is faster). Kernel rows without a reference (INT8) have none.
    """
    refs: Dict[tuple, List[dict]] = {}
    for r in reference.get("rows", []):
        refs.setdefault((r["layer"], r["dtype"], r["op"]), []).append(r)
    comparison = []
    for row in result["results"]:
        for ref in refs.get((row["layer"], row["dtype"], row.get("op", "dwsep")), []):
            speedup = round(ref["ms"] / row["ms"], 3) if row["ms"] > 0 and ref["ms"] > 0 else None
            comparison.append({"layer": row["layer"], "dtype": row["dtype"], "op": row.get("op", "dwsep"),
                               "kernel": row["kernel"], "ms": row["ms"], "engine": ref["engine"],
                               "engine_ms": ref["ms"], "speedup": speedup})
    return {**result, "reference": reference, "comparison": comparison}
