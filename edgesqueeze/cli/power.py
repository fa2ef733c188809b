"""``edgesqueeze power``: analyse a recorded tegrastats log."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from .common import emit, info, json_option, table, target_option, warn


_TEGRASTATS_FIELDS = ("ram", "rails", "cpu", "emc", "gpu", "total_mw")


def _read_log(path, strict: bool = False) -> dict:
    from ..bench.tegrastats import parse_log

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
        raise InputError(what, path=str(p),
                         hint="record one with: tegrastats --interval 100 --logfile tegrastats.log")
    parsed["skipped"] += len(parsed["samples"]) - len(real)
    parsed["samples"] = real
    return parsed


def inferences_in_result(path) -> int:
    """Inferences a bench result ran in its timed phases (iterations x batch, summed over its runs)."""
    from ..bench.schema import load_result

    result = load_result(path)
    return sum(int(run.get("inferences") or len(run["latency_ms"]["samples"]) * run["batch"])
               for run in result["runs"])


def power_from_log(path, target=None, strict: bool = False, samples: bool = False, interval_ms=None,
                   idle_seconds=None, idle_log=None, inferences=None, result=None) -> dict:
    """Parse a tegrastats log file and summarise it (the Python function behind ``power --from-log``).

    Args:
        path: the log (``tegrastats --logfile`` output or captured stdout).
        target: device profile name; adds EMC bandwidth (needs the profile's memory bus width) and the
            module's thermal limits for the throttling check.
        strict: fail at the first malformed line instead of skipping it.
        samples: include every parsed sample in the result.
        interval_ms: the log's ``--interval`` (wins over its timestamps; needed for JetPack 4 logs).
        idle_seconds: the log's first seconds are the idle baseline (energy is counted after them).
        idle_log: a separate tegrastats log recorded idle: its mean power is the baseline.
        inferences / result: inferences run during the log (or a bench result JSON to count them from).

    Returns:
        ``{"path", "lines", "skipped", "errors", "summary", "energy", "time_source", "throttling",
        "samples"?}``.

    Raises:
        InputError: unreadable file, no valid line, or (strict) a malformed line.
    """
    from ..bench.boardstate import detect_throttling
    from ..bench.power import log_energy
    from ..bench.tegrastats import sample_times, summarize_samples
    from ..devices import get_profile

    p = Path(path)
    parsed = _read_log(p, strict)
    profile = get_profile(target) if target else None
    out = {"path": str(p), "lines": parsed["lines"], "skipped": parsed["skipped"], "errors": parsed["errors"],
           "target": profile.name if profile else None, "summary": summarize_samples(parsed["samples"], profile)}
    times, out["time_source"] = sample_times(parsed["samples"], interval_ms)
    idle_mw = None
    if idle_log:
        idle = _read_log(idle_log, strict)["samples"]
        watts = [x["total_mw"] for x in idle if x.get("total_mw") is not None]
        idle_mw = sum(watts) / len(watts) if watts else None
    if result:
        inferences = inferences_in_result(result)
    out["energy"] = log_energy(parsed["samples"], times, idle_seconds=idle_seconds, idle_mw=idle_mw,
                               inferences=inferences)
    out["throttling"] = detect_throttling(parsed["samples"], profile.name if profile else None)
    if samples:
        for x, t in zip(parsed["samples"], times):
            x["t"] = t
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
    lines += _energy_text(r)
    th = r.get("throttling") or {}
    lines += [f"throttled: {why}" for why in th.get("reasons") or []]
    return "\n".join(lines)


def _energy_text(r: dict) -> list:
    e = r.get("energy")
    if not e:
        return []
    out = [f"energy: {e['energy_j']:.3f} J over {e['duration_s']:.1f} s (times from {r['time_source']})"
           + (f" after {e['idle_s']:.1f} s idle" if e.get("idle_s") else "")]
    if e.get("idle_mw") is not None:
        out.append(f"idle baseline: {e['idle_mw'] / 1000:.3f} W; energy above idle {e['energy_above_idle_j']:.3f} J")
    if e.get("energy_per_inference_mj") is not None:
        above = e.get("energy_per_inference_above_idle_mj")
        out.append(f"energy per inference: {e['energy_per_inference_mj']:.4g} mJ over {e['inferences']} inferences"
                   + (f" ({above:.4g} mJ above idle)" if above is not None else ""))
    return out


@click.command("power")
@click.option("--from-log", "log", required=True, type=click.Path(), metavar="FILE",
              help="A tegrastats log (tegrastats --interval 100 --logfile FILE, or its captured output).")
@target_option
@click.option("--strict", is_flag=True, help="Fail at the first malformed line instead of skipping it.")
@click.option("--samples", is_flag=True, help="With --json: include every parsed sample.")
@click.option("--plot", type=click.Path(), default=None, metavar="PNG",
              help="Draw power per rail, EMC and GPU load over time into PNG (needs the plots extra).")
@click.option("--interval", type=click.FloatRange(min=1), default=None, metavar="MS",
              help="The log's tegrastats --interval (JetPack 4 logs carry no timestamp; default: the timestamps, "
                   "else 1000 ms).")
@click.option("--idle-seconds", type=click.FloatRange(min=0), default=None, metavar="S",
              help="The log's first S seconds are the idle baseline; energy is counted after them.")
@click.option("--idle-log", type=click.Path(), default=None, metavar="FILE",
              help="A tegrastats log recorded idle: its mean power is the baseline.")
@click.option("--inferences", type=click.IntRange(min=1), default=None, metavar="N",
              help="Inferences run during the log, for the energy per inference (mJ).")
@click.option("--result", "result", type=click.Path(), default=None, metavar="JSON",
              help="A bench result recorded with this log: its inferences (iterations x batch) are counted.")
@json_option
def command(log, target, strict, samples, plot, interval, idle_seconds, idle_log, inferences, result, as_json):
    """Analyse a recorded tegrastats log: power per rail, total power, EMC load and clock, GPU load, RAM.

    Every tegrastats format from the TK1 to JetPack 6 is understood; malformed lines are skipped and counted.
    With --target the EMC bandwidth (EMC% x clock x bus width) is estimated too, and temperatures are checked
    against the module's thermal limits. Energy (J) is integrated over the log's own timestamps (JetPack 5+) or
    --interval; with --inferences or --result, per inference (mJ); with --idle-seconds/--idle-log, above idle.

    \b
    Examples:
      edgesqueeze power --from-log tegrastats.log
      edgesqueeze power --from-log tegrastats.log --target orin-nano --json
      edgesqueeze power --from-log tegrastats.log --plot power.png --interval 100
      edgesqueeze power --from-log run.log --idle-seconds 5 --result results.json
    """
    if inferences and result:
        raise click.UsageError("give --inferences or --result, not both")
    r = power_from_log(log, target=target, strict=strict, samples=samples or bool(plot), interval_ms=interval,
                       idle_seconds=idle_seconds, idle_log=idle_log, inferences=inferences, result=result)
    if plot:
        from ..bench.plots import log_plot

        log_plot(r["samples"], plot, interval_ms=interval or 1000.0, title=f"{log} ({r['summary']['samples']} samples)")
        info(f"wrote {plot}")
        if not samples:
            r.pop("samples")
    if r["skipped"]:
        first = r["errors"][0] if r["errors"] else {}
        warn(f"{r['skipped']} malformed line(s) skipped (first: line {first.get('line')}: {first.get('error')})")
    emit(r, as_json, _text)
