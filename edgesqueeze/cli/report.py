"""``edgesqueeze report``: compare benchmark results side by side (Markdown + PNG plots)."""
from __future__ import annotations

from pathlib import Path

import click

from ..fileio import read_json
from .common import emit, info, json_option, table, warn


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), metavar="DIR",
              help="Folder for report.md and the plots.")
@click.option("--no-plots", is_flag=True, help="Markdown only (no matplotlib needed).")
@click.option("--trtexec-profile", type=click.Path(), default=None, metavar="FILE",
              help="With one trtexec --exportTimes file: its --exportProfile file (per-layer times).")
@json_option
def command(results, out_dir, no_plots, trtexec_profile, as_json):
    """Compare benchmark results in one report: FP32 vs FP16 vs INT8, two devices, or a whole fleet.

    RESULTS are results JSON files from 'edgesqueeze bench' (a file holding a list, as fleet runs write, adds
    each entry), or trtexec --exportTimes JSON files.

    \b
    Examples:
      edgesqueeze report fp32.json fp16.json int8.json -o report/
      edgesqueeze report tx2.json orin-nano.json -o compare/ --json
      edgesqueeze report times.json --trtexec-profile profile.json -o trtexec-report/
      edgesqueeze report results/fleet/*/results.json -o fleet-report/
    """
    from ..bench.report import board_state_warnings, summary_rows, write_report
    from ..bench.schema import load_result, validate_result
    from ..bench.trtexec import import_trtexec, looks_like_export_times

    loaded = []
    for path in results:
        p = Path(path)
        data = read_json(p)
        if looks_like_export_times(data):
            loaded.append(validate_result(import_trtexec(p, trtexec_profile), str(p)))
        elif isinstance(data, list):
            loaded += [validate_result(r, f"{p}[{i}]") for i, r in enumerate(data) if r.get("runs")]
        else:
            loaded.append(load_result(p))
    written = write_report(loaded, out_dir, plots=not no_plots)
    info(f"wrote {written['report']}" + (f" and {len(written) - 1} plot(s)" if len(written) > 1 else ""))
    rows = summary_rows(loaded)
    differ = board_state_warnings(loaded)
    for w in differ:
        warn(w)
    payload = {"written": written, "rows": rows, "board_state_warnings": differ}

    def text(_):
        many = len(loaded) > 1  # the run number tells apart results that share a model name
        return table([[(f"{r['run']}: " if many else "") + f"{r['model']} {r['backend']}/{r['precision']} "
                       f"@{r['device']}", r["batch"],
                       f"{r['median_ms']:.4f}", f"{r['p99_ms']:.4f}", f"{r['throughput_ips']:.1f}",
                       "-" if r["mj_per_inf"] is None else f"{r['mj_per_inf']:.3g}"] for r in rows],
                     ["run", "batch", "median ms", "p99 ms", "inf/s", "mJ/inf"], "lrrrrr")

    emit(payload, as_json, text)
