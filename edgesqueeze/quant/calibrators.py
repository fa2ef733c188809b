"""Calibrators: from a tensor's streaming statistics to its amax (the clipping threshold, scale = amax / 127).

- ``minmax``: amax = max |x| seen.
- ``entropy``: TensorRT's EntropyCalibration2 as NVIDIA published it (Migacz, GTC 2017; TENSORRT.md): over the
  2048-bin histogram of |x| (bin 0, the spike of exact zeros after a ReLU, takes bin 1's count as in NVIDIA's
  published calibrator, when bin 1 is not empty), for every candidate i in 128..bins, P = bins[0:i] with all counts at or beyond i
  added to bin i-1; Q = bins[0:i] merged into 128 levels (i // 128 bins per level, the last level takes the
  remainder) and expanded back, each level's count spread evenly over the bins that are non-zero in P; the
  candidate with the smallest KL(P||Q) wins (the first one on ties) and amax = (i + 0.5) x bin width.
  A candidate whose Q is zero where P is not has infinite divergence. Empty bins of P add nothing.
- ``percentile``: amax = the upper edge of the bin where the cumulative |x| histogram reaches p %.
- ``mse``: amax minimising the expected squared quantization error over the histogram (bin centres).

The entropy search is evaluated in closed form over all candidates at once (prefix sums per level), which
is exactly the published per-candidate loop (the tests compare the two) at a fraction of its cost.
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from ..errors import InputError
from .histogram import TensorHistogram

NUM_LEVELS = 128  # int8 magnitudes 0..127 (+ sign)
METHODS = ("entropy", "minmax", "percentile", "mse")
_TIE = 1e-12  # KL values closer than this count as equal (the first candidate wins)


def entropy_threshold_bin(hist: np.ndarray, num_levels: int = NUM_LEVELS, flatten_zero_bin: bool = True) -> int:
    """Return the candidate bin count i (num_levels <= i <= len(hist)) that minimises KL(P||Q).

    Args:
        hist: counts of |x| per bin (any non-negative numbers).
        num_levels: quantized levels (128 for int8).
        flatten_zero_bin: replace the count of bin 0 by that of bin 1 before the search, as NVIDIA's published
            calibrator does: the spike of exact zeros after a ReLU would otherwise dominate KL and pull the
            threshold far down (zeros are represented exactly at any scale anyway). Done only when bin 1 is
            non-empty: with discrete data (e.g. pixel levels) an emptied bin 0 would let a single clipped level
            reach KL = 0.

    Returns:
        i, or ``len(hist)`` when the histogram has fewer than ``num_levels`` bins or holds no data.
    """
    b = np.array(hist, dtype=np.float64)
    if flatten_zero_bin and b.size > 1 and b[1] > 0:
        b[0] = b[1]
    n = b.size
    total = b.sum()
    if n < num_levels or total <= 0:
        return n
    cum = np.concatenate([[0.0], np.cumsum(b)])                      # cum[k] = sum(b[:k])
    nz = np.concatenate([[0], np.cumsum(b > 0)])                      # non-zero bins in b[:k]
    blogb = np.where(b > 0, b * np.log(np.where(b > 0, b, 1.0)), 0.0)
    cum_blogb = np.concatenate([[0.0], np.cumsum(blogb)])

    i = np.arange(num_levels, n + 1)                                 # candidates
    outliers = total - cum[i]
    last = b[i - 1] + outliers                                       # P[i-1]
    # sum over k < i of P_k log P_k
    plogp = cum_blogb[i - 1] + np.where(last > 0, last * np.log(np.where(last > 0, last, 1.0)), 0.0)

    per = i // num_levels
    j = np.arange(num_levels)
    starts = j[None, :] * per[:, None]
    ends = starts + per[:, None]
    ends[:, -1] = i
    chunk = cum[ends] - cum[starts]                                  # level sums of bins[0:i]
    count = (nz[ends] - nz[starts]).astype(np.float64)               # non-zero bins of P per level
    count[:, -1] += (b[i - 1] == 0) & (outliers > 0)                 # P[i-1] is non-zero through the outliers
    pchunk = chunk.copy()
    pchunk[:, -1] += outliers                                        # P's mass per level
    with np.errstate(divide="ignore", invalid="ignore"):
        logq = np.log(chunk) - np.log(np.where(count > 0, count, 1.0))
        cross = np.where(pchunk > 0, pchunk * logq, 0.0)             # sum_k P_k log Q_k (unnormalised)
        bad = ((pchunk > 0) & (chunk <= 0)).any(axis=1) | (cum[i] <= 0)
        kl = (plogp - cross.sum(axis=1)) / total - np.log(total) + np.log(np.where(cum[i] > 0, cum[i], 1.0))
    kl = np.where(bad | ~np.isfinite(kl), np.inf, kl)
    if not np.isfinite(kl).any():
        return n
    best = kl.min()
    return int(i[np.flatnonzero(kl <= best + _TIE)[0]])


def entropy_amax(stats: TensorHistogram, num_levels: int = NUM_LEVELS, flatten_zero_bin: bool = True) -> float:
    """EntropyCalibration2 amax: (i + 0.5) x bin width for the KL-optimal candidate i."""
    if stats.count == 0 or stats.range == 0.0:
        return stats.amax
    i = entropy_threshold_bin(stats.hist, num_levels, flatten_zero_bin)
    return (i + 0.5) * stats.width


def percentile_amax(stats: TensorHistogram, percentile: float = 99.99) -> float:
    """The upper edge of the bin where the cumulative |x| count reaches ``percentile`` %, at most max |x|."""
    if not 0.0 < percentile <= 100.0:
        raise InputError(f"percentile must be in (0, 100], got {percentile}")
    if stats.count == 0 or stats.range == 0.0:
        return stats.amax
    cdf = np.cumsum(stats.hist, dtype=np.float64)
    k = int(np.searchsorted(cdf, cdf[-1] * percentile / 100.0, side="left"))
    return min((k + 1) * stats.width, stats.amax)


def _mse(hist: np.ndarray, centres: np.ndarray, amaxes: np.ndarray) -> np.ndarray:
    scale = (amaxes / 127.0)[:, None]
    q = np.clip(np.rint(centres[None, :] / scale), 0, 127) * scale
    return ((centres[None, :] - q) ** 2 * hist[None, :]).sum(axis=1)


def mse_amax(stats: TensorHistogram, start_bin: int = NUM_LEVELS, coarse: int = 16) -> float:
    """amax (a bin's upper edge, from ``start_bin`` up) minimising the histogram's squared quantization error.

    A coarse scan every ``coarse`` bins is refined bin by bin around its best candidate.
    """
    if stats.count == 0 or stats.range == 0.0:
        return stats.amax
    hist = stats.hist.astype(np.float64)
    n = hist.size
    keep = hist > 0
    centres = ((np.arange(n) + 0.5) * stats.width)[keep]
    counts = hist[keep]
    edges = np.arange(min(start_bin, n), n + 1)
    rough = edges[::coarse]
    err = _mse(counts, centres, rough * stats.width)
    best = int(rough[int(np.argmin(err))])
    fine = edges[(edges >= best - coarse) & (edges <= best + coarse)]
    err = _mse(counts, centres, fine * stats.width)
    return float(fine[int(np.argmin(err))] * stats.width)


def minmax_amax(stats: TensorHistogram) -> float:
    """max |x| seen."""
    return stats.amax


def amax_function(method: str, percentile: float = 99.99) -> Callable[[TensorHistogram], float]:
    """Return the ``stats -> amax`` function of a calibration method.

    Raises:
        InputError: unknown method.
    """
    method = method.lower()
    table: Dict[str, Callable[[TensorHistogram], float]] = {
        "entropy": entropy_amax,
        "minmax": minmax_amax,
        "percentile": lambda s: percentile_amax(s, percentile),
        "mse": mse_amax,
    }
    if method not in table:
        raise InputError(f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}")
    return table[method]


def needs_histogram(method: str) -> bool:
    """True for the methods that read the histogram (all but minmax)."""
    return method.lower() != "minmax"
