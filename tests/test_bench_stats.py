"""Latency statistics against numpy, and the power/energy arithmetic on known traces."""
import math

import numpy as np
import pytest

from edgesqueeze.bench.power import energy_between, idle_summary, power_trace, window_summary
from edgesqueeze.bench.stats import noisy_warning, percentile, summarize, throughput
from edgesqueeze.errors import InputError


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summarize_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    x = rng.lognormal(mean=0.0, sigma=0.5, size=1001 + seed)
    s = summarize(x.tolist())
    assert s["n"] == x.size
    assert s["min"] == pytest.approx(x.min())
    assert s["max"] == pytest.approx(x.max())
    assert s["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert s["median"] == pytest.approx(np.median(x), rel=1e-12)
    for q in (90, 95, 99):
        assert s[f"p{q}"] == pytest.approx(np.percentile(x, q), rel=1e-12)
    assert s["std"] == pytest.approx(x.std(), rel=1e-12)
    assert s["cv"] == pytest.approx(x.std() / x.mean(), rel=1e-12)


def test_pure_python_percentile_matches_numpy():
    x = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.5]
    for q in (0, 10, 50, 90, 95, 99, 100):
        assert percentile(x, q) == pytest.approx(np.percentile(x, q))


def test_single_sample_and_bad_samples():
    s = summarize([2.5])
    assert s["min"] == s["max"] == s["median"] == s["p99"] == 2.5 and s["std"] == 0.0 and s["cv"] == 0.0
    with pytest.raises(InputError, match="no latency samples"):
        summarize([])
    with pytest.raises(InputError, match="NaN"):
        summarize([1.0, math.nan])


def test_noisy_warning_and_throughput():
    assert noisy_warning(summarize([1.0, 1.01, 0.99])) is None
    w = noisy_warning(summarize([1.0, 3.0, 1.0, 5.0]), "batch 4")
    assert w.startswith("batch 4: latency is noisy")
    assert throughput(8, 2.0) == pytest.approx(4000.0)
    assert throughput(1, 0.0) == 0.0


def _samples(ts, mw):
    return [{"t": t, "total_mw": p, "rails": {}, "energy_mj": None} for t, p in zip(ts, mw)]


def test_energy_of_constant_and_ramp_power():
    s = _samples(np.arange(0, 10.01, 0.1), [2000.0] * 101)
    assert energy_between(s, 2.0, 5.0) == pytest.approx(6000.0)  # 2 W x 3 s = 6 J
    ramp = _samples(np.arange(0, 10.01, 0.5), np.arange(0, 10.01, 0.5) * 100.0)  # P = 100 t mW
    # integral of 100 t from 1.25 to 3.75 = 50 (3.75^2 - 1.25^2) = 625 mJ; piecewise-linear is exact
    assert energy_between(ramp, 1.25, 3.75) == pytest.approx(625.0)


def test_energy_from_counter_with_interpolation():
    ts = np.arange(0, 5.01, 0.5)
    counter = [{"t": t, "total_mw": None, "rails": {}, "energy_mj": 1500.0 * t + 7.0} for t in ts]  # 1.5 W
    assert energy_between(counter, 0.75, 3.3) == pytest.approx(1500.0 * 2.55)
    t, p = power_trace(counter)
    assert np.allclose(p, 1500.0) and t.size == ts.size - 1


def test_window_summary_idle_and_reliability():
    ts = np.arange(0, 6.01, 0.05)
    mw = np.where((ts >= 2.0) & (ts <= 4.0), 5000.0, 1000.0)
    s = _samples(ts, mw)
    idle = idle_summary(s, 0.0, 1.5)
    assert idle["mean_mw"] == pytest.approx(1000.0)
    w = window_summary(s, 2.1, 3.9, inferences=900, idle_mw=idle["mean_mw"], interval_ms=50)
    assert w["reliable"] and w["avg_mw"] == pytest.approx(5000.0)
    assert w["peak_mw"] == 5000.0
    assert w["energy_per_inference_mj"] == pytest.approx(5000.0 * 1.8 / 900)
    assert w["energy_per_inference_above_idle_mj"] == pytest.approx(4000.0 * 1.8 / 900)
    short = window_summary(s, 2.5, 2.52, inferences=10, idle_mw=1000.0, interval_ms=50)
    assert not short["reliable"] and "run longer" in short["note"]
    assert window_summary([], 0, 1, 10)["note"] == "no power samples"
