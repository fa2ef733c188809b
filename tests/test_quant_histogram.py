"""Streaming |x| histograms: the C kernel against numpy, power-of-two ranges, independence from batching."""
from __future__ import annotations

import numpy as np
import pytest

from edgesqueeze.quant import histogram as hmod
from edgesqueeze.quant.histogram import TensorHistogram, _count_abs_numpy, count_abs

needs_c = pytest.mark.skipif(hmod._histc is None, reason="the optional C kernel edgesqueeze.quant._histc was not "
                                                         "built (no C compiler at install time)")


def _data(kind, n, rng):
    x = rng.normal(0, 1, n).astype(np.float32)
    if kind == "relu":
        x = np.maximum(x, 0)
    elif kind == "spiky":
        x[::3] = 0
        x[:1] = 5.0
    elif kind == "cauchy":
        x = rng.standard_cauchy(n).astype(np.float32)
    elif kind == "levels":  # values exactly on bin edges
        x = (rng.integers(0, 65, n) / 32.0).astype(np.float32)
    return x


@needs_c
@pytest.mark.parametrize("kind", ["gauss", "relu", "spiky", "cauchy", "levels"])
def test_c_kernel_counts_equal_numpy(kind):
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 5, 1001, 65_537):
        x = _data(kind, n, rng)
        top = float(np.abs(x).max()) or 1.0
        for bins, range_ in ((2048, top), (2048, 2.0 ** np.ceil(np.log2(top))), (128, top), (1, top)):
            fast, slow = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
            count_abs(x, fast, bins / range_)
            _count_abs_numpy(x, slow, bins / range_)
            assert fast.sum() == n
            np.testing.assert_array_equal(fast, slow)


@needs_c
def test_c_kernel_takes_strided_views_and_keeps_adding():
    x = np.random.default_rng(1).normal(size=(64, 33)).astype(np.float32).T  # not C-contiguous
    hist = np.zeros(2048, np.int64)
    count_abs(x, hist, 100.0)
    count_abs(x, hist, 100.0)
    ref = np.zeros(2048, np.int64)
    _count_abs_numpy(np.ascontiguousarray(x), ref, 100.0)
    np.testing.assert_array_equal(hist, 2 * ref)


def test_fine_range_is_a_power_of_two_and_the_reported_range_is_max_abs():
    h = TensorHistogram()
    h.update(np.array([0.0, -0.3, 0.2], np.float32))
    assert h.fine_range == 0.5 and h.fine.size == 2048 * 8
    # the calibrators read 2048 bins over exactly [0, max|x|], as TensorRT's published calibrator does
    assert h.range == np.float32(0.3) and h.hist.shape == (2048,) and h.hist.sum() == 3
    assert h.hist[0] == 1 and h.hist[-1] == 1 and h.hist[1360:1370].sum() == pytest.approx(1.0)
    h.update(np.array([3.0], np.float32))  # fine range grows by 8: every 8 fine bins merge into one
    assert h.fine_range == 4.0 and h.range == 3.0 and h.hist.sum() == 4 and h.hist[-1] == 1
    i2, i3 = int(0.2 * 2048 / 3.0), int(0.3 * 2048 / 3.0)
    assert h.hist[i2 - 1:i2 + 2].sum() == pytest.approx(1.0) and h.hist[i3 - 1:i3 + 2].sum() == pytest.approx(1.0)
    h.update(np.array([4.0], np.float32))  # exactly the fine range: the last bin, no growth
    assert h.fine_range == 4.0 and h.range == 4.0 and h.hist[-1] == 1


@pytest.mark.parametrize("seed", range(20))
def test_reported_histogram_is_numpy_s_over_zero_to_max_abs(seed):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=1000) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
    h = TensorHistogram()
    for part in np.array_split(x, 7):
        h.update(part)
    top = float(np.abs(x).max())
    assert h.range == top and h.width == top / 2048 and h.hist.sum() == pytest.approx(x.size)
    ref, _ = np.histogram(np.abs(x), bins=2048, range=(0.0, top))
    # re-binned from fine bins (4 to 8 per bin): every bin edge is off by at most one fine bin's count
    assert np.abs(np.cumsum(h.hist) - np.cumsum(ref)).max() <= h.fine.max() + 1e-6


@pytest.mark.parametrize("kind", ["gauss", "relu", "cauchy"])
def test_histogram_does_not_depend_on_batching_or_order(kind):
    rng = np.random.default_rng(2)
    x = _data(kind, 40_000, rng)
    whole = TensorHistogram()
    whole.update(x)
    for sizes in ([1000] * 40, [1, 39_999], [39_999, 1]):
        parts = TensorHistogram()
        order = rng.permutation(x.size)
        start = 0
        for size in sizes:
            parts.update(x[order[start:start + size]])
            start += size
        assert (parts.fine_range, parts.range) == (whole.fine_range, whole.range)
        assert (parts.min, parts.max, parts.count) == (whole.min, whole.max, whole.count)
        np.testing.assert_array_equal(parts.hist, whole.hist)


@needs_c
def test_one_pass_c_update_equals_the_numpy_update(monkeypatch):
    rng = np.random.default_rng(5)
    batches = [_data(kind, n, rng) * s for kind, n, s in
               [("relu", 5000, 1.0), ("gauss", 3, 0.5), ("gauss", 7000, 1.0), ("cauchy", 999, 1.0),
                ("levels", 4096, 1.0), ("gauss", 1, 0.0)]]
    batches[2][::97] = np.nan
    batches[3][:5] = [np.inf, -np.inf, np.nan, 1e30, -1e30]
    batches.append(np.full(10, np.nan, np.float32))

    def run():
        h = TensorHistogram()
        for b in batches:
            h.update(b)
        return h

    fast = run()
    monkeypatch.setattr(hmod, "_histc", None)
    slow = run()
    assert (fast.range, fast.min, fast.max, fast.count, fast.nonfinite, fast.batches) == \
        (slow.range, slow.min, slow.max, slow.count, slow.nonfinite, slow.batches)
    assert fast.nonfinite == 7000 // 97 + 1 + 3 + 10
    np.testing.assert_array_equal(fast.hist, slow.hist)


@needs_c
def test_calibration_gives_the_same_ranges_with_and_without_the_c_kernel(monkeypatch):
    from pathlib import Path

    from edgesqueeze.data import open_data
    from edgesqueeze.model import load_model
    from edgesqueeze.quant import calibrate

    digits = Path(__file__).resolve().parents[1] / "examples" / "digits"
    model = load_model(digits / "digits_cnn.onnx")

    def ranges():
        return {m: calibrate(model, open_data(str(digits / "calib.npz"), model), method=m)
                for m in ("entropy", "percentile", "mse", "minmax")}

    fast = ranges()
    monkeypatch.setattr(hmod, "_histc", None)
    assert ranges() == fast


def test_numpy_counts_take_a_0d_tensor():
    """A scalar activation (YOLOv8's graph has them) is counted, not an internal error."""
    from edgesqueeze.quant.histogram import _count_abs_numpy

    hist = np.zeros(8, np.int64)
    _count_abs_numpy(np.array(2.5, np.float32), hist, 1.0)
    assert hist.tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
