"""``calibrate``: per-tensor amax of a model's activations on calibration data, cached on disk.

The result cache is a JSON file per (model hash, data hash, method and its options), so re-running
``quantize`` or ``build`` with the same model and data skips the model runs. Entries are written atomically and
checked when read (their key, model hash, count and checksum of the ranges, finite ranges of tensors the model
has): a corrupt or partial entry is a miss with a one-line warning.

The default method, ``auto``, follows NVIDIA's advice that no single calibrator wins on every network
(QUANT-FIELD.md): from the one set of histograms it computes the ranges of ``mse``, ``entropy`` and
``percentile`` (globally pooled features feeding a quantized layer keep their full range in all three, see
:func:`~edgesqueeze.quant.calibrators.pooled_features`), quantizes the model with each (the default Q/DQ placement
of :func:`~edgesqueeze.quant.qdq.plan_qdq`, which leaves out the layers TensorRT runs no faster in INT8), and keeps
the one whose outputs are closest to FP32 (highest SQNR) on the first :data:`AUTO_PROBE_FEEDS` calibration feeds.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from itertools import islice
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from onnx import ModelProto

from ..errors import InputError
from ..fileio import PathLike, cache_dir, write_json_atomic
from ..model import iter_nodes, model_hash
from .calibrators import amax_function, calibrated_amax, needs_histogram
from .methods import DEFAULT_METHOD
from .collect import collect_statistics
from .histogram import DEFAULT_BINS, TensorHistogram
from .qdq import quantize_qdq

CACHE_FORMAT = "edgesqueeze.calib/3"  # 2: histograms over exactly [0, max |x|]; the auto method; 3: key, model
# hash, count and checksum in the entry (a corrupt or partial entry is a miss)
AUTO_CANDIDATES = ("mse", "entropy", "percentile")  # the first wins ties
AUTO_PROBE_FEEDS = 4  # calibration feeds the candidates are scored on


def _output_sqnr(ref: Sequence[Sequence[np.ndarray]], got: Sequence[Sequence[np.ndarray]]) -> float:
    """SQNR (dB) of every float output of every feed, together."""
    se = sr = 0.0
    for r_feed, g_feed in zip(ref, got):
        for r, g in zip(r_feed, g_feed):
            if r.dtype.kind != "f":
                continue
            r, g = r.astype(np.float64), g.astype(np.float64)
            se += float(np.square(g - r).sum())
            sr += float(np.square(r).sum())
    return float("inf") if se == 0.0 else 10.0 * np.log10(max(sr, 1e-300) / se)


def choose_auto(model: ModelProto, stats: Mapping[str, TensorHistogram], feeds, percentile: float = 99.99,
                threads: Optional[int] = None) -> Tuple[Dict[str, float], dict]:
    """The ``auto`` method: the candidate ranges whose QDQ model is closest to FP32 on ``feeds``.

    Args:
        model: the FP32 model the statistics were collected on.
        stats: ``{tensor: TensorHistogram}`` with histograms.
        feeds: feed dicts to score on (the first :data:`AUTO_PROBE_FEEDS` are used).
        percentile: the percentile candidate's percentile.
        threads: onnxruntime intra-op threads.

    Returns:
        ``({tensor: amax}, {"chosen": method, "sqnr_db": {method: dB}})``. When the model has nothing to
        quantize or no feed, the first candidate is returned unscored.
    """
    from ..ortutil import make_session

    candidates = {m: calibrated_amax(model, stats, m, percentile, protect_pooled=True) for m in AUTO_CANDIDATES}
    probe = list(islice(iter(feeds), AUTO_PROBE_FEEDS))
    first = AUTO_CANDIDATES[0]
    if not probe:
        return candidates[first], {"chosen": first, "sqnr_db": {}}
    ref_sess = make_session(model, threads=threads, optimize=True)
    ref = [ref_sess.run(None, f) for f in probe]
    scores: Dict[str, float] = {}
    seen: Dict[tuple, str] = {}
    for method, amax in candidates.items():
        key = tuple(amax.values())
        if key in seen:  # the same ranges as an earlier candidate: the same model
            scores[method] = scores[seen[key]]
            continue
        seen[key] = method
        try:
            sess = make_session(quantize_qdq(model, amax), threads=threads, optimize=True)
        except InputError:  # nothing to quantize: every candidate gives the FP32 model
            return candidates[first], {"chosen": first, "sqnr_db": {}}
        scores[method] = _output_sqnr(ref, [sess.run(None, f) for f in probe])
    chosen = max(AUTO_CANDIDATES, key=lambda m: (scores[m], -AUTO_CANDIDATES.index(m)))
    return candidates[chosen], {"chosen": chosen, "sqnr_db": {m: round(v, 3) for m, v in scores.items()}}


def default_cache_dir() -> Path:
    """The calibration result cache: :func:`edgesqueeze.fileio.cache_dir` ``("calib")``."""
    return cache_dir("calib")


def cache_key(model: ModelProto, reader, method: str, percentile: float, bins: int,
              tensors: Optional[Sequence[str]] = None, *, model_digest: Optional[str] = None) -> str:
    """sha256 of the model, the data (``reader.sha256()``), the method and the options that change the result.

    ``model_digest`` is :func:`~edgesqueeze.model.model_hash` of ``model`` when the caller has it already.
    """
    parts = {"format": CACHE_FORMAT, "model": model_digest or model_hash(model), "data": reader.sha256(),
             "method": method, "bins": bins, "percentile": percentile if method in ("percentile", "auto") else None,
             "tensors": list(tensors) if tensors is not None else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _amax_checksum(pairs) -> str:
    """sha256 of the entry's ``amax`` pairs as JSON: a partial or edited entry does not match it."""
    return hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()


