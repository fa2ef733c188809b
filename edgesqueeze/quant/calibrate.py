"""``calibrate``: per-tensor amax of a model's activations on calibration data, cached on disk.

The result cache is a JSON file per (model hash, data hash, method and its options), so re-running
``quantize`` or ``build`` with the same model and data skips the model runs.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

from onnx import ModelProto

from ..errors import InputError
from ..fileio import PathLike, cache_dir, write_json_atomic
from ..model import model_hash
from .calibrators import amax_function, needs_histogram
from .collect import collect_statistics
from .histogram import DEFAULT_BINS

CACHE_FORMAT = "edgesqueeze.calib/1"


def default_cache_dir() -> Path:
    """The calibration result cache: :func:`edgesqueeze.fileio.cache_dir` ``("calib")``."""
    return cache_dir("calib")


def cache_key(model: ModelProto, reader, method: str, percentile: float, bins: int,
              tensors: Optional[Sequence[str]] = None) -> str:
    """sha256 of the model, the data (``reader.sha256()``), the method and the options that change the result."""
    parts = {"format": CACHE_FORMAT, "model": model_hash(model), "data": reader.sha256(), "method": method,
             "bins": bins, "percentile": percentile if method == "percentile" else None,
             "tensors": list(tensors) if tensors is not None else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != CACHE_FORMAT or not isinstance(data.get("amax"), list):
        return None
    return data


def calibrate(model: ModelProto, reader, method: str = "entropy", percentile: float = 99.99,
              cache_dir: Optional[PathLike] = None, *, tensors: Optional[Sequence[str]] = None,
              bins: int = DEFAULT_BINS, memory_budget_mb: float = 512.0, threads: Optional[int] = None,
              calib_batch: Optional[int] = None, progress: bool = False,
              details: Optional[dict] = None) -> Dict[str, float]:
    """Calibrate ``model`` on ``reader`` and return ``{tensor: amax}`` (scale = amax / 127) in graph order.

    Args:
        model: FP32 model with inferred shapes (from :func:`edgesqueeze.model.load_model`).
        reader: data reader (:func:`edgesqueeze.data.open_data`); random data works but gives meaningless ranges.
        method: ``entropy`` (TensorRT EntropyCalibration2), ``minmax``, ``percentile`` or ``mse``.
        percentile: the percentile method's percentile (0 < p <= 100).
        cache_dir: folder of the calibration result cache (None: no caching).
        tensors: tensors to calibrate (default: every float activation, as a TensorRT cache needs).
        bins: histogram bins (2048 as TensorRT).
        memory_budget_mb: activation bytes exposed per batch and pass (see :func:`collect_statistics`).
        threads: onnxruntime intra-op threads and histogram workers.
        calib_batch: feeds stacked per onnxruntime run (None: automatic; see :func:`collect_statistics`).
        progress: show a progress bar.
        details: when a dict is given, it receives ``{"stats": {tensor: summary}, "cached": bool, "key": str,
            "nonfinite": {tensor: count}}``.

    Returns:
        ``{tensor name: amax}``, floats >= 0.

    Raises:
        InputError: unknown method, bad percentile, empty data.
        UnsupportedError: onnxruntime cannot run the model.
    """
    method = method.lower()
    amax_of = amax_function(method, percentile)  # validates method and percentile early
    if method == "percentile" and not 0.0 < float(percentile) <= 100.0:
        raise InputError(f"percentile must be in (0, 100], got {percentile}")
    if getattr(reader, "is_random", False):
        warnings.warn("calibrating on random data: the ranges do not describe real inputs", stacklevel=2)
    key = None
    cache_file = None
    if cache_dir is not None:
        key = cache_key(model, reader, method, float(percentile), bins, tensors)
        cache_file = Path(cache_dir) / f"{key}.json"
        cached = _read_cache(cache_file)
        if cached is not None:
            if details is not None:
                details.update({"cached": True, "key": key, "stats": cached.get("stats", {}),
                                "nonfinite": cached.get("nonfinite", {}), "cache_file": str(cache_file)})
            return {str(k): float(v) for k, v in cached["amax"]}  # pairs keep graph order
    stats = collect_statistics(model, reader, tensors=tensors, histogram=needs_histogram(method), bins=bins,
                               memory_budget_mb=memory_budget_mb, threads=threads, calib_batch=calib_batch,
                               progress=progress)
    amax = {name: float(amax_of(s)) for name, s in stats.items()}
    summary = {name: s.summary() for name, s in stats.items()}
    nonfinite = {name: s.nonfinite for name, s in stats.items() if s.nonfinite}
    if nonfinite:
        first = next(iter(nonfinite))
        warnings.warn(f"{len(nonfinite)} tensor(s) produced NaN/Inf on the calibration data (first: '{first}', "
                      f"{nonfinite[first]} values); they were left out of the ranges", stacklevel=2)
    if cache_file is not None:
        write_json_atomic(cache_file, {"format": CACHE_FORMAT, "method": method, "percentile": percentile,
                                       "data": reader.describe(), "amax": [[k, v] for k, v in amax.items()],
                                       "stats": summary, "nonfinite": nonfinite})
    if details is not None:
        details.update({"cached": False, "key": key, "stats": summary, "nonfinite": nonfinite,
                        "cache_file": str(cache_file) if cache_file else None})
    return amax
