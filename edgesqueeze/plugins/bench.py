"""GPU micro-benchmark of the fused depthwise-separable kernels on MobileNet layer shapes (``edgesqueeze plugins
bench``): the fast kernel (FP32, FP16, INT8) against the chunked kernel and the one-thread-per-output reference
kernel, with time, effective bandwidth and FLOP rate as a share of the target's peaks (device profiles).

The harness (``kernels/tests/bench_harness.cu``) is compiled with nvcc for this machine's GPU at run time; without a
GPU this raises :class:`DeviceError` (exit code 6).
"""
from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path
from typing import List, Optional, Sequence

from ..devices import get_profile
from ..errors import DeviceError, InputError, UnsupportedError
from .sources import plugin_source_dir

BENCH_HARNESS = "tests/bench_harness.cu"
# MobileNetV2 depthwise-separable layers: (name, C = M, H = W), 3x3 depthwise, stride 1.
LAYERS = [("32x112x112", 32, 112), ("96x56x56", 96, 56), ("144x56x56", 144, 56), ("192x28x28", 192, 28),
          ("384x14x14", 384, 14), ("576x14x14", 576, 14), ("960x7x7", 960, 7)]
KERNELS = {"reference": 0, "fast": 1, "chunked": 2, "fast-int8": 3}
_ELEM = {"fp32": 4, "fp16": 2, "int8": 1}


class _Params(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("N", "C", "H", "W", "M", "OH", "OW", "KH", "KW", "SH", "SW", "PT",
                                            "PL", "DH", "DW", "dw_act", "pw_act")] + \
               [(n, ctypes.c_float) for n in ("dw_alpha", "dw_beta", "pw_alpha", "pw_beta")]


def layer_cost(c: int, m: int, hw: int, elem: int, k: int = 3) -> dict:
    """FLOPs and the minimum bytes of one fused layer (X read once, weights once, Y written once; no intermediate)."""
    flops = 2 * hw * hw * c * (k * k + m)
    weight_elem = 4 if elem == 1 else elem
    nbytes = hw * hw * (c + m) * elem + (c * k * k + c + m * c + m) * weight_elem
    return {"flops": flops, "bytes": nbytes}


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
    """Time the dwsep kernels on this machine's GPU and relate the numbers to ``target``'s peaks.

    Returns:
        ``{"target", "arch", "iters", "peaks": {"bandwidth_gbs", "gflops": {...}}, "results": [{"layer", "dtype",
        "kernel", "ms", "gbs", "pct_peak_bandwidth", "gflops", "pct_peak_gflops"}]}``.

    Raises:
        DeviceError: no NVIDIA GPU here. UnsupportedError: no nvcc. InputError: unknown dtype or layer.
    """
    from .build import detect_arch

    profile = get_profile(target)
    bad = [d for d in dtypes if d not in _ELEM]
    if bad:
        raise InputError(f"unknown dtype {', '.join(bad)}; expected fp32, fp16 or int8")
    chosen = [lay for lay in LAYERS if not layers or lay[0] in layers]
    if not chosen:
        raise InputError(f"no layer among {', '.join(layers or [])}; known: {', '.join(n for n, _, _ in LAYERS)}")
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
                sec = max(ms.value, 1e-9) / 1e3
                gbs, gflops = cost["bytes"] / sec / 1e9, cost["flops"] / sec / 1e9
                peak_flops = profile.peak_gflops.get(dtype)
                results.append({"layer": name, "dtype": dtype, "kernel": kernel, "ms": round(ms.value, 5),
                                "gbs": round(gbs, 2), "gflops": round(gflops, 1),
                                "pct_peak_bandwidth": round(100 * gbs / profile.peak_bandwidth_gbs, 1)
                                if profile.peak_bandwidth_gbs else None,
                                "pct_peak_gflops": round(100 * gflops / peak_flops, 1) if peak_flops else None})
    return {"target": profile.name, "arch": f"sm_{arch}", "iters": iters,
            "peaks": {"bandwidth_gbs": profile.peak_bandwidth_gbs, "gflops": dict(profile.peak_gflops)},
            "results": results}
