"""Streaming per-tensor statistics: min, max and a histogram of |x| whose range grows by merging bins.

Memory per tensor is fixed (``bins * FINE`` counters), whatever the number of calibration samples: the raw
activations are never kept. Counts go to ``bins * FINE`` fine bins over a power-of-two range: the smallest
power of two that covers the first non-zero batch, doubled (adjacent fine bins merged) as often as a later
batch needs. Merging is exact: a merged bin covers exactly the bins it replaces, so no count moves to a wrong
value range. Because the final fine range is the smallest power of two >= max |x| whatever the order and
grouping of the data, the histogram does not depend on how the samples were batched.

The ``bins``-bin histogram the calibrators read covers exactly ``[0, max |x|]``, as TensorRT's published
EntropyCalibration2 does: the fine counts are re-binned onto it at the end (each fine bin's count spread
evenly over its value range, the fine bin holding max |x| ending there), so a calibrated bin boundary is off
by at most one fine bin (max |x| / 8192, a quarter of a bin). Reading 4 to 8 fine bins as one bin over a
rounded-up range (up to 1.25 x max |x|) instead put the candidate thresholds of tensors with different
maxima on one shared grid.
"""
from __future__ import annotations

import math
import numpy as np

DEFAULT_BINS = 2048
FINE = 8  # fine bins per reported bin: max |x| spans 4 to 8 fine bins per reported bin


def _count_abs_numpy(x: np.ndarray, hist: np.ndarray, scale: float) -> None:
    """``hist[min(int(|v| * scale), bins - 1)] += 1`` for every (finite) value v of ``x``, in numpy.

    The product is computed in ``x``'s precision (float32 for float32 tensors), as the C kernel does.
    """
    a = np.abs(np.asarray(x).reshape(-1))  # 1-d: a 0-d tensor's abs is a numpy scalar, not an array
    np.multiply(a, a.dtype.type(scale), out=a)
    np.minimum(a, hist.size - 1, out=a)  # x == range goes to the last bin
    hist += np.bincount(a.astype(np.intp).ravel(), minlength=hist.size)


def count_abs(x: np.ndarray, hist: np.ndarray, scale: float) -> None:
    """Add the |x| counts of finite ``x`` to the int64 ``hist`` (bin = min(int(|v| * scale), bins - 1)).

    Uses the C kernel ``edgesqueeze.quant._histc`` for float32 tensors when it was built (one pass, no
    temporary, the GIL released), numpy otherwise; both give the same counts.
    """
    if _histc is not None and x.dtype == np.float32 and hist.dtype == np.int64 and hist.flags.c_contiguous:
        _histc.count_abs(np.ascontiguousarray(x), hist, float(scale))
    else:
        _count_abs_numpy(x, hist, scale)


try:  # optional C extension (setup.py builds it when a compiler is present)
    from . import _histc
except ImportError:  # pragma: no cover - depends on the build
    _histc = None


def _power_of_two_at_least(top: float) -> float:
    """The smallest power of two >= ``top`` (> 0), or ``top`` itself beyond the float range."""
    mant, exp = math.frexp(top)  # top = mant * 2**exp, 0.5 <= mant < 1
    try:
        r = math.ldexp(1.0, exp - 1 if mant == 0.5 else exp)
    except OverflowError:
        return top
    return r if math.isfinite(r) else top


def rebin(fine: np.ndarray, fine_range: float, top: float, bins: int):
    """Re-bin fine counts over ``[0, fine_range)`` onto ``bins`` bins over exactly ``[0, top]``.

    Each fine bin's count is spread evenly over its value range; the last non-empty fine bin (the one holding
    ``top`` = max |x|) ends at ``top``. Returns ``(float64 counts, top)``; ``(counts, 0.0)`` with everything in
    bin 0 when ``top`` or ``fine_range`` is 0.
    """
    if not (top > 0.0 and fine_range > 0.0):
        hist = np.zeros(bins)
        hist[0] = float(fine.sum())
        return hist, 0.0
    used = np.flatnonzero(fine)
    u = int(used[-1]) + 1
    edges = np.arange(u + 1) * (fine_range / fine.size)                 # fine bin edges up to the last used one
    edges[u] = max(top, float(np.nextafter(edges[u - 1], np.inf)))      # that one ends at max |x|
    cdf = np.concatenate([[0.0], np.cumsum(fine[:u], dtype=np.float64)])
    inner = np.interp(np.arange(1, bins) * (top / bins), edges, cdf)     # counts below each inner bin edge
    hist = np.diff(np.concatenate([[0.0], inner, [cdf[-1]]]))
    return np.maximum(hist, 0.0), float(top)


