"""The timing harness: idle baseline, warm-up, timed loop per batch size, power and bandwidth, one result.

The timed loop keeps every sample and does nothing else per iteration but two ``perf_counter_ns``
reads, the call and a list append (the progress callback runs every 32 iterations); its own cost is
measured as the loop's wall time minus the sum of the samples and reported per run.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from .._lazy import versions
from ..backends.base import Runner
from ..devices import cpu_profile, get_profile
from ..errors import EdgeSqueezeError, InputError
from ..fileio import sha256_file
from ..model import model_hash
from .bandwidth import analytic, emc_bandwidth, model_costs
from .feeds import batch_feeds, collect_feeds
from .power import idle_summary, power_trace, window_summary
from .probes import PowerProbe, PowerSampler, select_probe
from .schema import SCHEMA
from .stats import noisy_warning, summarize, throughput

Progress = Callable[[str, float, Optional[float]], None]
_EVERY = 32


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _timed_loop(runner, feeds, iterations: Optional[int], duration: Optional[float], progress: Optional[Progress],
                phase: str):
    """Run the loop; return (latency ns, device-time dicts, wall s, t_start, t_end, interrupted by Ctrl-C)."""
    infer = runner.infer
    dev_times = runner.device_times
    measure_dev = type(runner).device_times is not Runner.device_times
    perf = time.perf_counter_ns
    nf = len(feeds)
    samples: List[int] = []
    dev: List[dict] = []
    append = samples.append
    t_start = time.perf_counter()
    deadline = t_start + duration if duration else None
    deadline_ns = perf() + int(duration * 1e9) if duration else None
    i = t1 = 0
    interrupted = False
    try:
        while True:
            if deadline is None:
                if i >= iterations:
                    break
            elif i and t1 >= deadline_ns:
                break
            f = feeds[i % nf]
            t0 = perf()
            infer(f, False)
            t1 = perf()
            append(t1 - t0)
            if measure_dev:
                d = dev_times()
                if d:
                    dev.append(d)
            i += 1
            if progress is not None and i % _EVERY == 0:
                if deadline is None:
                    progress(phase, i, iterations)
                else:
                    progress(phase, min(duration, time.perf_counter() - t_start), duration)
    except KeyboardInterrupt:
        if not samples:
            raise
        interrupted = True
    t_end = time.perf_counter()
    return samples, dev, t_end - t_start, t_start, t_end, interrupted


def _warmup(runner, feeds, warmup: int, warmup_s: Optional[float]) -> int:
    n = 0
    end = time.perf_counter() + warmup_s if warmup_s else None
    while (end is None and n < warmup) or (end is not None and time.perf_counter() < end):
        runner.infer(feeds[n % len(feeds)], False)
        n += 1
    return n


def _timing(values: Sequence[float]) -> dict:
    vals = [round(float(v), 6) for v in values]
    return {"samples": vals, "stats": summarize(vals)}


def _check_counts(warmup, iterations, duration, batch_sizes) -> List[int]:
    """Raise InputError for a count the harness cannot run; return the batch sizes as ints."""
    if duration is None and (iterations is None or int(iterations) < 1):
        raise InputError(f"iterations must be at least 1, got {iterations}")
    if duration is not None and duration <= 0:
        raise InputError(f"duration must be positive, got {duration}")
    if warmup < 0:
        raise InputError(f"warmup must be >= 0, got {warmup}")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise InputError(f"batch sizes must be positive integers, got {sizes}")
    return sizes


def _probe(power, sysfs_root: str, interval_ms: float) -> PowerProbe:
    probe = power if isinstance(power, PowerProbe) else select_probe(power, sysfs_root=sysfs_root,
                                                                     interval_ms=interval_ms)
    probe.interval_ms = interval_ms
    return probe


def _sweep(runs: List[dict], warnings: List[str], points, run_one) -> bool:
    """Run every batch size or shape set in turn; a point that cannot run is skipped with a warning (unless it is
    the only one). Returns True when interrupted."""
    for b in points:
        try:
            run = run_one(b)
        except KeyboardInterrupt:
            return True
        except EdgeSqueezeError as exc:
            if len(points) == 1:
                raise
            warnings.append(f"{_point_label(b)} skipped: {exc.one_line()}")
            continue
        runs.append(run)
        if run.pop("_interrupted", False):
            return True
    return False


def run_benchmark(runner, reader_or_feeds, *, warmup: int = 10, iterations: int = 100,
                  duration: Optional[float] = None, warmup_s: Optional[float] = None,
                  batch_sizes: Sequence[int] = (1,), power="auto", profile=None,
                  power_interval_ms: float = 50.0, idle_s: Optional[float] = None, sysfs_root: str = "/sys",
                  progress: Optional[Progress] = None, model_info: Optional[dict] = None,
                  data_description: Optional[str] = None,
                  shapes: Optional[Sequence[Mapping[str, Sequence[int]]]] = None) -> dict:
    """Benchmark ``runner`` and return a results dict (schema ``edgesqueeze.bench/1``).

    Args:
        runner: an (in)active :class:`~edgesqueeze.backends.Runner`; the harness activates what it needs
            and deactivates what it activated.
        reader_or_feeds: a data reader (iterable of feed dicts), a list of feed dicts, or one feed dict.
        warmup, warmup_s: warm-up iterations, or seconds when ``warmup_s`` is given.
        iterations, duration: timed iterations, or seconds when ``duration`` is given.
        batch_sizes: batch sizes to sweep; a size the model cannot run is skipped with a warning.
        power: ``auto``, ``tegrastats``, ``ina3221``, ``nvml``, ``rapl``, ``none``, or a PowerProbe.
        profile: device profile (name or object) for the roofline and EMC bandwidth (default: this CPU for
            onnxruntime and the no-op runner).
        power_interval_ms: sampling interval. idle_s: idle baseline length (default 1 s when power is measured).
        progress: ``progress(phase, done, total)`` callback.
        model_info: ``{"name", "path", "sha256"}`` (default: from the runner).
        data_description: how the data was made (default: the reader's ``describe()`` or "feeds").
        shapes: input shapes to sweep instead of ``batch_sizes`` (``[{input: dims}, ...]``, a model with dynamic
            inputs): one run per shape set, on seeded random inputs of the feeds' dtypes; each run's ``shape``
            says which (trtexec's syntax) and its ``batch`` is the first input's first dimension.

    Returns:
        The results dict; ``partial`` is True when interrupted (Ctrl-C) after at least one sample.

    Raises:
        InputError: bad counts, no batch size could run, or the feeds do not fit the model.
    """
    batch_sizes = _check_counts(warmup, iterations, duration, batch_sizes)
    started = _now()
    origin = time.perf_counter()
    prof = _resolve_profile(runner, profile)
    base_feeds = collect_feeds(reader_or_feeds)
    points = [shape_point(base_feeds, s) for s in shapes] if shapes else batch_sizes
    probe = _probe(power, sysfs_root, power_interval_ms)
    owned = not runner.is_active
    sampler = PowerSampler(probe, power_interval_ms).start()
    warnings: List[str] = []
    runs: List[dict] = []
    partial = False
    idle = None
    try:
        if probe.available:
            t0 = time.perf_counter()
            time.sleep(idle_s if idle_s is not None else max(1.0, 5 * power_interval_ms / 1000.0))
            idle = (t0, time.perf_counter())
        partial = _sweep(runs, warnings, points,
                         lambda b: _run_batch(runner, base_feeds, b, warmup, warmup_s, iterations, duration,
                                              progress, probe))
        if probe.available:
            time.sleep(min(0.5, 2 * power_interval_ms / 1000.0))  # bracket the last window's end
    finally:
        power_samples = sampler.stop()
        if owned and runner.is_active:
            runner.deactivate()
    if not runs:
        if partial:
            raise KeyboardInterrupt  # interrupted before the first sample: nothing to keep
        raise InputError("no benchmark run completed: " + "; ".join(warnings))
    result = _assemble(runner, runs, probe, power_samples, idle, origin, prof, warnings, base_feeds,
                       reader_or_feeds, model_info, data_description,
                       dict(warmup=warmup, warmup_s=warmup_s, iterations=iterations, duration_s=duration,
                            batch_sizes=batch_sizes, **({"shapes": [p.spec for p in points]} if shapes else {}),
                            power=power if isinstance(power, str) else probe.name,
                            power_probe=probe.name, power_interval_ms=power_interval_ms,
                            idle_s=None if idle is None else idle[1] - idle[0]))
    result.update(partial=partial, started_at=started, finished_at=_now())
    return result


def _resolve_profile(runner, profile):
    if profile is not None:
        return get_profile(profile)
    return cpu_profile() if runner.name in ("ort", "noop") else None


class ShapePoint(NamedTuple):
    """One point of a ``--shapes`` sweep: the inputs' shapes, random feeds of those shapes, the batch."""

    spec: str  # trtexec's syntax, images:1x3x320x320
    feeds: List[Dict[str, np.ndarray]]
    batch: int


def shape_point(base_feeds: List[Dict[str, np.ndarray]], shape: Mapping[str, Sequence[int]], count: int = 8,
                seed: int = 0) -> ShapePoint:
    """Seeded random feeds of ``shape`` ({input: dims}) with the inputs and dtypes of ``base_feeds``.

    Raises:
        InputError: ``shape`` names an input the model does not have, or leaves one out.
    """
    names = list(base_feeds[0])
    unknown = [n for n in shape if n not in names]
    missing = [n for n in names if n not in shape]
    if unknown or missing:
        raise InputError(f"--shapes names {', '.join(unknown) or 'no'} unknown input(s) and leaves out "
                         f"{', '.join(missing) or 'none'}; the model's inputs are: {', '.join(names)}")
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for n in names:
            dtype, dims = base_feeds[0][n].dtype, tuple(int(d) for d in shape[n])
            feed[n] = (rng.standard_normal(dims).astype(dtype) if dtype.kind == "f"
                       else rng.integers(0, 2 if dtype.kind == "b" else 10, size=dims).astype(dtype))
        feeds.append(feed)
    first = tuple(shape[names[0]])
    spec = ",".join(f"{n}:{'x'.join(str(int(d)) for d in shape[n])}" for n in names)
    return ShapePoint(spec, feeds, int(first[0]) if first else 1)


def _point_label(point) -> str:
    return f"shape {point.spec}" if isinstance(point, ShapePoint) else f"batch {point}"


def _run_label(run: dict) -> str:
    return f"shape {run['shape']}" if run.get("shape") else f"batch {run['batch']}"


def _run_batch(runner, base_feeds, point, warmup, warmup_s, iterations, duration, progress, probe) -> dict:
    """One run: a batch size (the model re-batched) or a :class:`ShapePoint` (a dynamic model at that shape)."""
    shaped = isinstance(point, ShapePoint)
    batch = point.batch if shaped else point
    r = runner if shaped else runner.for_batch(batch)
    activated = not r.is_active
    if activated:
        r.activate()
    try:
        feeds = point.feeds if shaped else batch_feeds(base_feeds, batch)
        r.infer(feeds[0], True)  # validate once, outside the timed loop
        if progress:
            progress(f"warm-up {point.spec if shaped else f'b{batch}'}", 0, None)
        n_warm = _warmup(r, feeds, warmup, warmup_s)
        gpm = probe.gpm_start() if hasattr(probe, "gpm_start") else None
        ns, dev, wall, t_start, t_end, interrupted = _timed_loop(r, feeds, iterations, duration, progress,
                                                                 _point_label(point))
        lat_ms = [v / 1e6 for v in ns]
        run = {"batch": batch, **({"shape": point.spec} if shaped else {}),
               "iterations": len(ns), "warmup_iterations": n_warm, "inferences": len(ns) * batch,
               "latency_ms": _timing(lat_ms), "compute_ms": None, "h2d_ms": None, "d2h_ms": None,
               "wall_s": wall, "_window": (t_start, t_end), "_interrupted": interrupted}
        run["throughput_ips"] = throughput(batch, run["latency_ms"]["stats"]["mean"])
        run["harness_overhead_us"] = max(0.0, (wall - sum(ns) / 1e9) / max(1, len(ns)) * 1e6)
        if dev:
            for key in ("compute_ms", "h2d_ms", "d2h_ms"):
                vals = [d[key] for d in dev if d.get(key) is not None]
                if vals:
                    run[key] = _timing(vals)
        if gpm is not None:
            run["_gpm_dram_util_pct"] = probe.gpm_dram_bw_util(gpm)
        if getattr(r, "profile_layers", False) and hasattr(r, "layer_profile"):
            run["layers"] = r.layer_profile()  # warm-up and timed iterations, per node
        run["backend"] = r.describe()
        run["_model"] = getattr(r, "model", None)
        return run
    finally:
        if activated and r is not runner:
            r.deactivate()  # the caller's own runner stays active until run_benchmark ends


def _assemble(runner, runs, probe, samples, idle, origin, prof, warnings, base_feeds, source, model_info,
              data_description, options) -> dict:
    backend = runs[0].pop("backend")
    for r in runs[1:]:
        r.pop("backend", None)
    model = runs[0].get("_model")
    idle_sum = idle_summary(samples, *idle) if idle else None
    idle_mw = idle_sum["mean_mw"] if idle_sum else None
    precision = backend.get("precision") or "fp32"
    costs = None
    if model is not None:
        try:
            costs = model_costs(model, prof, precision)
        except Exception as exc:  # noqa: BLE001 - bandwidth is an extra; never lose the timing over it
            warnings.append(f"analytic bandwidth unavailable: {type(exc).__name__}: {exc}")
    for run in runs:
        run.pop("_model", None)
        t0, t1 = run.pop("_window")
        run["window_s"] = [t0 - origin, t1 - origin]
        if run.get("layers"):
            warnings.append(f"{_run_label(run)}: per-layer profiling was on; its own cost is in the latency")
        w = noisy_warning(run["latency_ms"]["stats"], _run_label(run))
        if w:
            warnings.append(w)
        bw = {}
        if costs is not None:
            bw["analytic"] = analytic(costs, run["batch"], run["latency_ms"]["stats"]["median"], prof, precision)
        emc = emc_bandwidth(samples, prof, t0, t1)
        if emc:
            bw["emc"] = emc
        gpm = run.pop("_gpm_dram_util_pct", None)
        if gpm is not None:
            bw["nvml_gpm"] = {"dram_bw_util_pct": gpm}
        run["bandwidth"] = bw
        if probe.available:
            ps = window_summary(samples, t0, t1, run["inferences"], idle_mw, probe.interval_ms)
            ps["window_s"] = [t0 - origin, t1 - origin]
            run["power"] = ps
            if not ps["reliable"]:
                warnings.append(f"{_run_label(run)}: {ps['note']}")
        else:
            run["power"] = None
    if any(s.get("emc") for s in samples) and not getattr(prof, "memory_bus_bits", None):
        warnings.append(f"tegrastats reports EMC load, but the profile '{getattr(prof, 'name', None)}' has no memory "
                        "bus width: give --target (e.g. orin-nano) for the EMC bandwidth")
    power = probe.describe()
    power["idle"] = idle_sum
    if idle:
        power["idle"] = dict(idle_sum or {}, window_s=[idle[0] - origin, idle[1] - origin])
    t, p = power_trace(samples)
    power["trace"] = [{"t": round(float(a) - origin, 4), "mw": round(float(b), 3)} for a, b in zip(t, p)]
    if samples and samples[0].get("rails"):
        power["rails_trace"] = [{"t": round(s["t"] - origin, 4), "rails": s["rails"]} for s in samples]
    if not probe.available and not power.get("reason"):
        power["reason"] = "not measurable here"
    info = model_info or _model_info(runner)
    if data_description is None:
        describe = getattr(source, "describe", None)
        data_description = describe() if callable(describe) else f"{len(base_feeds)} feed dict(s) given in memory"
    return {
        "schema": SCHEMA, "model": info,
        "device": _device(prof), "backend": backend, "versions": versions(runtime=True), "options": options,
        "data": data_description, "runs": runs, "power": power,
        "bandwidth": {"costs_per_inference": costs, "peak_gbs": prof.peak_bandwidth / 1e9 if prof else None,
                      "sources": sorted({k for r in runs for k in r["bandwidth"]})},
        "warnings": warnings,
    }


def _model_info(runner) -> dict:
    path = getattr(runner, "path", None)
    if path:
        return {"name": os.path.splitext(os.path.basename(path))[0], "path": str(path), "sha256": sha256_file(path)}
    model = getattr(runner, "model", None)
    if model is not None:
        return {"name": model.graph.name or "model", "path": None, "sha256": model_hash(model)}
    return {"name": runner.name, "path": None, "sha256": "none"}


def _device(prof) -> dict:
    d = {"profile": prof.name if prof else "unknown", "hostname": socket.gethostname(),
         "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
    if prof is not None:
        d["display_name"] = prof.display_name
    return d