def _cache_entry(key: str, digest: str, method: str, percentile: float, reader, amax: Mapping[str, float],
                 summary: dict, nonfinite: dict, auto: Optional[dict]) -> dict:
    """The JSON of one cache entry: the ranges with their count and checksum, the key and the model hash."""
    pairs = [[k, float(v)] for k, v in amax.items()]
    return {"format": CACHE_FORMAT, "key": key, "model": digest, "method": method, "percentile": percentile,
            "data": reader.describe(), "amax": pairs, "count": len(pairs), "checksum": _amax_checksum(pairs),
            "stats": summary, "nonfinite": nonfinite, **({"auto": auto} if auto else {})}


def _entry_problem(data, key: str, digest: str, names: set, tensors: Optional[Sequence[str]]) -> Optional[str]:
    """Why a parsed cache entry cannot be used (None when it can)."""
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return "not an entry of this version"
    if data.get("key") != key or data.get("model") != digest:
        return "it belongs to another model or other options"
    pairs = data.get("amax")
    if not isinstance(pairs, list) or data.get("count") != len(pairs) or data.get("checksum") != _amax_checksum(pairs):
        return "its ranges are incomplete or altered (count or checksum mismatch)"
    for pair in pairs:
        ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and \
            isinstance(pair[1], (int, float)) and not isinstance(pair[1], bool)
        if not ok or not np.isfinite(pair[1]) or pair[1] < 0:
            return f"a range is not a finite number >= 0: {str(pair)[:60]}"
        if pair[0] not in names:
            return f"tensor '{pair[0][:60]}' is not in the model"
    if tensors is not None and sorted(p[0] for p in pairs) != sorted(tensors):
        return "its tensors are not the ones asked for"
    if not isinstance(data.get("stats", {}), dict) or not isinstance(data.get("nonfinite", {}), dict):
        return "its statistics are malformed"
    return None


