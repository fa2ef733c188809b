"""Entropy calibration against a straightforward implementation of the published algorithm; streaming histograms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgesqueeze.quant.calibrators import entropy_amax, entropy_threshold_bin
from edgesqueeze.quant.histogram import TensorHistogram


def reference_threshold_bin(hist, levels=128, flatten_zero_bin=True):
    """EntropyCalibration2 written directly from the published pseudo-code (Migacz 2017, TENSORRT.md).

    For each candidate i in 128..len(bins): P = bins[0:i] with the outliers added to P[i-1]; Q = bins[0:i]
    merged into 128 levels (i // 128 bins each, the last level takes the rest) and expanded back, each level's
    count spread evenly over the bins that are non-zero in P; KL(P || Q) of the normalised distributions;
    the first minimum wins. One candidate at a time, no algebra.
    """
    bins = np.array(hist, dtype=np.float64)
    if flatten_zero_bin and bins.size > 1 and bins[1] > 0:
        bins[0] = bins[1]
    n = bins.size
    best_i, best_kl = n, math.inf
    for i in range(levels, n + 1):
        p = bins[:i].copy()
        p[i - 1] += bins[i:].sum()
        level = np.minimum(np.arange(i) // (i // levels), levels - 1)   # level of each bin
        level_sum = np.bincount(level, weights=bins[:i], minlength=levels)
        level_nonzero = np.bincount(level, weights=(p != 0).astype(np.float64), minlength=levels)
        q = np.where(p != 0, level_sum[level] / np.maximum(level_nonzero[level], 1), 0.0)
        with np.errstate(invalid="ignore"):  # all of bins[0:i] empty: q is NaN, and NaN never wins below
            p, q = p / p.sum(), q / q.sum()
        if np.any((p > 0) & (q == 0)):
            kl = math.inf
        else:
            m = p > 0
            kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        if kl < best_kl - 1e-12:
            best_kl, best_i = kl, i
    return best_i


def _distributions():
    rng = np.random.default_rng(7)
    relu = np.maximum(rng.normal(size=60_000), 0.0)  # half the mass is a spike of exact zeros
    outlier = np.concatenate([rng.normal(size=60_000), [20.0]])
    return {"gaussian": rng.normal(size=60_000), "laplacian": rng.laplace(size=60_000),
            "relu_zero_spike": relu, "one_outlier": outlier}


DISTS = _distributions()


@pytest.mark.parametrize("name", sorted(DISTS))
@pytest.mark.parametrize("flatten", [True, False])
def test_entropy_matches_reference_implementation(name, flatten):
    x = np.abs(DISTS[name])
    hist, _ = np.histogram(x, bins=2048, range=(0.0, float(x.max())))
    ours = entropy_threshold_bin(hist, flatten_zero_bin=flatten)
    assert ours == reference_threshold_bin(hist, flatten_zero_bin=flatten)


def test_entropy_thresholds_are_sensible():
    x = np.abs(DISTS["one_outlier"])
    hist, _ = np.histogram(x, bins=2048, range=(0.0, float(x.max())))
    i = entropy_threshold_bin(hist)
    amax = (i + 0.5) * x.max() / 2048
    assert 3.0 < amax < 6.0  # clips the lone outlier at 20, keeps the Gaussian body (|x| < ~4.5)
    # a documented limit of the published algorithm: when the body fills fewer than 128 of the 2048 bins,
    # every clipping candidate leaves the outliers' bin with Q = 0 (infinite KL), so nothing is clipped
    far = np.abs(np.concatenate([DISTS["gaussian"], [80.0]]))
    hist, _ = np.histogram(far, bins=2048, range=(0.0, float(far.max())))
    assert entropy_threshold_bin(hist) == 2048
    # without the zero-bin rule, the ReLU spike pulls the threshold far below the body's tail
    r = np.abs(DISTS["relu_zero_spike"])
    hist, _ = np.histogram(r, bins=2048, range=(0.0, float(r.max())))
    assert entropy_threshold_bin(hist, flatten_zero_bin=True) > entropy_threshold_bin(hist, flatten_zero_bin=False)


def test_entropy_on_discrete_levels_keeps_the_range():
    # pixel-like data: 17 levels, most samples zero; bin 1 is empty so bin 0 is kept as it is
    rng = np.random.default_rng(0)
    x = np.where(rng.random(20_000) < 0.6, 0.0, rng.integers(1, 17, 20_000) / 16.0)
    h = TensorHistogram()
    h.update(x.astype(np.float32))
    assert entropy_amax(h) > 0.5


def test_entropy_amax_from_streaming_stats_equals_histogram_path():
    x = DISTS["laplacian"].astype(np.float32)
    h = TensorHistogram()
    h.update(x)  # 2048 bins over exactly [0, max|x|], as TensorRT's published calibrator
    assert h.range == float(np.abs(x).max())
    ref_hist, _ = np.histogram(np.abs(x), bins=2048, range=(0.0, h.range))
    # re-binned from the fine counts: each bin edge is off by at most one fine bin's count
    assert np.abs(np.cumsum(h.hist) - np.cumsum(ref_hist)).max() <= h.fine.max() + 1e-6
    i = reference_threshold_bin(ref_hist)
    assert abs(entropy_amax(h) - (i + 0.5) * h.width) <= 2 * h.width


def test_edge_cases_return_amax():
    h = TensorHistogram()
    assert entropy_amax(h) == 0.0
    h.update(np.zeros(100, np.float32))
    assert entropy_amax(h) == 0.0
    assert entropy_threshold_bin(np.ones(64)) == 64  # fewer bins than levels: no clipping


def _previous_closed_form(hist, levels=128, flatten_zero_bin=True):
    """The closed form used before the per-group one: all candidates x all levels at once (O(bins x levels))."""
    b = np.array(hist, dtype=np.float64)
    if flatten_zero_bin and b.size > 1 and b[1] > 0:
        b[0] = b[1]
    n, total = b.size, b.sum()
    if n < levels or total <= 0:
        return n
    cum = np.concatenate([[0.0], np.cumsum(b)])
    nz = np.concatenate([[0], np.cumsum(b > 0)])
    cum_blogb = np.concatenate([[0.0], np.cumsum(np.where(b > 0, b * np.log(np.where(b > 0, b, 1.0)), 0.0))])
    i = np.arange(levels, n + 1)
    outliers = total - cum[i]
    last = b[i - 1] + outliers
    plogp = cum_blogb[i - 1] + np.where(last > 0, last * np.log(np.where(last > 0, last, 1.0)), 0.0)
    per = i // levels
    starts = np.arange(levels)[None, :] * per[:, None]
    ends = starts + per[:, None]
    ends[:, -1] = i
    chunk = cum[ends] - cum[starts]
    count = (nz[ends] - nz[starts]).astype(np.float64)
    count[:, -1] += (b[i - 1] == 0) & (outliers > 0)
    pchunk = chunk.copy()
    pchunk[:, -1] += outliers
    with np.errstate(divide="ignore", invalid="ignore"):
        logq = np.log(chunk) - np.log(np.where(count > 0, count, 1.0))
        cross = np.where(pchunk > 0, pchunk * logq, 0.0)
        bad = ((pchunk > 0) & (chunk <= 0)).any(axis=1) | (cum[i] <= 0)
        kl = (plogp - cross.sum(axis=1)) / total - np.log(total) + np.log(np.where(cum[i] > 0, cum[i], 1.0))
    kl = np.where(bad | ~np.isfinite(kl), np.inf, kl)
    if not np.isfinite(kl).any():
        return n
    return int(i[np.flatnonzero(kl <= kl.min() + 1e-12)[0]])


def _random_histogram(rng, length):
    """One histogram of a randomly chosen awkward kind."""
    kind = int(rng.integers(8))
    if kind == 0:    # sparse: most bins empty
        h = np.where(rng.random(length) < rng.uniform(0.01, 0.3), rng.integers(1, 1000, length), 0)
    elif kind == 1:  # all mass in one bin
        h = np.zeros(length, np.int64)
        h[rng.integers(length)] = int(rng.integers(1, 10**6))
    elif kind == 2:  # discrete levels, evenly or unevenly spaced
        h = np.zeros(length, np.int64)
        where = rng.choice(length, size=int(rng.integers(2, 40)), replace=False)
        h[where] = rng.integers(1, 10**5, where.size)
    elif kind == 3:  # long tail: Pareto magnitudes
        x = rng.pareto(rng.uniform(0.5, 3.0), 20_000)
        h, _ = np.histogram(x, bins=length, range=(0.0, float(x.max())))
    elif kind == 4:  # Gaussian body with a far outlier or two
        x = np.abs(np.concatenate([rng.normal(size=20_000), rng.uniform(5, 200, int(rng.integers(1, 3)))]))
        h, _ = np.histogram(x, bins=length, range=(0.0, float(x.max())))
    elif kind == 5:  # ReLU: spike of zeros, bin 1 sometimes empty
        x = np.maximum(rng.laplace(size=20_000), 0.0)
        h, _ = np.histogram(x, bins=length, range=(0.0, float(x.max())))
        if rng.random() < 0.5:
            h[1] = 0
    elif kind == 6:  # few counts, mostly 0/1
        h = (rng.random(length) < 0.02).astype(np.int64)
    else:            # float weights, mass only in the first few bins or only in the last
        h = np.zeros(length)
        k = int(rng.integers(1, 8))
        h[:k] = rng.random(k)
        if rng.random() < 0.5:
            h = h[::-1].copy()
    return h


def test_entropy_matches_reference_on_random_histograms():
    rng = np.random.default_rng(2024)
    for case in range(200):  # the per-candidate loop is slow: mostly short histograms, a few long ones
        length = int(rng.integers(2048, 3001)) if case % 50 == 0 else int(rng.integers(128, 800))
        levels = 128 if case % 2 else 16
        flatten = bool(case % 3)
        h = _random_histogram(rng, length)
        got = entropy_threshold_bin(h, levels, flatten)
        assert got == reference_threshold_bin(h, levels, flatten), (case, length, levels, flatten)


def test_entropy_matches_previous_closed_form_on_many_random_histograms():
    rng = np.random.default_rng(11)
    for case in range(300):
        edge_length = int(rng.choice([128, 129, 255, 256, 257, 2048, 2049]))
        length = edge_length if case % 4 == 0 else int(rng.integers(128, 3001))
        levels = 128 if case % 2 else 16
        flatten = bool(case % 3)
        h = _random_histogram(rng, length)
        if h.dtype.kind == "f":  # integer counts, as TensorHistogram keeps: the previous form's sums were exact only
            h = np.rint(h * 1e6)  # for those (with float weights its total could round differently from its cumsum)
        got = entropy_threshold_bin(h, levels, flatten)
        assert got == _previous_closed_form(h, levels, flatten), (case, length, levels, flatten)


# ------------------------------------------------------------------------------------------ streaming histogram
def test_histogram_growth_by_merging_is_exact():
    rng = np.random.default_rng(3)
    batches = [rng.normal(0, s, 5000).astype(np.float32) for s in (0.5, 1.0, 3.0, 2.0, 7.0)]
    h = TensorHistogram()
    for b in batches:
        h.update(b)
    allx = np.abs(np.concatenate(batches)).astype(np.float64)
    assert h.range == allx.max()
    ref, _ = np.histogram(allx, bins=2048, range=(0.0, h.range))
    assert h.hist.sum() == pytest.approx(allx.size)
    # merging fine bins is exact; re-binning them onto [0, max|x|] moves each bin edge by under one fine bin
    assert np.abs(np.cumsum(h.hist) - np.cumsum(ref)).max() <= h.fine.max() + 1e-6
    assert h.min == pytest.approx(float(np.concatenate(batches).min()))
    assert h.max == pytest.approx(float(np.concatenate(batches).max()))


def test_histogram_memory_is_fixed_and_nonfinite_is_counted():
    h = TensorHistogram()
    rng = np.random.default_rng(0)
    for _ in range(50):
        h.update(rng.normal(size=1000).astype(np.float32))
    assert h.hist.shape == (2048,) and h.count == 50_000
    h.update(np.array([np.nan, np.inf, 1.0], np.float32))
    assert h.nonfinite == 2 and h.count == 50_001
    h2 = TensorHistogram()
    h2.update(np.zeros(10, np.float32))
    h2.update(np.array([0.0, 2.0], np.float32))
    assert h2.hist[0] == 11 and h2.hist[-1] == 1 and h2.range == 2.0
