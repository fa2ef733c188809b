"""Memory bandwidth and roofline position of a benchmark run.

Three sources (JETSON.md): tegrastats' EMC utilisation x EMC clock x 2 (DDR) x bus width (Jetson),
NVML GPM's DRAM bandwidth utilisation (Hopper+), and always the analytic figure — bytes that must move
per inference (weights once + each activation written and read) divided by the measured latency. The
analytic figure is a lower bound on the real traffic, but it exists on every target.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import onnx

from ..inspect import inspect_model
from ..model import infer_shapes
from ..precision import PRECISIONS

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}


def model_costs(model: onnx.ModelProto, profile=None, precision: str = "fp32") -> dict:
    """Per-inference (batch 1) FLOPs and the bytes that must move, for ``model`` at ``precision``.

    Uses :func:`edgesqueeze.inspect.inspect_model` (``totals["min_bytes"]``: weights once, each activation
    written once and read once; ``totals["flops"]``); falls back to counting graph bytes, FLOPs unknown.

    Returns:
        ``{"flops": float | None, "macs", "weight_bytes", "activation_bytes", "bytes", "source"}`` where
        ``activation_bytes`` is the part that scales with the batch.
    """
    try:
        prec = precision if precision in BYTES_PER_ELEMENT else "fp32"
        tot = inspect_model(model, target=None, precision=prec)["totals"]
        wb = float(tot.get("weight_bytes") or 0)
        moved = float(tot.get("min_bytes") or tot.get("bytes") or 0)
        return {"flops": float(tot["flops"]) if tot.get("flops") else None, "macs": tot.get("macs"),
                "weight_bytes": wb, "activation_bytes": max(0.0, moved - wb), "bytes": moved,
                "source": f"edgesqueeze.inspect ({prec})"}
    except Exception as exc:  # noqa: BLE001 - fall back to the plain count, and say so
        note = f"edgesqueeze.inspect failed ({type(exc).__name__}: {exc}); "
    wb, ab = _count_bytes(model)
    return {"flops": None, "macs": None, "weight_bytes": wb, "activation_bytes": ab, "bytes": wb + ab,
            "source": note + "graph byte count (FLOPs unknown without edgesqueeze.inspect)"}


def _count_bytes(model: onnx.ModelProto):
    m = infer_shapes(model)
    weights = sum(_nbytes(t.dims, t.data_type) for t in m.graph.initializer)
    inits = {t.name for t in m.graph.initializer}
    acts = 0.0
    io_names = {vi.name for vi in list(m.graph.input) + list(m.graph.output)}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        n = _nbytes(dims, vi.type.tensor_type.elem_type)
        acts += n if vi.name in io_names else 2 * n  # intermediates: written + read
    return float(weights), float(acts)


def _nbytes(dims, elem_type) -> float:
    try:
        size = onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except Exception:  # noqa: BLE001
        size = 4
    return float(np.prod([max(1, int(d)) for d in dims]) if len(dims) else 1) * size


def roofline(profile, precision: str, flops: Optional[float], bytes_moved: float, latency_s: float) -> dict:
    """Position of one run on the target's roofline.

    Returns:
        ``{"peak_gflops", "peak_gbs", "ridge_flop_per_byte", "intensity_flop_per_byte", "achieved_gflops",
        "attainable_gflops", "fraction_of_attainable", "bound"}`` (FLOP-based entries None when FLOPs are unknown).
    """
    peak = profile.peak_flops(precision if precision in PRECISIONS else "fp32")
    bw = profile.peak_bandwidth
    out = {"peak_gflops": peak / 1e9, "peak_gbs": bw / 1e9, "ridge_flop_per_byte": peak / bw,
           "precision": precision, "intensity_flop_per_byte": None, "achieved_gflops": None,
           "attainable_gflops": None, "fraction_of_attainable": None, "bound": None,
           "bandwidth_fraction_of_peak": (bytes_moved / latency_s) / bw if latency_s > 0 else None,
           "unverified": sorted(set(getattr(profile, "unverified", None) or []))}
    if flops and bytes_moved > 0 and latency_s > 0:
        intensity = flops / bytes_moved
        attainable = min(peak, intensity * bw)
        achieved = flops / latency_s
        out.update(intensity_flop_per_byte=intensity, achieved_gflops=achieved / 1e9,
                   attainable_gflops=attainable / 1e9, fraction_of_attainable=achieved / attainable,
                   bound="memory" if intensity < peak / bw else "compute")
    return out


def analytic(costs: dict, batch: int, latency_ms: float, profile=None, precision: str = "fp32") -> dict:
    """Analytic bandwidth of one run: (weights + batch x activations) / latency, plus the roofline.

    Args:
        costs: :func:`model_costs` (batch 1).
        batch: batch size of the run. latency_ms: latency of one batch (the harness uses the median:
            a typical iteration, robust to a noisy machine).
    """
    moved = costs["weight_bytes"] + batch * costs["activation_bytes"]
    flops = costs["flops"] * batch if costs.get("flops") else None
    sec = latency_ms / 1000.0
    out = {"bytes_per_batch": moved, "bytes_per_inference": moved / batch,
           "gbs": moved / sec / 1e9 if sec > 0 else None, "flops_per_inference": costs.get("flops"),
           "achieved_gflops": flops / sec / 1e9 if flops and sec > 0 else None, "source": costs["source"],
           "note": "lower bound: weights once + activations written and read once per batch"}
    if profile is not None:
        out["roofline"] = roofline(profile, precision, flops, moved, sec)
    return out


def emc_bandwidth(samples: List[dict], profile, t0: float, t1: float) -> Optional[dict]:
    """EMC bandwidth (GB/s) over ``[t0, t1]`` from tegrastats samples, or None without EMC data.

    Without root tegrastats hides the EMC clock; the maximum clock is assumed then (an upper bound, said so).
    """
    if profile is None or not getattr(profile, "memory_bus_bits", None):
        return None
    emc = [s for s in samples if s.get("emc") and t0 <= s["t"] <= t1]
    if not emc:
        return None
    hidden = all(s["emc"]["mhz"] is None for s in emc)
    if hidden and not profile.emc_max_mhz:
        return None
    bws = np.asarray([profile.emc_bandwidth(s["emc"]["load_pct"], s["emc"]["mhz"]) for s in emc]) / 1e9
    out = {"mean_gbs": float(bws.mean()), "peak_gbs": float(bws.max()), "samples": int(bws.size),
           "mean_emc_pct": float(np.mean([s["emc"]["load_pct"] for s in emc])),
           "source": "tegrastats EMC% x EMC clock x 2 x bus width"}
    if hidden:
        out["note"] = (f"EMC clock hidden (tegrastats without root): assumed the maximum {profile.emc_max_mhz:g} MHz, "
                       "an upper bound")
    return out
