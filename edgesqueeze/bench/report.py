"""Markdown report (plus PNG plots when matplotlib is installed) comparing one or more benchmark results."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import InputError, MissingDependencyError
from ..fileio import write_text_atomic
from . import plots as P
from .boardstate import board_state_differences, describe_board_state
from .schema import validate_result


def _f(v, fmt="{:.3f}", none="-"):
    return none if v is None else fmt.format(v)


def summary_rows(results: Sequence[dict]) -> List[dict]:
    """One row per run: the numbers the report's table and the CLI print."""
    rows = []
    for index, r in enumerate(results, start=1):
        for run in r["runs"]:
            st = run["latency_ms"]["stats"]
            ps = run.get("power") or {}
            an = (run.get("bandwidth") or {}).get("analytic") or {}
            emc = (run.get("bandwidth") or {}).get("emc") or {}
            rf = an.get("roofline") or {}
            rows.append({
                "run": index, "model": r["model"]["name"], "backend": r["backend"]["name"],
                "precision": r["backend"].get("precision"), "device": r["device"]["profile"],
                "batch": run["batch"], "shape": run.get("shape"),
                "n": st.get("n", len(run["latency_ms"]["samples"])),
                "mean_ms": st["mean"], "median_ms": st["median"], "p90_ms": st["p90"], "p99_ms": st["p99"],
                "min_ms": st["min"], "max_ms": st["max"], "std_ms": st["std"], "cv": st["cv"],
                "throughput_ips": run["throughput_ips"],
                "compute_ms": (run.get("compute_ms") or {}).get("stats", {}).get("mean"),
                "h2d_ms": (run.get("h2d_ms") or {}).get("stats", {}).get("mean"),
                "d2h_ms": (run.get("d2h_ms") or {}).get("stats", {}).get("mean"),
                "avg_w": ps["avg_mw"] / 1000 if ps.get("avg_mw") is not None else None,
                "peak_w": ps["peak_mw"] / 1000 if ps.get("peak_mw") is not None else None,
                "mj_per_inf": ps.get("energy_per_inference_mj"),
                "mj_per_inf_above_idle": ps.get("energy_per_inference_above_idle_mj"),
                "analytic_gbs": an.get("gbs"), "emc_gbs": emc.get("mean_gbs"),
                "achieved_gflops": rf.get("achieved_gflops"), "roof_fraction": rf.get("fraction_of_attainable"),
                "bound": rf.get("bound"),
            })
    return rows


