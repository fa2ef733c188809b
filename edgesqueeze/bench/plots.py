"""PNG plots of benchmark results (matplotlib, the ``plots`` extra, imported lazily with the Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

from .._lazy import require
from ..fileio import atomic_path


def _plt():
    mpl = require("matplotlib", "benchmark plots")
    mpl.use("Agg", force=True)
    return require("matplotlib.pyplot", "benchmark plots")


def label(result: dict, run: Optional[dict] = None, index: Optional[int] = None) -> str:
    """A short label: ``[i: ]model backend/precision @device [bN]`` (``index``: the run number in a report,
    which tells apart two results with the same model name, e.g. one model's bundles for two targets)."""
    text = f"{result['model']['name']} {setup_label(result)}"
    return (f"{index}: " if index is not None else "") + text + (f" b{run['batch']}" if run is not None else "")


def setup_label(result: dict) -> str:
    """``backend/precision @device``, leaving out what the result does not know: a trtexec import that holds
    neither precision nor device is "trtexec import", not "trtexec/unknown @unknown"."""
    b, dev = result["backend"], result["device"].get("profile")
    known = [v for v in (b.get("precision"), dev) if v and v != "unknown"]
    if b["name"] == "trtexec" and not known:
        return "trtexec import"
    prec = b.get("precision") if b.get("precision") not in (None, "unknown") else "?"
    return f"{b['name']}/{prec}" + (f" @{dev}" if dev and dev != "unknown" else "")


def _save(fig, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` as PNG (atomically, no timestamp: same bytes each run), close it."""
    try:
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    finally:
        _plt().close(fig)
    return path


def latency_plot(results: List[dict], path) -> Path:
    """Histogram (log bins) and CDF of every run's latency samples, one colour per run and batch size."""
    plt = _plt()
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(11, 4.2))
    many = len(results) > 1
    runs = [(label(r, run, i if many else None), np.asarray(run["latency_ms"]["samples"], float))
            for i, r in enumerate(results, start=1) for run in r["runs"]]
    lo = max(1e-6, min(float(s.min()) for _, s in runs))
    hi = max(float(s.max()) for _, s in runs)
    bins = np.geomspace(lo, hi * 1.001 if hi > lo else lo * 1.01, 80)  # log bins: the tail stays visible
    outline = len(runs) > 3  # filled bars of more than three runs hide each other: step outlines stay readable
    for name, s in runs:
        if outline:
            ax_h.hist(s, bins=bins, histtype="step", lw=1.2, label=name)
        else:
            ax_h.hist(s, bins=bins, alpha=0.55, label=name)
        xs = np.sort(s)
        ax_c.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=name)
        for q, ls in ((50, ":"), (99, "--")):
            ax_c.axvline(np.percentile(s, q), color=ax_c.lines[-1].get_color(), ls=ls, lw=0.8)
    ax_h.set_xscale("log")
    ax_h.set_yscale("log")
    ax_h.set_xlabel("latency per batch (ms)")
    ax_h.set_ylabel("iterations")
    ax_h.set_title("latency histogram (log-log: the slow tail stays visible)", fontsize=9)
    ax_c.set_xlabel("latency per batch (ms)")
    ax_c.set_ylabel("fraction of iterations ≤ x")
    ax_c.set_title("latency CDF (dotted: median, dashed: p99)", fontsize=9)
    ax_c.set_xscale("log")
    ax_c.grid(True, which="both", alpha=0.3)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.6, 1, 2 rather than 6x10^-1, 10^0, 2x10^0
    for ax in (ax_h, ax_c):
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain if hi / lo < 30 else NullFormatter())  # label 2..9 on short spans
    ax_h.yaxis.set_major_formatter(plain)
    ax_h.legend(fontsize=7)
    return _save(fig, Path(path))


def power_plot(result: dict, path) -> Optional[Path]:
    """Total power over time with the idle window and each inference window shaded; None without samples."""
    trace = (result.get("power") or {}).get("trace") or []
    if not trace:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4))
    t = np.asarray([p["t"] for p in trace])
    w = np.asarray([p["mw"] for p in trace]) / 1000.0
    ax.plot(t, w, color="black", lw=1.2, label=f"total ({result['power'].get('total_source') or 'total'})")
    rails = result["power"].get("rails_trace") or []
    if rails:
        names = sorted({k for s in rails for k in s["rails"]} - {result["power"].get("total_source")})
        rt = [s["t"] for s in rails]
        for n in names:
            ax.plot(rt, [s["rails"].get(n, np.nan) / 1000.0 for s in rails], lw=0.8, alpha=0.7, label=n)
    idle = result["power"].get("idle") or {}
    if idle.get("window_s"):
        ax.axvspan(*idle["window_s"], color="grey", alpha=0.2, label=f"idle {idle.get('mean_mw', 0) / 1000:.2f} W")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(result["runs"]):
        if run.get("window_s"):
            ps = run.get("power") or {}
            text = f"batch {run['batch']}"
            if ps.get("energy_per_inference_mj") is not None:
                text += f": {ps['avg_mw'] / 1000:.2f} W, {ps['energy_per_inference_mj']:.3g} mJ/inf"
            ax.axvspan(*run["window_s"], color=colors[i % len(colors)], alpha=0.18, label=text)
    ax.set_xlabel("time since the benchmark started (s)")
    ax.set_ylabel("power (W)")
    ax.set_title(f"power: {label(result)} — probe {result['power'].get('probe')}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, Path(path))


def roofline_plot(results: List[dict], path) -> Optional[Path]:
    """Each run on its target's roofline (log-log FLOP/byte vs GFLOP/s); None when no run has FLOPs."""
    points = []
    roofs = {}
    for i, r in enumerate(results, start=1):
        for run in r["runs"]:
            rf = ((run.get("bandwidth") or {}).get("analytic") or {}).get("roofline")
            if rf and rf.get("intensity_flop_per_byte"):
                points.append((label(r, run, i if len(results) > 1 else None), rf))
                roofs[(r["device"]["profile"], rf["precision"])] = rf
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.2 + 0.16 * (len(points) + len(roofs))))
    xs = [p[1]["intensity_flop_per_byte"] for p in points] + [rf["ridge_flop_per_byte"] for rf in roofs.values()]
    x = np.logspace(np.log10(min(xs) / 4), np.log10(max(xs) * 4), 200)
    for (dev, prec), rf in sorted(roofs.items()):
        y = np.minimum(rf["peak_gflops"], x * rf["peak_gbs"])
        unverified = " (bandwidth unverified)" if "peak_bandwidth_gbs" in (rf.get("unverified") or []) else ""
        ax.plot(x, y, lw=1.5, label=f"{dev} {prec}: {rf['peak_gflops']:.0f} GFLOP/s, {rf['peak_gbs']:.0f} GB/s"
                                    f"{unverified}")
        ax.axvline(rf["ridge_flop_per_byte"], color=ax.lines[-1].get_color(), ls=":", lw=0.8)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, rf) in enumerate(points):  # dots take the colours after the roofs', so none shares a roof's
        ax.scatter([rf["intensity_flop_per_byte"]], [rf["achieved_gflops"]], zorder=3,
                   color=cycle[(len(roofs) + k) % len(cycle)], edgecolors="black",
                   label=f"{name}: {rf['achieved_gflops']:.3g} GFLOP/s ({rf['fraction_of_attainable']:.0%} of roof, "
                         f"{rf['bound']}-bound)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte that must move)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("roofline (analytic bytes: a lower bound on traffic; dotted: ridge point)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    return _save(fig, Path(path))


def log_plot(samples: List[dict], path, interval_ms: float = 1000.0, title: str = "") -> Path:
    """Plot a parsed tegrastats log: total and per-rail power, EMC and GPU load (time from the lines' timestamps
    when every line has one, else line number x interval)."""
    plt = _plt()
    fig, (ax_p, ax_l) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    t, xlabel = log_times(samples, interval_ms)
    total = [s.get("total_mw") for s in samples]
    if any(v is not None for v in total):
        src = next((s["total_source"] for s in samples if s.get("total_source")), "total")
        ax_p.plot(t, [np.nan if v is None else v / 1000 for v in total], color="black", lw=1.4,
                  label=f"total ({src})")
        names = sorted({k for s in samples for k in s["rails"]} - {src})
        for n in names:
            ax_p.plot(t, [s["rails"][n]["cur_mw"] / 1000 if n in s["rails"] else np.nan for s in samples], lw=0.9,
                      label=n)
    ax_p.set_ylabel("power (W)")
    ax_p.grid(True, alpha=0.3)
    ax_p.legend(fontsize=7, loc="best")
    ax_p.set_title(title or "tegrastats log", fontsize=9)
    for key, name in (("emc", "EMC load %"), ("gpu", "GPU (GR3D) load %")):
        ax_l.plot(t, [s[key]["load_pct"] if s.get(key) else np.nan for s in samples], lw=1.0, label=name)
    ax_l.set_ylabel("load (%)")
    ax_l.set_xlabel(xlabel)
    ax_l.set_ylim(0, 100)
    ax_l.grid(True, alpha=0.3)
    ax_l.legend(fontsize=7, loc="best")
    return _save(fig, Path(path))


def log_times(samples: List[dict], interval_ms: float):
    """Seconds since the first sample, and the axis label: from the log's own ``MM-DD-YYYY HH:MM:SS`` stamps when
    every sample has one (a stalled or restarted tegrastats shows as a gap), else line number x interval."""
    from datetime import datetime

    try:
        stamps = [datetime.strptime(s["timestamp"], "%m-%d-%Y %H:%M:%S") for s in samples]
    except (KeyError, TypeError, ValueError):
        stamps = []
    if stamps:
        return (np.array([(x - stamps[0]).total_seconds() for x in stamps]),
                "time (s since the log's first timestamp)")
    return np.arange(len(samples)) * interval_ms / 1000.0, f"time (s; line number x {interval_ms:g} ms interval)"