class TensorHistogram:
    """Streaming statistics of one tensor.

    Counts are kept in ``bins * FINE`` fine bins over a power-of-two range; :attr:`hist` re-bins them onto
    ``bins`` bins over exactly ``[0, max |x|]``.

    Attributes:
        bins: number of histogram bins (2048 for TensorRT's entropy calibration).
        hist: float64 counts of |x| over ``[0, range]`` (re-binned from the fine counts), or None when
            histograms are off.
        range: upper edge of :attr:`hist`: max |x| (0 until a non-zero value arrives).
        fine, fine_range: the fine counts and their power-of-two range.
        min, max: the smallest and largest finite value seen. count: finite values seen.
        nonfinite: NaN/Inf values seen (they are reported, and excluded from every statistic).
    """

    __slots__ = ("bins", "fine", "fine_range", "min", "max", "count", "nonfinite", "batches", "_view")

    def __init__(self, bins: int = DEFAULT_BINS, histogram: bool = True):
        self.bins = int(bins)
        self.fine = np.zeros(self.bins * FINE, np.int64) if histogram else None
        self.fine_range = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0
        self.batches = 0
        self._view = None

    # ---------------------------------------------------------------------------------------- update
    def update(self, x: np.ndarray) -> None:
        """Add the values of ``x`` (any shape, float) to the statistics."""
        x = np.asarray(x)
        if x.size == 0:
            return
        if x.dtype != np.float32 and x.dtype != np.float64:
            x = x.astype(np.float32)
        self.batches += 1
        self._view = None
        fine = self.fine
        if self.fine_range > 0.0 and fine is not None and _histc is not None and x.dtype == np.float32:
            # one C pass: min/max, NaN/Inf and the counts, kept when nothing lies beyond the range
            lo, hi, bad, counted = _histc.update_abs(np.ascontiguousarray(x), fine, fine.size / self.fine_range,
                                                     self.fine_range)
            if counted:
                self.nonfinite += bad
                if bad < x.size:
                    self.min = min(self.min, lo)
                    self.max = max(self.max, hi)
                    self.count += int(x.size - bad)
                return
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = np.isfinite(x)
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += int(x.size)
        if fine is None:
            return
        top = max(-lo, hi)
        if top > self.fine_range:
            self._grow(top)
        if self.fine_range == 0.0:  # everything so far is exactly zero
            self.fine[0] += x.size
            return
        count_abs(x, self.fine, self.fine.size / self.fine_range)

    def _grow(self, top: float) -> None:
        new_range = _power_of_two_at_least(top)
        if self.fine_range == 0.0:
            # only zeros so far (all in bin 0, which stays bin 0 under any range)
            self.fine_range = new_range
            return
        factor = int(math.ceil(new_range / self.fine_range))  # a power of two unless the range overflowed
        while self.fine_range * factor < top:  # guard against float rounding
            factor += 1
        n = self.fine.size
        if factor >= n:  # a jump beyond n x the range (an outlier): every old count lands in bin 0
            merged = np.array([self.fine.sum()], np.int64)
        else:
            pad = (-n) % factor
            merged = np.concatenate([self.fine, np.zeros(pad, np.int64)]).reshape(-1, factor).sum(axis=1)
        self.fine = np.zeros(n, np.int64)
        self.fine[:merged.size] = merged
        self.fine_range *= factor

    def _merged(self):
        if self._view is None:
            self._view = rebin(self.fine, self.fine_range, self.amax, self.bins)
        return self._view

    @property
    def hist(self):
        """``bins`` counts of |x| over ``[0, max |x|]`` (re-binned from the fine counts), or None without
        histograms."""
        return None if self.fine is None else self._merged()[0]

    @property
    def range(self) -> float:
        """Upper edge of :attr:`hist` (0.0 until a non-zero value arrives, or without histograms)."""
        return 0.0 if self.fine is None or self.fine_range == 0.0 else self._merged()[1]

    # ---------------------------------------------------------------------------------------- answers
    @property
    def amax(self) -> float:
        """max(|min|, |max|) of the finite values seen (0.0 when none)."""
        if self.count == 0:
            return 0.0
        return max(abs(self.min), abs(self.max))

    @property
    def width(self) -> float:
        """Width of one histogram bin."""
        return self.range / self.bins

    def summary(self) -> dict:
        """JSON-ready min/max/amax/count/nonfinite."""
        return {"min": None if self.count == 0 else self.min, "max": None if self.count == 0 else self.max,
                "amax": self.amax, "count": self.count, "nonfinite": self.nonfinite}

