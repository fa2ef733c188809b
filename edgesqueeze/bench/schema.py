"""The benchmark results format, version ``edgesqueeze.bench/2`` (``/1`` results still read), and its validator.

Required (small, so that the Python 3.6 on-device runner can write it with the standard library):
``schema``, ``model`` {name, path, sha256}, ``device`` {profile, hostname}, ``backend`` {name, version,
precision}, ``runs`` [{batch, latency_ms: {samples: [ms...], stats?}}]. Everything else is optional:
``versions``, ``options``, ``data``, ``power``, ``bandwidth``, ``warnings``, ``partial``,
``started_at``, ``finished_at``, and per run ``throughput_ips``, ``compute_ms``/``h2d_ms``/``d2h_ms``
(``{samples, stats}`` or null), ``power``, ``bandwidth``. ``stats`` may be absent: :func:`validate_result`
recomputes it from the samples. A result carrying raw tegrastats lines (``power.raw``) and no parsed
power summary gets one, and a throttling verdict (``throttled``, ``throttling``) from those lines.

Version 2 adds ``device.board_state`` (nvpmodel mode, jetson_clocks, clock limits, fan:
:func:`edgesqueeze.bench.boardstate.interpret_board_state`), lifted from ``device.probe.board_state`` where
only the probe carries it, and ``throttled``/``throttling``. A version 1 result reads as one without them.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, List, Union

from ..errors import InputError
from ..fileio import read_json
from .boardstate import detect_throttling
from .stats import summarize, throughput
from .tegrastats import parse_log, summarize_samples
from .trtexec import import_trtexec, looks_like_export_times

SCHEMA = "edgesqueeze.bench/2"
SUPPORTED = (SCHEMA, "edgesqueeze.bench/1")
TIMING_KEYS = ("latency_ms", "compute_ms", "h2d_ms", "d2h_ms")


def _fail(where: str, what: str, path: str = "") -> None:
    raise InputError(f"invalid benchmark result at {where}: {what}", path=path or None)


def _samples(obj: Any, where: str, path: str) -> List[float]:
    if not isinstance(obj, list) or not obj:
        _fail(where, "expected a non-empty list of numbers", path)
    for i, v in enumerate(obj):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            _fail(f"{where}[{i}]", f"expected a finite number >= 0, got {v!r}", path)
    return [float(v) for v in obj]


def validate_result(result: Any, path: str = "") -> dict:
    """Check a results dict and return a normalised deep copy (missing ``stats`` and throughput filled in).

    Args:
        result: the parsed JSON.
        path: the file it came from, for messages.

    Raises:
        InputError: naming the first field at fault (``runs[0].latency_ms.samples[3]: ...``) or an
            unsupported schema version.
    """
    if not isinstance(result, dict):
        _fail("top level", f"expected an object, got {type(result).__name__}", path)
    schema = result.get("schema")
    if schema not in SUPPORTED:
        _fail("schema", f"unsupported schema {schema!r}; this edgesqueeze reads {', '.join(SUPPORTED)}", path)
    out = copy.deepcopy(result)
    for key, fields in (("model", ("name", "sha256")), ("device", ("profile",)), ("backend", ("name",))):
        sect = out.get(key)
        if not isinstance(sect, dict):
            _fail(key, "missing or not an object", path)
        for f in fields:
            if not isinstance(sect.get(f), str) or not sect[f]:
                _fail(f"{key}.{f}", "missing or not a non-empty string", path)
    runs = out.get("runs")
    if not isinstance(runs, list) or not runs:
        _fail("runs", "expected a non-empty list", path)
    for i, run in enumerate(runs):
        w = f"runs[{i}]"
        if not isinstance(run, dict):
            _fail(w, "expected an object", path)
        batch = run.get("batch")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            _fail(f"{w}.batch", f"expected a positive integer, got {batch!r}", path)
        for key in TIMING_KEYS:
            sect = run.get(key)
            if sect is None:
                if key == "latency_ms":
                    _fail(f"{w}.latency_ms", "missing", path)
                run[key] = None
                continue
            if not isinstance(sect, dict):
                _fail(f"{w}.{key}", "expected an object with 'samples'", path)
            samples = _samples(sect.get("samples"), f"{w}.{key}.samples", path)
            if not isinstance(sect.get("stats"), dict):
                sect["stats"] = summarize(samples)
        if not isinstance(run.get("throughput_ips"), (int, float)):
            run["throughput_ips"] = throughput(batch, run["latency_ms"]["stats"]["mean"])
    for key, kind in (("warnings", list), ("partial", bool), ("options", dict), ("versions", dict)):
        if key in out and out[key] is not None and not isinstance(out[key], kind):
            _fail(key, f"expected {kind.__name__}", path)
    out.setdefault("warnings", [])
    out.setdefault("partial", False)
    _board_state_and_throttling(out)
    return out


def _board_state_and_throttling(out: dict) -> None:
    """Fill ``device.board_state`` from the probe and judge throttling from raw tegrastats lines."""
    dev = out["device"]
    if not dev.get("board_state") and isinstance(dev.get("probe"), dict) and dev["probe"].get("board_state"):
        dev["board_state"] = dev["probe"]["board_state"]
    power = out.get("power")
    if not (isinstance(power, dict) and power.get("raw")):
        return
    parsed = parse_log(power["raw"])
    if not power.get("summary"):
        power["summary"] = summarize_samples(parsed["samples"])
        power["skipped_lines"] = parsed["skipped"]
    if "throttled" not in out:
        verdict = detect_throttling(parsed["samples"], dev.get("profile"))
        out["throttled"] = verdict["throttled"]
        out["throttling"] = {k: verdict[k] for k in ("reasons", "samples")}
        for reason in verdict["reasons"]:
            out["warnings"].append(f"throttled: {reason}")


def load_result(path: Union[str, Path]) -> dict:
    """Read and validate a results JSON file.

    Raises:
        InputError: missing file, not JSON, or an invalid result.
    """
    p = Path(path)
    data = read_json(p)
    if isinstance(data, list):
        if looks_like_export_times(data):
            return validate_result(import_trtexec(p), str(p))
    return validate_result(data, str(p))


_PERSONAL_KEYS = ("hostname", "address", "user", "remote_dir")


def redact_personal(result: dict) -> dict:
    """A copy of ``result`` without user names, host names or absolute paths (what ``--record-host`` keeps).

    The device stays identified by its profile, board model and L4T/JetPack release; a path under the working
    folder becomes relative to it, one under the home folder starts with ``~``.
    """
    out = _redact(copy.deepcopy(result), _personal_words())
    dev = out.get("device") if isinstance(out.get("device"), dict) else None
    if dev is not None:
        probe = dev.get("probe") or {}
        board = probe.get("device_tree_model") or dev.get("profile") or "device"
        release = ", ".join(f"{k.upper() if k == 'l4t' else 'JetPack'} {probe[k]}" for k in ("jetpack", "l4t")
                            if probe.get(k))
        dev["display_name"] = (f"{dev['label']}: " if dev.get("label") else "") + board + (f" ({release})"
                                                                                          if release else "")
    return out


def _personal_words() -> List[str]:
    """This machine's name and the home folder (which holds the user name): replaced wherever they appear."""
    import socket

    words = [socket.gethostname(), str(Path.home())]
    return sorted({w for w in words if w and len(w) > 2 and w != "/"}, key=len, reverse=True)


def _relative(path: str) -> str:
    """An absolute path as the user would type it from here: relative to the working folder, or under ``~``."""
    import os

    for base, shown in ((Path.cwd(), ""), (Path.home(), "~")):
        try:
            rel = Path(path).relative_to(base)
        except ValueError:
            continue
        return os.path.join(shown, str(rel)) if shown else str(rel)
    return path


def _redact(obj: Any, words: List[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _redact(v, words) for k, v in obj.items() if k not in _PERSONAL_KEYS}
    if isinstance(obj, list):
        return [_redact(v, words) for v in obj]
    if isinstance(obj, str):
        if obj.startswith("/") and "\n" not in obj:
            obj = _relative(obj)
        for w in words:
            obj = obj.replace(w, "~" if w.startswith("/") else "<host>")
        return obj
    return obj
