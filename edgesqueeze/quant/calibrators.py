"""Calibrators: from a tensor's streaming statistics to its amax (the clipping threshold, scale = amax / 127).

- ``minmax``: amax = max |x| seen.
- ``entropy``: TensorRT's EntropyCalibration2 as NVIDIA published it (Migacz, GTC 2017; TENSORRT.md): over the
  2048-bin histogram of |x| (bin 0, the spike of exact zeros after a ReLU, takes bin 1's count as in NVIDIA's
  published calibrator, when bin 1 is not empty), for every candidate i in 128..bins, P = bins[0:i] with all
  counts at or beyond i added to bin i-1; Q = bins[0:i] merged into 128 levels (i // 128 bins per level, the
  last level takes the remainder) and expanded back, each level's count spread evenly over the bins that are
  non-zero in P; the
  candidate with the smallest KL(P||Q) wins (the first one on ties) and amax = (i + 0.5) x bin width.
  A candidate whose Q is zero where P is not has infinite divergence. Empty bins of P add nothing.
- ``percentile``: amax = the upper edge of the bin where the cumulative |x| histogram reaches p %.
- ``mse``: amax minimising the expected squared quantization error over the histogram (bin centres).

The entropy search is evaluated in closed form (prefix sums), which is exactly the published per-candidate
loop (the tests compare the two) at a fraction of its cost: candidates i with the same i // 128 bins per level
share levels 0..126, so those levels' terms are computed once per group (16 groups for 2048 bins) and only
the last level, which ends at i and takes the outliers, is evaluated per candidate: O(bins) work, not
O(bins x 128).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Set

import numpy as np
from onnx import ModelProto

from ..errors import InputError
from .histogram import TensorHistogram
from .qdq import WEIGHTED_OPS

NUM_LEVELS = 128  # int8 magnitudes 0..127 (+ sign)
from .methods import METHODS

# ops that move values without changing them: a range protected on one side is protected on the other
_SHAPE_OPS = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity"}
_POOL_OPS = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
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
    b = np.array(hist, dtype=np.float64).ravel()
    if flatten_zero_bin and b.size > 1 and b[1] > 0:
        b[0] = b[1]
    n = b.size
    if n < num_levels or not b.sum() > 0:
        return n
    L = num_levels
    cum = np.concatenate([[0.0], np.cumsum(b)])                      # cum[k] = sum(b[:k])
    nz = np.concatenate([[0], np.cumsum(b > 0)])                      # non-zero bins in b[:k]
    # The total is cum[n], not b.sum(): with float weights the two may round differently, and the outliers
    # total - cum[i] must be exactly 0 when nothing lies beyond i. Which sums are zero is decided from the
    # non-zero bin counts nz, never from rounded sums.
    total = cum[n]
    with np.errstate(divide="ignore", invalid="ignore"):
        blogb = np.where(b > 0, b * np.log(b), 0.0)
    cum_blogb = np.concatenate([[0.0], np.cumsum(blogb)])

    # Levels 0..L-2 of candidate i are [j*per, (j+1)*per) with per = i // L: the same for every candidate of a
    # group i in [L*per, L*(per+1)), and they hold no outliers (they end at (L-1)*per <= i - per). So their
    # share of sum_k P_k log Q_k is one number per group; only the last level [(L-1)*per, i) varies with i.
    pers = np.arange(1, n // L + 1)                                   # one group per bins-per-level value
    edges = np.arange(L - 1)[None, :] * pers[:, None]                 # level starts; level j ends at start j+1
    head_chunk = cum[edges + pers[:, None]] - cum[edges]              # (groups, L-1) level sums
    head_count = (nz[edges + pers[:, None]] - nz[edges]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        head_terms = np.where(head_count > 0, head_chunk * (np.log(head_chunk) - np.log(head_count)), 0.0)
    head_cross = head_terms.sum(axis=1)                               # per group, over levels 0..L-2

    i = np.arange(L, n + 1)                                          # candidates
    per = i // L
    outliers = total - cum[i]
    last = b[i - 1] + outliers                                       # P[i-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        # sum over k < i of P_k log P_k
        plogp = cum_blogb[i - 1] + np.where(last > 0, last * np.log(last), 0.0)
        s = (L - 1) * per                                            # start of the last level
        chunk = cum[i] - cum[s]                                      # last level's sum of bins[0:i]
        q_nonzero = nz[i] > nz[s]                                    # the last level's bins of bins[0:i] hold data
        has_outliers = nz[n] > nz[i]
        count = (nz[i] - nz[s]) + ((b[i - 1] == 0) & has_outliers)  # P[i-1] is non-zero through the outliers
        pchunk = chunk + outliers                                    # P's mass in the last level
        cross = head_cross[per - 1] + np.where(
            q_nonzero, pchunk * (np.log(chunk) - np.log(np.maximum(count, 1).astype(np.float64))), 0.0)
        bad = (has_outliers & ~q_nonzero) | (nz[i] == 0)             # Q zero where P is not
        kl = (plogp - cross) / total - np.log(total) + np.log(np.where(nz[i] > 0, cum[i], 1.0))
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


def pooled_features(model: ModelProto) -> Set[str]:
    """Globally pooled features that reach a quantized layer: tensors the ``auto`` method never clips.

    The output of a global pooling (GlobalAveragePool, GlobalMaxPool, GlobalLpPool) and the tensors it is
    only reshaped into (Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Identity) on the way to a quantized
    layer (Conv, ConvTranspose, Gemm, MatMul): a classifier's input, a squeeze-excitation's. Each value there is
    a whole channel's mean, seen once per sample, so its histogram is thin and a clipped value changes a logit
    directly: they keep max |x|.
    """
    consumers: Dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    keep: Set[str] = set()
    for n in model.graph.node:
        if n.op_type not in _POOL_OPS:
            continue
        chain, frontier = [], list(n.output[:1])
        while frontier:
            t = frontier.pop()
            chain.append(t)
            for c in consumers.get(t, []):
                if c.op_type in _SHAPE_OPS and c.input[0] == t:
                    frontier.extend(c.output[:1])
        if any(c.op_type in WEIGHTED_OPS for t in chain for c in consumers.get(t, [])):
            keep.update(chain)
    return keep


def calibrated_amax(model: ModelProto, stats: Mapping[str, TensorHistogram], method: str,
                    percentile: float = 99.99, protect_pooled: bool = False) -> Dict[str, float]:
    """``{tensor: amax}`` of a per-tensor method over collected statistics, in the order of ``stats``.

    With ``protect_pooled`` the tensors of :func:`pooled_features` keep max |x| (the ``auto`` candidates).
    """
    fn = amax_function(method, percentile)
    keep = pooled_features(model) if protect_pooled else set()
    return {name: float(s.amax if name in keep else fn(s)) for name, s in stats.items()}


def amax_function(method: str, percentile: float = 99.99) -> Callable[[TensorHistogram], float]:
    """Return the ``stats -> amax`` function of a calibration method.

    Raises:
        InputError: unknown method.
    """
    method = method.lower()
    table: Dict[str, Callable[[TensorHistogram], float]] = {
        "auto": mse_amax,  # per tensor; calibrate() picks auto's method per network (see calibrate.choose_auto)
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
