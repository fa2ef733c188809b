"""``edgesqueeze power``: analyse a recorded tegrastats log."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from .common import emit, info, json_option, table, target_option, warn


_TEGRASTATS_FIELDS = ("ram", "rails", "cpu", "emc", "gpu", "total_mw")


def power_from_log(path, target=None, strict: bool = False, samples: bool = False) -> dict:
    """Parse a tegrastats log file and summarise it (the Python function behind ``power --from-log``).

    Args:
        path: the log (``tegrastats --logfile`` output or captured stdout).
        target: device profile name; adds EMC bandwidth (needs the profile's memory bus width).
        strict: fail at the first malformed line instead of skipping it.
        samples: include every parsed sample in the result.

    Returns:
        ``{"path", "lines", "skipped", "errors", "summary", "samples"?}``.

    Raises:
        InputError: unreadable file, no valid line, or (strict) a malformed line.
    """
    from ..bench.tegrastats import parse_log, summarize_samples
    from ..devices import get_profile

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read the log: {exc.strerror}", path=str(p)) from exc
    try:
        parsed = parse_log(text, strict=strict)
    except InputError as exc:
        raise InputError(exc.message, path=str(p)) from exc
    # the line parser is lenient (a word such as "IR 10" reads as an engine clock): a line is a tegrastats
    # sample only when it holds one of tegrastats' own fields, and a log is one only when most lines are
    real = [x for x in parsed["samples"] if any(x.get(k) for k in _TEGRASTATS_FIELDS)]
    if not real or len(real) < parsed["lines"] / 2:
        what = (f"no tegrastats line in {parsed['lines']} line(s)" if not real else
                f"not a tegrastats log: only {len(real)} of {parsed['lines']} lines are tegrastats lines")
        raise InputError(what, path=str(p), hint="record one with: tegrastats --interval 100 --logfile tegrastats.log")
    parsed["skipped"] += len(parsed["samples"]) - len(real)
    parsed["samples"] = real
    profile = get_profile(target) if target else None
    out = {"path": str(p), "lines": parsed["lines"], "skipped": parsed["skipped"], "errors": parsed["errors"],
           "target": profile.name if profile else None, "summary": summarize_samples(parsed["samples"], profile)}
    if samples:
        out["samples"] = parsed["samples"]
    return out


def _text(r: dict) -> str:
    s = r["summary"]

    def st(x, scale=1.0, fmt="{:.1f}"):
        return ["-", "-", "-"] if not x else [fmt.format(x["mean"] * scale), fmt.format(x["min"] * scale),
                                              fmt.format(x["max"] * scale)]

    lines = [f"{r['path']}: {s['samples']} samples" + (f", {r['skipped']} malformed line(s) skipped" if r["skipped"]
                                                       else "")]
    rows = [[name, *st(v)] for name, v in s["rails_mw"].items()]
    if s["total_mw"]:
        rows.append(["total", *st(s["total_mw"])])
    if rows:
        lines += ["", table(rows, ["rail (mW)", "mean", "min", "max"])]
        if s["total_source"]:
            lines.append(f"total = {s['total_source']}")
    other = [["EMC load %", *st(s["emc_pct"])], ["EMC clock MHz", *st(s["emc_mhz"], fmt="{:.0f}")],
             ["GPU load %", *st(s["gpu_pct"])], ["GPU clock MHz", *st(s["gpu_mhz"], fmt="{:.0f}")],
             ["CPU load % (online cores)", *st(s["cpu_pct"])], ["RAM used MB", *st(s["ram_used_mb"], fmt="{:.0f}")]]
    if s.get("emc_bandwidth_gbs"):
        other.append(["EMC bandwidth GB/s", *st(s["emc_bandwidth_gbs"], fmt="{:.2f}")])
    lines += ["", table(other, ["metric", "mean", "min", "max"])]
    if s.get("ram_total_mb"):
        lines.append(f"RAM total {s['ram_total_mb']} MB")
    if s.get("emc_clock_hidden"):
        lines.append("note: tegrastats ran without root: the EMC clock is hidden"
                     + (f"; {s['emc_bandwidth_note']}" if s.get("emc_bandwidth_note") else ""))
    if s["temps_c"]:
        lines.append("temperatures °C (mean): " + ", ".join(f"{k} {v['mean']:.1f}" for k, v in s["temps_c"].items()))
    return "\n".join(lines)


@click.command("power")
@click.option("--from-log", "log", required=True, type=click.Path(), metavar="FILE",
              help="A tegrastats log (tegrastats --interval 100 --logfile FILE, or its captured output).")
@target_option
@click.option("--strict", is_flag=True, help="Fail at the first malformed line instead of skipping it.")
@click.option("--samples", is_flag=True, help="With --json: include every parsed sample.")
@click.option("--plot", type=click.Path(), default=None, metavar="PNG",
              help="Draw power per rail, EMC and GPU load over time into PNG (needs the plots extra).")
@click.option("--interval", type=click.FloatRange(min=1), default=1000.0, show_default=True, metavar="MS",
              help="The log's tegrastats --interval, for the plot's time axis.")
@json_option
def command(log, target, strict, samples, plot, interval, as_json):
    """Analyse a recorded tegrastats log: power per rail, total power, EMC load and clock, GPU load, RAM.

    Every tegrastats format from the TK1 to JetPack 6 is understood; malformed lines are skipped and counted.
    With --target the EMC bandwidth (EMC% x clock x bus width) is estimated too.

    \b
    Examples:
      edgesqueeze power --from-log tegrastats.log
      edgesqueeze power --from-log tegrastats.log --target orin-nano --json
      edgesqueeze power --from-log tegrastats.log --plot power.png --interval 100
    """
    r = power_from_log(log, target=target, strict=strict, samples=samples or bool(plot))
    if plot:
        from ..bench.plots import log_plot

        log_plot(r["samples"], plot, interval_ms=interval, title=f"{log} ({r['summary']['samples']} samples)")
        info(f"wrote {plot}")
        if not samples:
            r.pop("samples")
    if r["skipped"]:
        first = r["errors"][0] if r["errors"] else {}
        warn(f"{r['skipped']} malformed line(s) skipped (first: line {first.get('line')}: {first.get('error')})")
    emit(r, as_json, _text)
