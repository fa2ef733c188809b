"""Energy from power samples: idle baseline, average and peak power, energy per inference.

Samples carry ``t`` (``time.perf_counter()`` seconds) and either ``total_mw`` (instantaneous power:
tegrastats, INA3221, NVML power usage) or ``energy_mj`` (a cumulative counter: NVML total energy,
RAPL). Power is integrated as a piecewise-linear trace (trapezoids, interpolated at the window's
edges); a counter is interpolated at the window's edges and differenced.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np


def power_trace(samples: List[dict]) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(t, mW)`` arrays: instantaneous power, or counter differences placed at interval midpoints."""
    pts = [(s["t"], s["total_mw"]) for s in samples if s.get("total_mw") is not None]
    if pts:
        t, p = zip(*pts)
        return np.asarray(t, float), np.asarray(p, float)
    ctr = [(s["t"], s["energy_mj"]) for s in samples if s.get("energy_mj") is not None]
    if len(ctr) < 2:
        return np.zeros(0), np.zeros(0)
    t = np.asarray([c[0] for c in ctr], float)
    e = np.asarray([c[1] for c in ctr], float)
    dt = np.diff(t)
    ok = dt > 0
    return ((t[1:] + t[:-1]) / 2)[ok], (np.diff(e)[ok] / dt[ok])


def _has_counter(samples: List[dict]) -> bool:
    return sum(1 for s in samples if s.get("energy_mj") is not None) >= 2


def energy_between(samples: List[dict], t0: float, t1: float) -> Optional[float]:
    """Energy in mJ between ``t0`` and ``t1`` (seconds on the samples' clock), or None without data."""
    if t1 <= t0:
        return 0.0
    if _has_counter(samples):
        ctr = [(s["t"], s["energy_mj"]) for s in samples if s.get("energy_mj") is not None]
        t = np.asarray([c[0] for c in ctr], float)
        e = np.asarray([c[1] for c in ctr], float)
        if t[-1] <= t[0]:
            return None
        # linear inside, the average rate extrapolated outside the sampled range
        rate = (e[-1] - e[0]) / (t[-1] - t[0])

        def at(x):
            if x < t[0]:
                return e[0] - rate * (t[0] - x)
            if x > t[-1]:
                return e[-1] + rate * (x - t[-1])
            return float(np.interp(x, t, e))

        return at(t1) - at(t0)
    t, p = power_trace(samples)
    if t.size == 0:
        return None
    inside = t[(t > t0) & (t < t1)]
    xs = np.concatenate([[t0], inside, [t1]])
    ys = np.interp(xs, t, p)
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)))


def idle_summary(samples: List[dict], t0: float, t1: float) -> Optional[dict]:
    """Mean power over the idle window ``[t0, t1]`` (before the run), or None without data."""
    e = energy_between(samples, t0, t1)
    if e is None or t1 <= t0:
        return None
    t, _ = power_trace(samples)
    n = int(np.sum((t >= t0) & (t <= t1))) if t.size else 0
    return {"mean_mw": e / (t1 - t0), "duration_s": t1 - t0, "samples": n}


def window_summary(samples: List[dict], t0: float, t1: float, inferences: int,
                   idle_mw: Optional[float] = None, interval_ms: Optional[float] = None) -> dict:
    """Power over one inference window.

    Args:
        samples: every sample of the run (idle, warm-up and timed phases).
        t0, t1: the timed window on the samples' clock.
        inferences: inferences in the window (iterations x batch).
        idle_mw: the idle baseline, for the energy above idle.
        interval_ms: the sampling interval, to judge whether the window is long enough.

    Returns:
        ``{"window_s", "samples_in_window", "avg_mw", "peak_mw", "energy_mj", "energy_per_inference_mj",
        "avg_above_idle_mw", "energy_per_inference_above_idle_mj", "reliable", "note"}``.
    """
    dur = t1 - t0
    energy = energy_between(samples, t0, t1)
    t, p = power_trace(samples)
    mask = (t >= t0) & (t <= t1) if t.size else np.zeros(0, bool)
    n_in = int(mask.sum())
    out = {"window_s": [t0, t1], "duration_s": dur, "samples_in_window": n_in, "avg_mw": None, "peak_mw": None,
           "energy_mj": energy, "energy_per_inference_mj": None, "avg_above_idle_mw": None,
           "energy_per_inference_above_idle_mj": None, "reliable": False, "note": ""}
    if energy is None or dur <= 0:
        out["note"] = "no power samples"
        return out
    out["avg_mw"] = energy / dur
    if n_in:
        out["peak_mw"] = float(p[mask].max())
    elif t.size:
        out["peak_mw"] = float(np.interp((t0 + t1) / 2, t, p))
    if inferences > 0:
        out["energy_per_inference_mj"] = energy / inferences
    if idle_mw is not None:
        above = energy - idle_mw * dur
        out["avg_above_idle_mw"] = above / dur
        if inferences > 0:
            out["energy_per_inference_above_idle_mj"] = above / inferences
    need = 3
    out["reliable"] = n_in >= need
    if not out["reliable"]:
        every = f"every {interval_ms:g} ms " if interval_ms else ""
        out["note"] = (f"only {n_in} power sample(s) {every}fell inside the {dur * 1000:.0f} ms window: energy is "
                       f"interpolated; run longer (--duration) for a reliable figure")
    return out


def log_energy(samples: List[dict], times: List[float], *, idle_seconds: Optional[float] = None,
               idle_mw: Optional[float] = None, inferences: Optional[int] = None) -> Optional[dict]:
    """Energy over a recorded power log (tegrastats samples with ``total_mw``) on the log's own times.

    Args:
        samples: parsed samples carrying ``total_mw``.
        times: seconds since the first sample, one per sample (:func:`edgesqueeze.bench.tegrastats.sample_times`).
        idle_seconds: the log's first seconds are the idle baseline; energy is counted after them.
        idle_mw: an idle baseline measured elsewhere (an idle log); wins over ``idle_seconds``' mean.
        inferences: inferences run in the counted part, for the energy per inference.

    Returns:
        ``{"duration_s", "energy_j", "avg_mw", "idle_mw", "idle_s", "energy_above_idle_j",
        "energy_per_inference_mj", "energy_per_inference_above_idle_mj", "inferences"}``; None without power.
    """
    pts = [dict(t=t, total_mw=s["total_mw"]) for s, t in zip(samples, times) if s.get("total_mw") is not None]
    if len(pts) < 2:
        return None
    start, end = pts[0]["t"], pts[-1]["t"]
    idle_s = None
    if idle_seconds:
        idle_s = min(idle_seconds, end - start)
        idle = [p["total_mw"] for p in pts if p["t"] < start + idle_s]
        if idle_mw is None and idle:  # the mean of the idle samples (a trapezoid would reach into the load)
            idle_mw = sum(idle) / len(idle)
        start += idle_s
    dur = end - start
    energy_mj = energy_between(pts, start, end) if dur > 0 else 0.0
    out = {"duration_s": dur, "energy_j": energy_mj / 1000, "avg_mw": energy_mj / dur if dur > 0 else None,
           "idle_mw": idle_mw, "idle_s": idle_s, "energy_above_idle_j": None, "inferences": inferences,
           "energy_per_inference_mj": None, "energy_per_inference_above_idle_mj": None}
    if idle_mw is not None:
        out["energy_above_idle_j"] = (energy_mj - idle_mw * dur) / 1000
    if inferences:
        out["energy_per_inference_mj"] = energy_mj / inferences
        if idle_mw is not None:
            out["energy_per_inference_above_idle_mj"] = (energy_mj - idle_mw * dur) / inferences
    return out