def _read_cache(path: Path, key: str, digest: str, model: ModelProto,
                tensors: Optional[Sequence[str]] = None) -> Optional[dict]:
    """The valid entry at ``path``, else None: a missing one silently, a corrupt one with a one-line warning."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"unreadable ({exc})"
    else:
        try:
            data = json.loads(text)
        except ValueError:
            problem = "not valid JSON (a partial write?)"
        else:
            names = {t for n in iter_nodes(model.graph) for t in n.output} | {i.name for i in model.graph.input}
            problem = _entry_problem(data, key, digest, names, tensors)
            if problem is None:
                return data
    warnings.warn(f"calibration cache entry {path} is ignored: {problem}; calibrating again", stacklevel=3)
    return None


def calibrate(model: ModelProto, reader, method: str = DEFAULT_METHOD, percentile: float = 99.99,
              cache_dir: Optional[PathLike] = None, *, tensors: Optional[Sequence[str]] = None,
              bins: int = DEFAULT_BINS, memory_budget_mb: float = 512.0, threads: Optional[int] = None,
              calib_batch: Optional[int] = None, progress: bool = False,
              details: Optional[dict] = None) -> Dict[str, float]:
    """Calibrate ``model`` on ``reader`` and return ``{tensor: amax}`` (scale = amax / 127) in graph order.

    Args:
        model: FP32 model with inferred shapes (from :func:`edgesqueeze.model.load_model`).
        reader: data reader (:func:`edgesqueeze.data.open_data`); random data works but gives meaningless ranges.
        method: ``auto`` (the default: the best of mse, entropy and percentile for this network, see the module
            docstring), ``entropy`` (TensorRT EntropyCalibration2), ``minmax``, ``percentile`` or ``mse``.
        percentile: the percentile method's percentile (0 < p <= 100).
        cache_dir: folder of the calibration result cache (None: no caching).
        tensors: tensors to calibrate (default: every float activation, as a TensorRT cache needs).
        bins: histogram bins (2048 as TensorRT).
        memory_budget_mb: activation bytes exposed per batch and pass (see :func:`collect_statistics`).
        threads: onnxruntime intra-op threads and histogram workers.
        calib_batch: feeds stacked per onnxruntime run (None: automatic; see :func:`collect_statistics`).
        progress: show a progress bar.
        details: when a dict is given, it receives ``{"stats": {tensor: summary}, "cached": bool, "key": str,
            "nonfinite": {tensor: count}}``, and for ``auto`` ``"auto": {"chosen": method, "sqnr_db": {...}}``.

    Returns:
        ``{tensor name: amax}``, floats >= 0.

    Raises:
        InputError: unknown method, bad percentile, empty data.
        UnsupportedError: onnxruntime cannot run the model.
    """
    method = method.lower()
    amax_of = amax_function(method, percentile)  # validates method and percentile early
    if method in ("percentile", "auto") and not 0.0 < float(percentile) <= 100.0:
        raise InputError(f"percentile must be in (0, 100], got {percentile}")
    if getattr(reader, "is_random", False):
        warnings.warn("calibrating on random data: the ranges do not describe real inputs", stacklevel=2)
    key = None
    cache_file = None
    if cache_dir is not None:
        digest = model_hash(model)
        key = cache_key(model, reader, method, float(percentile), bins, tensors, model_digest=digest)
        cache_file = Path(cache_dir) / f"{key}.json"
        cached = _read_cache(cache_file, key, digest, model, tensors)
        if cached is not None:
            if details is not None:
                details.update({"cached": True, "key": key, "stats": cached.get("stats", {}),
                                "nonfinite": cached.get("nonfinite", {}), "cache_file": str(cache_file)})
                if "auto" in cached:
                    details["auto"] = cached["auto"]
            return {str(k): float(v) for k, v in cached["amax"]}  # pairs keep graph order
    stats = collect_statistics(model, reader, tensors=tensors, histogram=needs_histogram(method), bins=bins,
                               memory_budget_mb=memory_budget_mb, threads=threads, calib_batch=calib_batch,
                               progress=progress)
    auto = None
    if method == "auto":
        amax, auto = choose_auto(model, stats, reader, percentile, threads)
    else:
        amax = {name: float(amax_of(s)) for name, s in stats.items()}
    summary = {name: s.summary() for name, s in stats.items()}
    nonfinite = {name: s.nonfinite for name, s in stats.items() if s.nonfinite}
    if nonfinite:
        first = next(iter(nonfinite))
        warnings.warn(f"{len(nonfinite)} tensor(s) produced NaN/Inf on the calibration data (first: '{first}', "
                      f"{nonfinite[first]} values); they were left out of the ranges", stacklevel=2)
    if cache_file is not None:
        write_json_atomic(cache_file, _cache_entry(key, digest, method, percentile, reader, amax, summary,
                                                   nonfinite, auto))
    if details is not None:
        details.update({"cached": False, "key": key, "stats": summary, "nonfinite": nonfinite,
                        "cache_file": str(cache_file) if cache_file else None, **({"auto": auto} if auto else {})})
    return amax
