"""Import trtexec's ``--exportTimes`` and ``--exportProfile`` JSON files as benchmark results.

``--exportTimes`` writes ``[{startEnqMs, endEnqMs, startH2dMs, endH2dMs, startComputeMs, endComputeMs,
startD2hMs, endD2hMs, h2dMs, computeMs, d2hMs, latencyMs}, ...]``; ``--exportProfile`` writes
``[{"count": N}, {name, timeMs, averageMs, medianMs, percentage}, ...]`` (TENSORRT.md).
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional, Union

from ..errors import InputError
from ..fileio import read_json, sha256_file
from .stats import summarize, throughput

TIME_KEYS = ("latencyMs", "computeMs")


def looks_like_export_times(data) -> bool:
    """True when ``data`` is a list of trtexec timing records."""
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and all(
        k in data[0] for k in TIME_KEYS)


def _load(path: Path) -> list:
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError("expected a JSON array as trtexec writes it", path=str(path))
    return data


def read_export_times(path: Union[str, Path]) -> dict:
    """Read ``--exportTimes``: ``{"latency_ms", "compute_ms", "h2d_ms", "d2h_ms"}`` sample lists.

    Raises:
        InputError: not a trtexec times file (naming the first bad record).
    """
    path = Path(path)
    data = _load(path)
    if not looks_like_export_times(data):
        raise InputError("not a trtexec --exportTimes file (records need latencyMs and computeMs)", path=str(path))
    out = {"latency_ms": [], "compute_ms": [], "h2d_ms": [], "d2h_ms": []}
    for i, rec in enumerate(data):
        try:
            out["latency_ms"].append(float(rec["latencyMs"]))
            out["compute_ms"].append(float(rec["computeMs"]))
            if "h2dMs" in rec:
                out["h2d_ms"].append(float(rec["h2dMs"]))
            if "d2hMs" in rec:
                out["d2h_ms"].append(float(rec["d2hMs"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"record {i}: bad or missing timing field ({exc})", path=str(path)) from exc
    return out


def read_export_profile(path: Union[str, Path]) -> dict:
    """Read ``--exportProfile``: ``{"count": N, "layers": [{name, time_ms, average_ms, median_ms, percent}]}``.

    Raises:
        InputError: not a trtexec profile file.
    """
    path = Path(path)
    data = _load(path)
    count = None
    layers = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise InputError(f"record {i}: expected an object", path=str(path))
        if "count" in rec and "name" not in rec:
            count = int(rec["count"])
            continue
        try:
            layers.append({"name": str(rec["name"]), "time_ms": float(rec["timeMs"]),
                           "average_ms": float(rec["averageMs"]),
                           "median_ms": float(rec["medianMs"]) if "medianMs" in rec else None,
                           "percent": float(rec["percentage"])})
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"record {i}: not a trtexec layer record ({exc})", path=str(path)) from exc
    if not layers:
        raise InputError("no layer records: not a trtexec --exportProfile file", path=str(path))
    layers.sort(key=lambda r: -r["average_ms"])
    return {"count": count, "layers": layers}


def import_trtexec(times: Union[str, Path], profile: Optional[Union[str, Path]] = None, *,
                   model: Optional[Union[str, Path]] = None, device: str = "unknown", batch: int = 1,
                   precision: str = "unknown", trt_version: Optional[str] = None) -> dict:
    """Build an ``edgesqueeze.bench/1`` result from trtexec exports.

    Args:
        times: the ``--exportTimes`` file. profile: the ``--exportProfile`` file (per-layer times).
        model: the ONNX model or engine it ran (for name and sha256). device: the device profile name.

    Raises:
        InputError: a file is missing or malformed.
    """
    t = read_export_times(times)

    def timing(key) -> Optional[dict]:
        return {"samples": t[key], "stats": summarize(t[key])} if t[key] else None

    lat = timing("latency_ms")
    run = {"batch": int(batch), "latency_ms": lat, "compute_ms": timing("compute_ms"), "h2d_ms": timing("h2d_ms"),
           "d2h_ms": timing("d2h_ms"), "throughput_ips": throughput(batch, lat["stats"]["mean"])}
    src = Path(model) if model else Path(times)
    result = {
        "schema": "edgesqueeze.bench/1",
        "model": {"name": src.stem, "path": str(src), "sha256": sha256_file(src) if model else "unknown"},
        "device": {"profile": device, "hostname": socket.gethostname() if device == "unknown" else device},
        "backend": {"name": "trtexec", "version": trt_version, "precision": precision},
        "data": "trtexec (random inputs unless --loadInputs was given)",
        "runs": [run], "warnings": [], "partial": False,
        "options": {"imported_from": [str(times)] + ([str(profile)] if profile else [])},
    }
    if not model:
        result["warnings"].append("no model given: the model hash is unknown")
    if profile:
        result["layers"] = read_export_profile(profile)["layers"]
    return result
