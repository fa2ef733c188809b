"""Latency statistics from raw samples: the numbers every results file carries."""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import InputError

STAT_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max", "std", "cv")

#: coefficient of variation above which a run is called noisy
NOISY_CV = 0.10


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(float(x) for x in samples)
    if not xs:
        raise InputError("no samples to take a percentile of")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> Dict[str, float]:
    """Return min, mean, median, p90, p95, p99, max, std (population) and cv (std / mean) of ``samples``.

    Raises:
        InputError: no samples, or a sample that is not a finite number.
    """
    arr = np.asarray(list(samples), dtype=np.float64)
    if arr.size == 0:
        raise InputError("no latency samples: the run recorded nothing")
    if not np.all(np.isfinite(arr)):
        raise InputError("latency samples contain NaN or infinity")
    mean = float(arr.mean())
    std = float(arr.std())
    p90, p95, p99, median = (float(v) for v in np.percentile(arr, [90, 95, 99, 50]))
    return {"min": float(arr.min()), "mean": mean, "median": median, "p90": p90, "p95": p95, "p99": p99,
            "max": float(arr.max()), "std": std, "cv": std / mean if mean > 0 else 0.0, "n": int(arr.size)}


def noisy_warning(stats: Dict[str, float], label: str = "") -> Optional[str]:
    """A warning text when the run's coefficient of variation exceeds :data:`NOISY_CV`, else None."""
    if stats.get("cv", 0.0) > NOISY_CV:
        where = f"{label}: " if label else ""
        return (f"{where}latency is noisy (cv {stats['cv']:.1%} > {NOISY_CV:.0%}): other processes, thermal "
                "throttling or changing clocks (on a Jetson: sudo jetson_clocks); quote the median, run longer")
    return None


def throughput(batch: int, mean_latency_ms: float) -> float:
    """Inferences per second for a batch size and mean latency."""
    return batch * 1000.0 / mean_latency_ms if mean_latency_ms > 0 else 0.0
