"""Parse tegrastats output of every Jetson generation (TK1 to Thor) into samples.

Formats (JETSON.md): optional ``MM-DD-YYYY HH:MM:SS`` timestamp; ``RAM``/``SWAP``/``IRAM``;
``CPU [load%@MHz,off,...]`` or the TK1-era ``cpu [25%,7%]@2218``; ``EMC_FREQ x%[@MHz]`` or ``EMC x%@MHz``;
``GR3D_FREQ x%[@MHz|@[MHz,MHz]]`` (Thor: ``GR3D_FREQ @[MHz,...]``, no load) and ``GR3D2_FREQ``; engines
(``APE 150``, ``NVDLA0_FREQ @1600``, ``NVENC off``, ``NVDEC 40%@115``); temperatures ``name@41.4C``, ``name@cur/maxC`` or ``name@curC/maxC`` (L4T
R39; ``-256C`` = disabled, ``PMIC@100C`` a placeholder); ``(lfb 1x512kB)`` as well as ``(lfb 1675x4MB)``;
power rails ``NAME cur/avg`` (mW, JetPack 4), ``NAME curmW/avgmW`` (JetPack 5/6), three values on the
newest releases, negative values, ``NC`` rails (not connected, skipped).

A line is scanned field by field; an unknown token is kept in ``unknown`` and skipped, so a new
field in a future release does not break parsing. A line with no known field at all is malformed.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Dict, Iterable, List, Optional, Tuple, Union

from ..errors import InputError

#: rails that measure the whole board's input power, in order of preference
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN", "VIN_SYS_5V0_TOTAL")

_NUM = r"-?\d+(?:\.\d+)?"
_END = r"(?=\s|$)"
_FIELDS = [
    ("timestamp", re.compile(r"(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})" + _END)),
    ("ram", re.compile(r"RAM (\d+)/(\d+)MB(?: \(lfb (\d+)x(\d+)([kM])B\))?" + _END)),
    ("swap", re.compile(r"SWAP (\d+)/(\d+)MB(?: \(cached (\d+)MB\))?" + _END)),
    ("iram", re.compile(r"IRAM (\d+)/(\d+)kB ?(?:\(lfb (\d+)kB\))?" + _END)),
    ("cpu", re.compile(r"CPU \[([^\]]*)\]" + _END)),
    ("cpu_old", re.compile(r"cpu \[([^\]]*)\]@(\d+)" + _END)),
    ("emc", re.compile(r"(?:EMC_FREQ|EMC) (" + _NUM + r")%(?:@(\d+))?" + _END)),
    ("gr3d", re.compile(r"(GR3D2?_FREQ|GR3D) (?:(" + _NUM + r")%)?(?:@(?:\[([\d,]+)\]|(\d+)))?" + _END)),
    ("mts", re.compile(r"MTS fg (\d+)% bg (\d+)%" + _END)),
    ("temp", re.compile(r"([A-Za-z][\w.]*)@(" + _NUM + r")(?:C?/(" + _NUM + r"))?C" + _END)),
    ("rail", re.compile(r"([A-Z][A-Z0-9_]*) (" + _NUM + r")(?:mW)?/(" + _NUM + r")(?:mW)?(?:/(" + _NUM
                        + r")(?:mW)?)?" + _END)),
    ("engine", re.compile(r"([A-Z][A-Z0-9_]*) (off|(" + _NUM + r")%@(\d+)|@(\d+)|(" + _NUM + r")%|(\d+))" + _END)),
]


class TegrastatsParseError(InputError):
    """A tegrastats line with no recognisable field."""


def _cpu_cores(body: str, shared_mhz: Optional[float] = None) -> List[dict]:
    cores = []
    for i, item in enumerate(x.strip() for x in body.split(",")):
        if item == "off" or not item:
            cores.append({"core": i, "online": False, "load_pct": None, "mhz": None})
            continue
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%(?:@(\d+))?", item)
        if not m:
            raise ValueError(f"bad CPU core entry '{item}'")
        mhz = float(m.group(2)) if m.group(2) else shared_mhz
        cores.append({"core": i, "online": True, "load_pct": float(m.group(1)), "mhz": mhz})
    return cores


def parse_line(line: str) -> dict:
    """Parse one tegrastats line into a sample dict.

    Returns:
        ``{"timestamp", "ram", "swap", "iram", "cpu", "emc", "gpu", "gpu2", "engines", "temps",
        "temps_disabled", "rails", "nc_rails", "total_mw", "total_source", "unknown"}``; absent fields are None
        (or empty). Rails are ``{name: {"cur_mw", "avg_mw", "values"}}``; ``total_mw`` is the input rail
        (``VDD_IN``/``POM_5V_IN``) or, where the board has none, the sum of the connected rails.

    Raises:
        TegrastatsParseError: the line is empty or has no recognisable field.
    """
    text = line.strip()
    if not text:
        raise TegrastatsParseError("empty tegrastats line")
    s: dict = {"timestamp": None, "ram": None, "swap": None, "iram": None, "cpu": None, "emc": None,
               "gpu": None, "gpu2": None, "mts": None, "engines": {}, "temps": {}, "temps_disabled": [],
               "rails": {}, "nc_rails": 0, "unknown": []}
    known = 0
    pos = 0
    n = len(text)
    while pos < n:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        for kind, rx in _FIELDS:
            m = rx.match(text, pos)
            if m and _take(s, kind, m):
                known += 1
                pos = m.end()
                break
        else:
            end = pos
            while end < n and not text[end].isspace():
                end += 1
            s["unknown"].append(text[pos:end])
            pos = end
    if not known:
        raise TegrastatsParseError(f"not a tegrastats line: '{text[:60]}'")
    _totals(s)
    return s


def _take(s: dict, kind: str, m: "re.Match") -> bool:
    g = m.groups()
    if kind == "timestamp":
        s["timestamp"] = g[0]
    elif kind == "ram":
        block_mb = (int(g[3]) / (1024 if g[4] == "k" else 1)) if g[3] else None
        s["ram"] = {"used_mb": int(g[0]), "total_mb": int(g[1]),
                    "lfb_blocks": int(g[2]) if g[2] else None, "lfb_block_mb": block_mb}
    elif kind == "swap":
        s["swap"] = {"used_mb": int(g[0]), "total_mb": int(g[1]), "cached_mb": int(g[2]) if g[2] else None}
    elif kind == "iram":
        s["iram"] = {"used_kb": int(g[0]), "total_kb": int(g[1]), "lfb_kb": int(g[2]) if g[2] else None}
    elif kind in ("cpu", "cpu_old"):
        try:
            s["cpu"] = _cpu_cores(g[0], float(g[1]) if kind == "cpu_old" else None)
        except ValueError:
            return False
    elif kind == "emc":
        s["emc"] = {"load_pct": float(g[0]), "mhz": float(g[1]) if g[1] else None}
    elif kind == "gr3d":
        if g[1] is None and g[2] is None and g[3] is None:
            return False
        gpcs = [float(x) for x in g[2].split(",") if x] if g[2] else None
        mhz = float(g[3]) if g[3] else (max(gpcs) if gpcs else None)
        load = float(g[1]) if g[1] is not None else None  # Thor prints only the clocks: GR3D_FREQ @[1000,1000]
        s["gpu2" if g[0].startswith("GR3D2") else "gpu"] = {"load_pct": load, "mhz": mhz, "gpc_mhz": gpcs}
    elif kind == "mts":
        s["mts"] = {"fg_pct": float(g[0]), "bg_pct": float(g[1])}
    elif kind == "temp":
        cur = float(g[1])
        if cur <= -256 or (g[0] == "PMIC" and cur == 100):  # PMIC@100C: a fixed placeholder, not a sensor
            s["temps_disabled"].append(g[0])
        else:
            s["temps"][g[0]] = cur
            if g[2] is not None:
                s.setdefault("temps_max", {})[g[0]] = float(g[2])
    elif kind == "rail":
        if g[0] in ("RAM", "SWAP", "IRAM", "EMC", "EMC_FREQ"):
            return False  # a truncated RAM/SWAP field, not a rail (AGX Xavier's "CPU 618/618" is one)
        if g[0] == "NC":
            s["nc_rails"] += 1
        else:
            values = [float(v) for v in g[1:] if v is not None]
            s["rails"][g[0]] = {"cur_mw": values[0], "avg_mw": values[1], "values": values}
    elif kind == "engine":
        name, val = g[0], g[1]
        if val == "off":
            s["engines"][name] = {"on": False}
        elif g[2] is not None:
            s["engines"][name] = {"on": True, "load_pct": float(g[2]), "mhz": float(g[3])}
        elif g[4] is not None:
            s["engines"][name] = {"on": True, "mhz": float(g[4])}
        elif g[5] is not None:
            s["engines"][name] = {"on": True, "load_pct": float(g[5])}
        else:
            s["engines"][name] = {"on": True, "mhz": float(g[6])}
    return True


def _totals(s: dict) -> None:
    rails = s["rails"]
    for name in INPUT_RAILS:
        if name in rails:
            s["total_mw"] = rails[name]["cur_mw"]
            s["total_source"] = name
            return
    if rails:
        s["total_mw"] = sum(r["cur_mw"] for r in rails.values())
        s["total_source"] = "sum of module rails (" + "+".join(sorted(rails)) + "); carrier board not counted"
    else:
        s["total_mw"] = None
        s["total_source"] = None


def parse_log(source: Union[str, Iterable[str]], *, strict: bool = False) -> dict:
    """Parse a whole tegrastats log (text, or an iterable of lines).

    Blank lines are ignored; a malformed line is skipped and counted (or raises with ``strict``).

    Returns:
        ``{"samples": [sample...], "lines": N, "skipped": N, "errors": [{"line": n, "error": msg}, ...]}``
        (at most 20 errors are listed).

    Raises:
        TegrastatsParseError: with ``strict``, at the first malformed line (naming its number).
    """
    lines = source.splitlines() if isinstance(source, str) else source
    samples, errors = [], []
    count = skipped = 0
    for no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        count += 1
        try:
            samples.append(parse_line(raw))
        except TegrastatsParseError as exc:
            if strict:
                raise TegrastatsParseError(f"line {no}: {exc.message}") from exc
            skipped += 1
            if len(errors) < 20:
                errors.append({"line": no, "error": exc.message})
    return {"samples": samples, "lines": count, "skipped": skipped, "errors": errors}


def _stat(values: List[float]) -> Optional[dict]:
    if not values:
        return None
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize_samples(samples: List[dict], profile=None) -> dict:
    """Summarise parsed samples: per-rail and total power, EMC load and clock, GPU load, RAM, temperatures.

    Args:
        samples: as :func:`parse_line` returns them.
        profile: a device profile; when it knows the memory bus width, EMC bandwidth is estimated too.

    Returns:
        A JSON-ready dict (``None`` where a field never appeared).
    """
    rails: Dict[str, List[float]] = {}
    for s in samples:
        for name, r in s["rails"].items():
            rails.setdefault(name, []).append(r["cur_mw"])
    total = [s["total_mw"] for s in samples if s.get("total_mw") is not None]
    sources = sorted({s["total_source"] for s in samples if s.get("total_source")})
    emc = [s["emc"] for s in samples if s["emc"]]
    out = {
        "samples": len(samples),
        "rails_mw": {k: _stat(v) for k, v in sorted(rails.items())},
        "total_mw": _stat(total), "total_source": sources[0] if len(sources) == 1 else sources or None,
        "emc_pct": _stat([e["load_pct"] for e in emc]),
        "emc_mhz": _stat([e["mhz"] for e in emc if e["mhz"] is not None]),
        "gpu_pct": _stat([s["gpu"]["load_pct"] for s in samples if s["gpu"] and s["gpu"]["load_pct"] is not None]),
        "gpu_mhz": _stat([s["gpu"]["mhz"] for s in samples if s["gpu"] and s["gpu"]["mhz"] is not None]),
        "ram_used_mb": _stat([s["ram"]["used_mb"] for s in samples if s["ram"]]),
        "ram_total_mb": next((s["ram"]["total_mb"] for s in samples if s["ram"]), None),
        "cpu_pct": _stat([c["load_pct"] for s in samples if s["cpu"] for c in s["cpu"] if c["online"]]),
        "temps_c": {k: _stat(v) for k, v in sorted(_collect_temps(samples).items())},
        "emc_clock_hidden": bool(emc) and all(e["mhz"] is None for e in emc),
    }
    if profile is not None and emc and getattr(profile, "memory_bus_bits", None):
        bws = [profile.emc_bandwidth(e["load_pct"], e["mhz"]) / 1e9 for e in emc if e["mhz"] or profile.emc_max_mhz]
        out["emc_bandwidth_gbs"] = _stat(bws)
        if out["emc_clock_hidden"]:
            out["emc_bandwidth_note"] = ("tegrastats ran without root and hid the EMC clock: the bandwidth assumes "
                                         f"the maximum EMC clock ({profile.emc_max_mhz:g} MHz), an upper bound")
    return out


def _collect_temps(samples: List[dict]) -> Dict[str, List[float]]:
    temps: Dict[str, List[float]] = {}
    for s in samples:
        for k, v in s["temps"].items():
            temps.setdefault(k, []).append(v)
    return temps


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%m-%d-%Y %H:%M:%S").timestamp()


def sample_times(samples: List[dict], interval_ms: Optional[float] = None) -> Tuple[List[float], str]:
    """Seconds since the first sample, for each sample; and how they were found.

    An explicit ``interval_ms`` wins (JetPack 4 prints no timestamp). Otherwise the ``MM-DD-YYYY HH:MM:SS``
    timestamps (JetPack 5+) are used; they have a one-second resolution, so when several lines share a second
    the interval is measured between the first lines of the second and of the last second, and the lines are
    spaced by it. Without either, 1000 ms (tegrastats' default interval) is assumed, and the source says so.

    Returns:
        ``(times, source)`` with ``source`` one of ``"interval"``, ``"timestamps"``, ``"assumed 1000 ms"``.
    """
    n = len(samples)
    if interval_ms:
        return [i * interval_ms / 1000.0 for i in range(n)], "interval"
    stamps = [s.get("timestamp") for s in samples]
    if n < 2 or not all(stamps):
        return [float(i) for i in range(n)], "assumed 1000 ms"
    secs = [_epoch(t) for t in stamps]
    if len(set(secs)) == n:  # one line a second or slower: the stamps are the times
        return [t - secs[0] for t in secs], "timestamps"
    starts = [i for i in range(1, n) if secs[i] != secs[i - 1]]  # first line of each new second
    if len(starts) >= 2:
        dt = (secs[starts[-1]] - secs[starts[0]]) / (starts[-1] - starts[0])
    else:  # under two seconds of log: spread the lines evenly over the seconds it spans
        dt = max(secs[-1] - secs[0], 1.0) / n
    return [i * dt for i in range(n)], "timestamps"
