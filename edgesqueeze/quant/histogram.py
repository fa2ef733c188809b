"""Streaming per-tensor statistics: min, max and a histogram of |x| whose range grows by merging bins.

Memory per tensor is fixed (``bins`` counters), whatever the number of calibration samples: the raw
activations are never kept. The range is a power of two: the smallest one that covers the first non-zero
batch, doubled (every two adjacent bins merged into one) as often as a later batch needs. Merging is exact: a
new bin covers exactly the old bins it replaces, so no count moves to a wrong value range. Because the
final range is the smallest power of two >= max |x| whatever the order and grouping of the data, the
histogram does not depend on how the samples were batched (the data fills between half and all of the bins).
"""
from __future__ import annotations

import math
import numpy as np

DEFAULT_BINS = 2048


def _count_abs_numpy(x: np.ndarray, hist: np.ndarray, scale: float) -> None:
    """``hist[min(int(|v| * scale), bins - 1)] += 1`` for every (finite) value v of ``x``, in numpy.

    The product is computed in ``x``'s precision (float32 for float32 tensors), as the C kernel does.
    """
    a = np.abs(x)
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


class TensorHistogram:
    """Streaming statistics of one tensor.

    Attributes:
        bins: number of histogram bins (2048 for TensorRT's entropy calibration).
        hist: int64 counts of |x| over ``[0, range)`` (the last bin also holds x == range), or None when
            histograms are off.
        range: upper edge of the histogram (0 until a non-zero value arrives).
        min, max: the smallest and largest finite value seen. count: finite values seen.
        nonfinite: NaN/Inf values seen (they are reported, and excluded from every statistic).
    """

    __slots__ = ("bins", "hist", "range", "min", "max", "count", "nonfinite", "batches")

    def __init__(self, bins: int = DEFAULT_BINS, histogram: bool = True):
        self.bins = int(bins)
        self.hist = np.zeros(self.bins, np.int64) if histogram else None
        self.range = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0
        self.batches = 0

    # ---------------------------------------------------------------------------------------- update
    def update(self, x: np.ndarray) -> None:
        """Add the values of ``x`` (any shape, float) to the statistics."""
        x = np.asarray(x)
        if x.size == 0:
            return
        if x.dtype != np.float32 and x.dtype != np.float64:
            x = x.astype(np.float32)
        self.batches += 1
        if self.range > 0.0 and self.hist is not None and _histc is not None and x.dtype == np.float32:
            # one C pass: min/max, NaN/Inf and the counts, kept when nothing lies beyond the range
            lo, hi, bad, counted = _histc.update_abs(np.ascontiguousarray(x), self.hist, self.bins / self.range,
                                                     self.range)
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
        if self.hist is None:
            return
        top = max(-lo, hi)
        if top > self.range:
            self._grow(top)
        if self.range == 0.0:  # everything so far is exactly zero
            self.hist[0] += x.size
            return
        count_abs(x, self.hist, self.bins / self.range)

    def _grow(self, top: float) -> None:
        new_range = _power_of_two_at_least(top)
        if self.range == 0.0:
            # only zeros so far (all in bin 0, which stays bin 0 under any range)
            self.range = new_range
            return
        factor = int(math.ceil(new_range / self.range))  # a power of two unless the range overflowed
        while self.range * factor < top:  # guard against float rounding
            factor += 1
        if factor >= self.bins:  # a jump beyond bins x the range (an outlier): every old count lands in bin 0
            merged = np.array([self.hist.sum()], np.int64)
        else:
            pad = (-self.bins) % factor
            merged = np.concatenate([self.hist, np.zeros(pad, np.int64)]).reshape(-1, factor).sum(axis=1)
        self.hist = np.zeros(self.bins, np.int64)
        self.hist[:merged.size] = merged
        self.range *= factor

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

