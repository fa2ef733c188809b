"""Streaming per-tensor statistics: min, max and a histogram of |x| whose range grows by merging bins.

Memory per tensor is fixed (``bins`` counters), whatever the number of calibration samples: the raw
activations are never kept. When a batch exceeds the histogram's range, the range grows by the smallest
integer factor ``f`` that covers it and every ``f`` adjacent bins merge into one. Merging is exact: a new
bin covers exactly the old bins it replaces, so no count moves to a wrong value range.
"""
from __future__ import annotations

import math
import numpy as np

DEFAULT_BINS = 2048


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
        a = np.abs(x)
        a *= a.dtype.type(self.bins / self.range)
        np.minimum(a, self.bins - 1, out=a)  # x == range goes to the last bin
        self.hist += np.bincount(a.astype(np.int32).ravel(), minlength=self.bins)

    def _grow(self, top: float) -> None:
        if self.range == 0.0:
            # only zeros so far (all in bin 0, which stays bin 0 under any range)
            self.range = top
            return
        factor = int(math.ceil(top / self.range))
        while self.range * factor < top:  # guard against float rounding
            factor += 1
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

