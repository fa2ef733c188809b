"""Board state next to the numbers: nvpmodel mode, jetson_clocks, clock limits, fan; and thermal throttling.

The device probe (:mod:`edgesqueeze.deploy.device_probe`) collects raw values (``nvpmodel -q``, /etc/nvpmodel.conf,
cpufreq/devfreq/EMC limits from sysfs, the fan's PWM); :func:`interpret_board_state` turns them into the
``device.board_state`` a result records. :func:`detect_throttling` reads tegrastats samples taken during a run.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

# Published thermal limits per module family (degrees C on the SoC's hottest sensor):
#   Orin (T234): software throttling at Tj 99 C, thermal shutdown 104.5 C -- Jetson Linux Developer Guide r35/r36,
#     "Platform Power and Performance > Jetson Orin ... > Thermal Management" (trip points of the tj zone).
#   Xavier (T194): software throttling 96.5 C, shutdown 104.5 C -- Jetson Linux Developer Guide r32/r35,
#     "Jetson Xavier NX Series and Jetson AGX Xavier Series > Thermal Management" (unverified: user-overridable).
#   TX2 (T186): hardware shutdown 101.5 C -- L4T r32 Development Guide "Hardware Thermal Shutdown" table (quoted on
#     the NVIDIA forum thread "Software thermal management", 2018); no software throttle point recorded.
#   Nano/TX1 (T210): shutdown 102 C -- L4T r32 "Power Management for Jetson Nano and Jetson TX1" (unverified).
THERMAL_LIMITS: Dict[str, dict] = {
    "orin": {"sw_throttle_c": 99.0, "shutdown_c": 104.5, "source": "Jetson Linux Developer Guide (Orin thermal)"},
    "xavier": {"sw_throttle_c": 96.5, "shutdown_c": 104.5,
               "source": "Jetson Linux Developer Guide (Xavier thermal), unverified"},
    "tx2": {"sw_throttle_c": None, "shutdown_c": 101.5, "source": "L4T r32 Development Guide (TX2 thermal shutdown)"},
    "t210": {"sw_throttle_c": None, "shutdown_c": 102.0, "source": "L4T r32 Development Guide (Nano/TX1), unverified"},
}
_FAMILY = {"agx-orin": "orin", "orin-nx": "orin", "orin-nano": "orin", "agx-xavier": "xavier", "xavier-nx": "xavier",
           "tx2": "tx2", "nano": "t210", "tx1": "t210"}
#: sensors that are not the SoC die (board, PMIC placeholder)
_NOT_SOC = {"PMIC", "Tboard", "thermal"}
#: nvpmodel modes whose name carries no wattage (TX2: Max-Q ~7.5 W, Max-P ~15 W; MAXN: no budget)
_NAMED_BUDGETS = {"MAXQ": 7.5, "MAXP_CORE_ALL": 15.0, "MAXP_CORE_ARM": 15.0, "MAXP_CORE_DENVER": 15.0}
BUSY_PCT = 80.0      # a core/GPU at or above this load should sit at its top clock
CLOCK_DROP = 0.9     # a busy clock under 90 % of the run's busy maximum counts as a drop


def parse_nvpmodel_query(text: Optional[str]) -> Optional[dict]:
    """``nvpmodel -q`` output (``NV Power Mode: MAXN`` then the mode id) -> ``{"name", "id"}`` (None if absent)."""
    if not text:
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", text)
    if m:
        return {"name": m.group(1), "id": int(m.group(2))}
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    return {"name": m.group(1), "id": None} if m else None


def parse_nvpmodel_conf(text: Optional[str]) -> dict:
    """/etc/nvpmodel.conf -> ``{"modes": {id: name}, "default": id | None}``."""
    modes = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", text or "")}
    m = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", text or "")
    return {"modes": modes, "default": int(m.group(1)) if m else None}


def power_budget_w(name: Optional[str]) -> Optional[float]:
    """The power budget an nvpmodel mode name states (``MODE_15W`` -> 15, ``MAXQ`` -> 7.5); None for MAXN/unknown."""
    if not name:
        return None
    m = re.search(r"(\d+(?:\.\d+)?)W", name.upper())
    return float(m.group(1)) if m else _NAMED_BUDGETS.get(name.upper())


def _num(v, scale: float) -> Optional[float]:
    try:
        return float(v) / scale
    except (TypeError, ValueError):
        return None


def _nvpmodel(raw: dict) -> Optional[dict]:
    q = parse_nvpmodel_query(raw.get("nvpmodel_q"))
    conf = parse_nvpmodel_conf(raw.get("nvpmodel_conf"))
    if q is None and not conf["modes"]:
        return None
    mode = dict(q or {"name": None, "id": None})
    if mode["name"] is None and mode["id"] is None and conf["default"] is not None:
        mode.update(id=conf["default"], source="nvpmodel.conf default (nvpmodel -q unavailable)")
    if mode["id"] is not None and conf["modes"].get(mode["id"]):
        mode["name"] = mode["name"] or conf["modes"][mode["id"]]
    mode["power_budget_w"] = power_budget_w(mode["name"])
    if mode["name"] and mode["name"].upper().startswith("MAXN"):
        mode["budget_note"] = "MAXN: no power budget (clocks at the module's maxima)"
    return mode


def _clocks(raw: dict) -> dict:
    cpus = raw.get("cpufreq") or {}
    cmin = [_num(c.get("min"), 1e3) for c in cpus.values()]
    cmax = [_num(c.get("max"), 1e3) for c in cpus.values()]
    hw = [_num(c.get("hw_max"), 1e3) for c in cpus.values()]
    g = raw.get("gpu_devfreq") or {}
    e = raw.get("emc") or {}
    cap = _num(e.get("emc_iso_cap"), 1e6)
    return {
        "cpu_mhz": {"min": min([x for x in cmin if x is not None], default=None),
                    "max": max([x for x in cmax if x is not None], default=None),
                    "hw_max": max([x for x in hw if x is not None], default=None), "cores": len(cpus),
                    "pinned": bool(cpus) and all(a is not None and a == b for a, b in zip(cmin, cmax))},
        "gpu_mhz": {"min": _num(g.get("min_freq"), 1e6), "max": _num(g.get("max_freq"), 1e6),
                    "cur": _num(g.get("cur_freq"), 1e6), "devfreq": g.get("name")},
        "emc_mhz": {"min": _num(e.get("min_rate"), 1e6), "max": _num(e.get("max_rate"), 1e6),
                    "cap": cap if cap else None},
    }


def interpret_board_state(raw: Optional[dict]) -> Optional[dict]:
    """Turn the probe's raw board state into ``{"nvpmodel", "jetson_clocks", "jetson_clocks_evidence", "cpu_mhz",
    "gpu_mhz", "emc_mhz", "fan_pwm", "fan_pct"}`` (None where a value was unreadable; None for no raw state).

    ``jetson_clocks`` is True when every readable domain (CPU, GPU, EMC) has its minimum clock equal to its maximum
    (what the script sets), False when one does not, None when no domain could be read.
    """
    if not raw:
        return None
    out = {"nvpmodel": _nvpmodel(raw), **_clocks(raw)}
    evidence, pinned = [], []
    if out["cpu_mhz"]["cores"]:
        pinned.append(out["cpu_mhz"]["pinned"])
        evidence.append(f"CPU min {out['cpu_mhz']['min']:g} {'=' if pinned[-1] else '<'} max "
                        f"{out['cpu_mhz']['max']:g} MHz" if out["cpu_mhz"]["min"] is not None else "CPU unreadable")
    for dom in ("gpu", "emc"):
        lo, hi = out[f"{dom}_mhz"]["min"], out[f"{dom}_mhz"]["max"]
        if lo is not None and hi is not None:
            pinned.append(lo == hi)
            evidence.append(f"{dom.upper()} min {lo:g} {'=' if lo == hi else '<'} max {hi:g} MHz")
    out["jetson_clocks"] = all(pinned) if pinned else None
    out["jetson_clocks_evidence"] = evidence
    pwm = _num(raw.get("fan_pwm"), 1)
    out["fan_pwm"] = pwm
    out["fan_pct"] = round(pwm / 255 * 100, 1) if pwm is not None else None
    return out


def _limit(mhz: dict) -> Optional[float]:
    vals = [v for v in (mhz.get("max"), mhz.get("cap")) if v]
    return min(vals) if vals else None


def describe_board_state(bs: Optional[dict]) -> str:
    """One line for tables and reports: ``nvpmodel MODE_30W (30 W), jetson_clocks on, CPU <= 2201 MHz, ...``."""
    if not bs:
        return "board state: not recorded"
    nv = bs.get("nvpmodel") or {}
    parts = []
    if nv.get("name") or nv.get("id") is not None:
        budget = f"{nv['power_budget_w']:g} W" if nv.get("power_budget_w") else "no power budget"
        parts.append(f"nvpmodel {nv.get('name') or '?'} (id {nv.get('id')}, {budget})")
    else:
        parts.append("nvpmodel unknown")
    jc = bs.get("jetson_clocks")
    parts.append("jetson_clocks " + ("on" if jc else "off" if jc is False else "unknown"))
    for dom in ("cpu", "gpu", "emc"):
        lim = _limit(bs.get(f"{dom}_mhz") or {})
        if lim:
            parts.append(f"{dom.upper()} <= {lim:g} MHz")
    if bs.get("fan_pct") is not None:
        parts.append(f"fan {bs['fan_pct']:g}%")
    return ", ".join(parts)


_COMPARED = (("nvpmodel mode", lambda b: (b.get("nvpmodel") or {}).get("name")),
             ("jetson_clocks", lambda b: b.get("jetson_clocks")),
             ("CPU clock limit MHz", lambda b: _limit(b.get("cpu_mhz") or {})),
             ("GPU clock limit MHz", lambda b: _limit(b.get("gpu_mhz") or {})),
             ("EMC clock limit MHz", lambda b: _limit(b.get("emc_mhz") or {})),
             ("fan %", lambda b: b.get("fan_pct")))


def board_state_differences(states: Sequence[Optional[dict]]) -> List[str]:
    """Warnings for compared runs whose board state differs (mode, jetson_clocks, clock limits, fan).

    Args:
        states: each run's ``device.board_state`` (None where not recorded), in run order (run 1 first).
    """
    known = [(i, s) for i, s in enumerate(states, start=1) if s]
    out = []
    if known and len(known) < len(states):
        missing = [str(i) for i, s in enumerate(states, start=1) if not s]
        out.append(f"run(s) {', '.join(missing)} recorded no board state: their clocks and power mode are unknown")
    for what, get in _COMPARED:
        values = {i: get(s) for i, s in known}
        if len({v for v in values.values() if v is not None}) > 1:
            shown = ", ".join(f"run {i}: {v}" for i, v in values.items())
            out.append(f"the runs differ in {what} ({shown}): their numbers are not comparable as they stand")
    return out


def thermal_limits(profile: Optional[str]) -> Optional[dict]:
    """The published thermal limits for a device profile name (None for desktop/unknown boards)."""
    fam = _FAMILY.get(profile or "")
    return dict(THERMAL_LIMITS[fam], family=fam) if fam else None


def _busy_clock(s: dict, kind: str) -> Optional[float]:
    if kind == "gpu":
        g = s.get("gpu") or {}
        return g.get("mhz") if (g.get("load_pct") or 0) >= BUSY_PCT else None
    busy = [c["mhz"] for c in s.get("cpu") or [] if c["online"] and c["mhz"] and c["load_pct"] >= BUSY_PCT]
    return max(busy) if busy else None


def detect_throttling(samples: List[dict], profile: Optional[str] = None) -> dict:
    """Find throttling in tegrastats samples taken during a run; marks each affected sample's ``throttle`` list.

    A sample is affected when a SoC temperature reaches the module's software-throttling (or shutdown) point, or
    when a busy GPU/CPU (load >= 80 %) runs under 90 % of the highest clock it reached busy in the same log
    (clocks that DVFS lowers under a lighter load are not counted). Clock drops need two samples to count.

    Returns:
        ``{"throttled": bool, "reasons": [str], "samples": [index], "limits": {...} | None}``.
    """
    limits = thermal_limits(profile)
    hit: Dict[int, List[str]] = {}
    reasons: List[str] = []
    if limits:
        point = limits["sw_throttle_c"] or limits["shutdown_c"]
        what = "software-throttling" if limits["sw_throttle_c"] else "shutdown"
        hot = [(i, n, t) for i, s in enumerate(samples) for n, t in (s.get("temps") or {}).items()
               if n not in _NOT_SOC and t >= point]
        for i, n, t in hot:
            hit.setdefault(i, []).append(f"{n} {t:g} C >= {point:g} C")
        if hot:
            i, n, t = max(hot, key=lambda x: x[2])
            reasons.append(f"{len({h[0] for h in hot})} sample(s) at or above the {what} point {point:g} C "
                           f"(peak {n} {t:g} C; {limits['source']})")
    for kind in ("gpu", "cpu"):
        clocks = {i: c for i, s in enumerate(samples) if (c := _busy_clock(s, kind))}
        if not clocks:
            continue
        top = max(clocks.values())
        low = {i: c for i, c in clocks.items() if c < CLOCK_DROP * top}
        if len(low) >= 2:
            for i, c in low.items():
                hit.setdefault(i, []).append(f"{kind.upper()} {c:g} MHz < {top:g} MHz while busy")
            reasons.append(f"{kind.upper()} clock dropped under load in {len(low)} of {len(clocks)} busy sample(s) "
                           f"(down to {min(low.values()):g} MHz from {top:g} MHz)")
    for i, why in hit.items():
        samples[i]["throttle"] = why
    return {"throttled": bool(reasons), "reasons": reasons, "samples": sorted(hit), "limits": limits}