def _run_headers(results: Sequence[dict]) -> List[str]:
    """One paragraph per run: model, device, backend, data, versions, power probe and idle baseline."""
    out = []
    for i, r in enumerate(results, start=1):
        b, d, v = r["backend"], r["device"], r.get("versions") or {}
        where = f"`{r['model']['path']}`, " if r["model"].get("path") else ""
        out.append(f"**Run {i}**: `{r['model']['name']}` ({where}sha256 `{r['model']['sha256'][:12]}`) on "
                   f"**{d['profile']}** ({d.get('display_name') or d.get('hostname', '')}), backend "
                   f"**{b['name']}** {b.get('version') or ''} {b.get('precision') or ''}; data: {r.get('data', '?')}; "
                   f"{r.get('started_at', '')}" + (" — **partial (interrupted)**" if r.get("partial") else ""))
        out.append("  " + describe_board_state(d.get("board_state")))
        if r.get("throttled"):
            out.append("  **throttled**: " + "; ".join((r.get("throttling") or {}).get("reasons") or ["yes"]))
        if v:
            out.append("  versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items()) if val))
        p = r.get("power") or {}
        out.append(f"  power: {p.get('probe', 'none')} — "
                   + (f"total = {p.get('total_source')}; rails: {', '.join(p.get('rails') or []) or '-'}"
                      if p.get("available") else (p.get("reason") or "not measured")))
        if (p.get("idle") or {}).get("mean_mw") is not None:
            out.append(f"  idle baseline: {p['idle']['mean_mw'] / 1000:.3f} W over {p['idle']['duration_s']:.1f} s")
        out.append("")
    return out


def board_state_warnings(results: Sequence[dict]) -> List[str]:
    """Warnings when compared runs differ in board state (nvpmodel mode, jetson_clocks, clock limits, fan)."""
    if len(results) < 2:
        return []
    return board_state_differences([(r.get("device") or {}).get("board_state") for r in results])


def _slowest_layers(results: Sequence[dict]) -> List[str]:
    """The per-layer tables (onnxruntime profiles, trtexec --exportProfile), 15 slowest layers each."""
    out: List[str] = []
    layer_sets = [(i, f"batch {run['batch']}", run["layers"]) for i, r in enumerate(results, start=1)
                  for run in r["runs"] if run.get("layers")]
    layer_sets += [(i, "trtexec --exportProfile", r["layers"]) for i, r in enumerate(results, start=1)
                   if r.get("layers")]
    if layer_sets:
        out += ["## Slowest layers", ""]
        for i, what, layers in layer_sets:
            out += [f"Run {i}, {what}:", "", "| layer | op | median ms | mean ms | share |",
                    "| --- | --- | --- | --- | --- |"]
            for lay in layers[:15]:
                mean_ms = lay.get("average_ms", lay.get("mean_us", 0) / 1000.0)
                med = lay.get("median_ms", lay["median_us"] / 1000.0 if "median_us" in lay else None)
                out.append(f"| {lay['name']} | {lay.get('op', '')} | {_f(med, '{:.4f}')} | {mean_ms:.4f} | "
                           f"{lay['percent']:.1f}% |")
            out.append("")
    return out


def _markdown(results: Sequence[dict], plots: Dict[str, Optional[str]], plot_note: str) -> str:
    out = ["# edgesqueeze benchmark report", ""] + _run_headers(results)
    differ = board_state_warnings(results)
    if differ:
        out += ["## Board state differs between runs", ""] + [f"- **warning**: {w}" for w in differ] + [""]
    rows = summary_rows(results)
    out += ["## Latency", "",
            "| run | model | backend | precision | device | batch | n | mean ms | median ms | p90 ms | p99 ms | std ms | "
            "cv | inf/s |", "|" + " --- |" * 14]
    for x in rows:
        out.append(f"| {x['run']} | {x['model']} | {x['backend']} | {x['precision']} | {x['device']} | {x['shape'] or x['batch']} | {x['n']} | "
                   f"{_f(x['mean_ms'], '{:.4f}')} | {_f(x['median_ms'], '{:.4f}')} | {_f(x['p90_ms'], '{:.4f}')} | "
                   f"{_f(x['p99_ms'], '{:.4f}')} | {_f(x['std_ms'], '{:.4f}')} | {x['cv']:.1%} | "
                   f"{x['throughput_ips']:.1f} |")
    if any(x["compute_ms"] is not None for x in rows):
        out += ["", "| run | model | batch | GPU compute ms | H2D ms | D2H ms | end-to-end ms |", "|" + " --- |" * 7]
        for x in rows:
            out.append(f"| {x['run']} | {x['model']} | {x['shape'] or x['batch']} | {_f(x['compute_ms'], '{:.4f}')} | "
                       f"{_f(x['h2d_ms'], '{:.4f}')} | {_f(x['d2h_ms'], '{:.4f}')} | {x['mean_ms']:.4f} |")
    out += ["", "## Power, energy and memory bandwidth", "",
            "| run | model | device | batch | avg W | peak W | mJ/inference | mJ/inf above idle | analytic GB/s | "
            "EMC GB/s | GFLOP/s | % of roof | bound |", "|" + " --- |" * 13]
    for x in rows:
        out.append(f"| {x['run']} | {x['model']} | {x['device']} | {x['shape'] or x['batch']} | {_f(x['avg_w'])} | {_f(x['peak_w'])} | "
                   f"{_f(x['mj_per_inf'], '{:.4g}')} | {_f(x['mj_per_inf_above_idle'], '{:.4g}')} | "
                   f"{_f(x['analytic_gbs'], '{:.3g}')} | {_f(x['emc_gbs'], '{:.3g}')} | "
                   f"{_f(x['achieved_gflops'], '{:.3g}')} | {_f(x['roof_fraction'], '{:.1%}')} | {x['bound'] or '-'} |")
    out += ["", "Analytic bandwidth = bytes that must move per batch (weights once, each activation written and "
            "read once) / median latency: a lower bound on the real traffic.", ""]
    if len(results) > 1:
        out += ["## Comparison (against the first run, same batch)", "",
                "| run | batch | median speed-up | energy/inference ratio |", "| --- | --- | --- | --- |"]
        first = {x["shape"] or x["batch"]: x for x in summary_rows(results[:1])}
        for i, r in enumerate(results[1:], start=2):
            for x in summary_rows([r]):
                ref = first.get(x["shape"] or x["batch"])
                if ref is None:
                    continue
                ratio = (x["mj_per_inf"] / ref["mj_per_inf"]) if x["mj_per_inf"] and ref["mj_per_inf"] else None
                out.append(f"| {i}: {x['model']} {P.setup_label(r)} | {x['shape'] or x['batch']} | "
                           f"{ref['median_ms'] / x['median_ms']:.2f}x | {_f(ratio, '{:.2f}x')} |")
        out.append("")
    out += _slowest_layers(results)
    warns = [(i, w) for i, r in enumerate(results, start=1) for w in r.get("warnings") or []]
    if warns:
        out += ["## Warnings", ""] + [f"- run {i}: {w}" for i, w in warns] + [""]
    out += ["## Plots", ""]
    if plot_note:
        out.append(plot_note)
    for title, rel in plots.items():
        if rel:
            out.append(f"![{title}]({rel})")
    out.append("")
    return "\n".join(out)


def write_report(results: Sequence[dict], out_dir, *, plots: bool = True) -> Dict[str, str]:
    """Write ``report.md`` and, with matplotlib, ``latency.png``, ``power_<i>.png``, ``roofline.png``.

    Args:
        results: results dicts (validated here; ``stats`` recomputed where absent).
        out_dir: output folder (created).
        plots: draw PNGs (skipped with a note in the report when matplotlib is missing).

    Returns:
        ``{"report": path, "latency": path, "roofline": path | None, "power_1": path, ...}``.

    Raises:
        InputError: no results, or an invalid one.
    """
    if not results:
        raise InputError("no benchmark results to report")
    results = [validate_result(r) for r in results]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the report folder is a file; give a folder (created when absent)", path=str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the report folder: {exc.strerror}", path=str(out)) from exc
    written: Dict[str, str] = {}
    rel: Dict[str, Optional[str]] = {}
    note = ""
    if plots:
        try:
            written["latency"] = str(P.latency_plot(results, out / "latency.png"))
            rel["latency histogram and CDF"] = "latency.png"
            for i, r in enumerate(results, start=1):
                p = P.power_plot(r, out / f"power_{i}.png")
                if p:
                    written[f"power_{i}"] = str(p)
                    rel[f"power trace, run {i}"] = p.name
            roof = P.roofline_plot(results, out / "roofline.png")
            if roof:
                written["roofline"] = str(roof)
                rel["roofline"] = "roofline.png"
            if not any(k.startswith("power") for k in written):
                note = "No power trace: no run measured power (see each run's power line above).\n"
        except MissingDependencyError as exc:
            note = f"Plots skipped: {exc.one_line()}\n"
    else:
        note = "Plots not requested.\n"
    md = out / "report.md"
    write_text_atomic(md, _markdown(results, rel, note))
    written["report"] = str(md)
    return written
