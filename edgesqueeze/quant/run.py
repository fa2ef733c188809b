"""The quantization API that ``edgesqueeze quantize`` and ``edgesqueeze build`` share.

:class:`QuantOptions` holds every INT8 option (method, percentile, ``--keep``, ``--sensitivity``, ``--auto-keep``,
INT8 weights); :func:`calibrate_amax` and :func:`quantize_int8` are the two steps both verbs run, so an option
of ``quantize`` is an option of ``build``. :func:`quantize_model` is the ``quantize`` verb as a Python function.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from onnx import ModelProto

from ..errors import InputError
from ..fileio import PathLike
from .methods import DEFAULT_METHOD, METHODS, CalibMethod
from .qdq import QdqPlan, constants_as_initializers


def _noop(_msg: str) -> None:
    pass


def _error_row(res: dict) -> dict:
    errs = (res.get("output_error") or {}).values()
    sq = [e["sqnr_db"] for e in errs if e["sqnr_db"] is not None]
    return {"top1": res["top1"], "agreement": res.get("agreement"),
            "sqnr_db": min(sq) if sq else None, "max_rel": max((e["max_rel"] for e in errs), default=None)}


@dataclass(frozen=True)
class QuantOptions:
    """The INT8 options of ``quantize`` and ``build``, validated when made.

    ``method`` takes a :class:`CalibMethod` or its name; ``keep`` names nodes (or their output tensors) left in
    higher precision; ``sensitivity`` ranks layers; ``auto_keep_drop`` keeps the most sensitive layers out of INT8
    until the accuracy drop is at most that many points; ``cache_dir`` is the calibration result cache (None: no
    cache). Raises InputError for an unknown method or a percentile outside (0, 100].
    """

    method: CalibMethod = CalibMethod.AUTO
    percentile: float = 99.99
    keep: Tuple[str, ...] = ()
    sensitivity: bool = False
    auto_keep_drop: Optional[float] = None
    int8_weights: bool = False
    cache_dir: Optional[PathLike] = None
    memory_budget: float = 512.0

    def __post_init__(self) -> None:
        try:
            method = CalibMethod(str(self.method).lower())
        except ValueError:
            raise InputError(f"unknown calibration method '{self.method}'; choose one of {', '.join(METHODS)}") \
                from None
        if not 0.0 < float(self.percentile) <= 100.0:
            raise InputError(f"--percentile must be in (0, 100], got {self.percentile}")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "keep", tuple(self.keep))

    @property
    def ranks_layers(self) -> bool:
        """True when the layers are ranked by sensitivity (``--sensitivity`` or ``--auto-keep``)."""
        return self.sensitivity or self.auto_keep_drop is not None


@dataclass(frozen=True)
class Int8Result:
    """What :func:`quantize_int8` made: the QDQ model, its plan, the layers kept, and the ranges for the cache."""

    model: ModelProto
    plan: QdqPlan
    keep: List[str]
    cache_amax: Dict[str, float]  # a tensor read only by kept layers has no range: TensorRT keeps them out too
    ranking: Optional[list] = None
    auto_keep: Optional[dict] = None


def calibrate_amax(model: ModelProto, reader, options: QuantOptions, *, progress: bool = False,
                   details: Optional[dict] = None) -> Tuple[Dict[str, float], list]:
    """Calibrate ``model`` on ``reader`` with ``options``; returns ``(amax, caught warnings)``.

    The calibrator's Python warnings are caught and returned (``warnings.WarningMessage``) so that each verb
    routes them to its own log. Raises InputError for bad data.
    """
    from .calibrate import calibrate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        amax = calibrate(model, reader, method=options.method.value, percentile=options.percentile,
                         cache_dir=options.cache_dir, memory_budget_mb=options.memory_budget, progress=progress,
                         details=details)
    return amax, list(caught)


def quantize_int8(model: ModelProto, amax: Dict[str, float], options: QuantOptions, data=None, *,
                  progress: bool = False, info: Callable[[str], None] = _noop) -> Int8Result:
    """Place Q/DQ pairs in ``model`` from ``amax``, leaving ``options.keep`` (and, with ``--auto-keep``, the most
    sensitive layers) in higher precision.

    ``data`` is the reader the layers are ranked on (needed only when ``options.ranks_layers``).

    Raises:
        InputError: ranking asked without data; nothing could be quantized.
    """
    from .qdq import plan_qdq, quantize_qdq
    from .sensitivity import auto_keep, layer_sensitivity

    keep, ranking, kept = list(options.keep), None, None
    if options.ranks_layers:
        if data is None:
            raise InputError("--sensitivity/--auto-keep need validation data: give --val DATA")
        info("measuring per-layer sensitivity")
        ranking = layer_sensitivity(model, amax, data, progress=progress)
        if options.auto_keep_drop is not None:
            result = auto_keep(model, amax, data, options.auto_keep_drop, keep=keep, ranking=ranking,
                               progress=progress)
            keep = result["keep"]
            kept = {k: v for k, v in result.items() if k != "ranking"}
            kept["budget"] = options.auto_keep_drop
    plan = plan_qdq(model, amax, keep)
    qdq = quantize_qdq(model, amax, plan=plan, int8_weights=options.int8_weights)
    kept_only = _kept_only_tensors(model, plan)
    return Int8Result(qdq, plan, keep, {k: v for k, v in amax.items() if k not in kept_only}, ranking, kept)


def _cpu():
    from ..devices import cpu_profile

    return cpu_profile()


def _checked(precision: str) -> str:
    from .policy import CHOICES

    p = precision.lower()
    if p not in CHOICES:
        raise InputError(f"unknown precision '{precision}'; choose one of {', '.join(CHOICES)}")
    return p


def quantize_model(model: PathLike, output: PathLike, *, precision: str = "auto", target: Optional[str] = None,
                   calib: Optional[str] = None, method: str = DEFAULT_METHOD, percentile: float = 99.99,
                   keep: Sequence[str] = (), val: Optional[str] = None, sensitivity: bool = False,
                   auto_keep_drop: Optional[float] = None, from_cache: Optional[PathLike] = None,
                   calib_cache: Optional[PathLike] = None, trt_version: Optional[str] = None,
                   limit: Optional[int] = None, batch_size: int = 1, cache_dir: Optional[PathLike] = None,
                   no_cache: bool = False, memory_budget: float = 512.0, int8_weights: bool = False,
                   input_shapes: Sequence[str] = (), static: bool = False, progress: bool = False,
                   info: Callable[[str], None] = _noop, warn: Callable[[str], None] = _noop) -> dict:
    """Quantize the model file ``model`` and write the results; returns a JSON-ready summary.

    INT8 writes ``output`` (explicit QDQ model) and a TensorRT calibration cache (``calib_cache``, default
    ``output`` with suffix ``.cache``); FP16 writes the FP16 model; FP32 writes the model unchanged.
    Arguments mirror the command-line options (see ``edgesqueeze quantize --help``); the INT8 ones become a
    :class:`QuantOptions`, the same object ``build`` uses. The written models keep the input's symbolic dims
    (``input_shapes`` give the shapes of random data only) unless ``static`` pins them.

    Raises:
        InputError: bad files, data or options (e.g. INT8 without --calib or --from-cache, --sensitivity
            without data).
        UnsupportedError: the target cannot run the requested precision.
    """
    from ..data import open_data
    from ..devices import get_profile
    from ..model import load_model, parse_input_shapes, save_model, weights_were_external
    from .calibrate import default_cache_dir

    options = QuantOptions(method, percentile, tuple(keep), sensitivity, auto_keep_drop, int8_weights,
                           None if no_cache else (cache_dir or default_cache_dir()), memory_budget)
    model_path, output = Path(model), Path(output)
    _check_outputs(model_path, output, calib_cache, [p for p in (calib, val, from_cache) if p and str(p) != "random"])
    shapes = parse_input_shapes(list(input_shapes))
    fp32 = constants_as_initializers(load_model(model_path, shapes, pin=static))  # paddle2onnx's Constant weights
    external = weights_were_external(fp32, model_path)  # the output keeps the input's external data (as optimize)
    _check_batch_size(fp32, batch_size, warn)
    profile = get_profile(target) if target else None
    chosen, reason = _choose_precision(profile, precision, bool(calib or from_cache), warn)
    summary: dict = {"model": str(model_path), "precision": chosen, "requested": precision.lower(),
                     "target": target, "outputs": {}}
    if precision.lower() == "auto" and reason:
        summary["precision_reason"] = reason
    val_reader = open_data(val, fp32, batch_size=batch_size, limit=limit, shapes=shapes) if val else None
    if val_reader is not None and val_reader.is_random:
        warn("validation on random data: accuracy numbers mean nothing")
    if chosen != "int8" and options.ranks_layers:
        raise InputError("--sensitivity and --auto-keep apply to INT8 (use --precision int8)")
    if chosen == "fp32":
        save_model(fp32, output, inputs=(model_path,), external=external)
        summary["outputs"]["model"] = str(output)
        return summary
    opened = lambda spec: open_data(spec, fp32, batch_size=batch_size, limit=limit, shapes=shapes)  # noqa: E731
    if chosen == "fp16":
        out_model = _fp16(fp32, options.keep, opened(calib or val) if (calib or val) else None, summary, warn)
        variants = {"fp16": out_model}
    else:
        amax = _int8_ranges(fp32, options, calib, from_cache, opened, summary, progress, info, warn)
        data = val_reader
        if options.ranks_layers and data is None:
            if not calib or from_cache:
                raise InputError("--sensitivity/--auto-keep need validation data: give --val DATA")
            data = opened(calib)
            warn("no --val given: ranking layers on the calibration data")
        result = quantize_int8(fp32, amax, options, data, progress=progress, info=info)
        _record_int8(result, summary)
        out_model, variants = result.model, {"int8": result.model}
    save_model(out_model, output, inputs=(model_path,), external=external)
    summary["outputs"]["qdq model" if chosen == "int8" else "model"] = str(output)
    if chosen == "int8":
        version = trt_version or (profile.tensorrt_version if profile is not None and profile.tensorrt_version
                                  else "8.2.1")
        summary["outputs"]["calibration cache"] = _write_cache(result, output, calib_cache, from_cache, version)
        summary["trt_version"] = version
    if val_reader is not None:
        summary["accuracy"] = _accuracy(fp32, variants, val_reader, progress)
    return summary


def _check_outputs(model_path: Path, output: Path, calib_cache, data_files: list) -> None:
    """The model, the data and a cache read are never written; -o and --calib-cache differ; -o is writable."""
    from ..fileio import check_writable, refuse_overwrite

    refuse_overwrite(output, model_path, *data_files)
    if calib_cache:
        refuse_overwrite(calib_cache, model_path, *data_files)
        if Path(calib_cache).resolve() == output.resolve():
            raise InputError("--calib-cache and -o name the same file", path=str(output))
    check_writable(output)


def _choose_precision(profile, precision: str, has_ranges: bool, warn) -> Tuple[str, Optional[str]]:
    """The precision to write and the sentence why (``auto`` without calibration data falls back from INT8)."""
    from .policy import precision_reason, resolve_precision

    # without a target an explicit precision is simply what the user asked for (onnxruntime runs all three)
    if profile is not None or precision.lower() == "auto":
        chosen = resolve_precision(profile, precision)
    else:
        chosen = _checked(precision)
    if chosen == "int8" and precision.lower() == "auto" and not has_ranges:
        target_profile = profile if profile is not None else _cpu()
        fallback = "fp16" if target_profile.supports("fp16") else "fp32"
        warn(f"auto chose INT8 but no calibration data was given (--calib); building {fallback} instead")
        return fallback, f"INT8 needs --calib; {fallback} instead"
    return chosen, precision_reason(profile, chosen) if profile is not None else None


def _fp16(fp32: ModelProto, keep: Sequence[str], data, summary: dict, warn) -> ModelProto:
    """The FP16 model; with data, the layers whose values overflow FP16 are named (and kept when asked)."""
    from .fp16 import convert_fp16

    report: dict = {}
    out_model = convert_fp16(fp32, keep_fp32=keep, report=report)
    summary["fp16"] = report
    if data is not None:
        report["overflow"] = fp16_overflow_nodes(fp32, data)
        risky = [n for n in report["overflow"] if n not in keep]
        if risky:
            warn(f"{len(risky)} layer(s) produce values beyond the FP16 range (65504) on the data: "
                 f"{', '.join(risky[:5])}; keep them in FP32 with --keep {','.join(risky[:5])}")
    return out_model


def _int8_ranges(fp32, options: QuantOptions, calib, from_cache, opened, summary: dict, progress: bool, info,
                 warn) -> Dict[str, float]:
    """The INT8 ranges: read from ``--from-cache`` or calibrated on ``--calib`` (recorded in ``summary``)."""
    from .trtcache import read_calibration_cache

    if from_cache:
        header, amax = read_calibration_cache(from_cache)
        summary["calibration"] = {"method": f"cache ({header})", "data": str(from_cache), "tensors": len(amax),
                                  "cached": True}
        return amax
    if not calib:
        raise InputError("INT8 needs calibration data: give --calib DATA (or --from-cache FILE)",
                         hint="--calib random works for latency tests only")
    reader = opened(calib)
    if reader.is_random:
        warn("calibrating on random data: the INT8 model is for latency tests only, not for accuracy")
    method = options.method.value
    info(f"calibrating ({method}) on {reader.describe()}")
    details: dict = {}
    start = time.perf_counter()
    amax, caught = calibrate_amax(fp32, reader, options, progress=progress, details=details)
    for w in caught:
        if "random data" not in str(w.message):
            warn(str(w.message))
    summary["calibration"] = {"method": method, "percentile": options.percentile if method == "percentile" else None,
                              "data": reader.describe(), "random": reader.is_random, "tensors": len(amax),
                              "cached": details.get("cached", False),
                              "seconds": time.perf_counter() - start, "nonfinite": details.get("nonfinite", {})}
    return amax


def _record_int8(result: Int8Result, summary: dict) -> None:
    """The INT8 part of the summary: the sensitivity ranking, auto-keep's choice, the QDQ plan, the kept layers."""
    if result.ranking is not None:
        summary["sensitivity"] = result.ranking
    if result.auto_keep is not None:
        summary["auto_keep"] = result.auto_keep
    summary["quantized"] = result.plan.to_dict()
    summary["keep"] = result.keep


def _write_cache(result: Int8Result, output: Path, calib_cache, from_cache, version: str) -> str:
    """Write the TensorRT calibration cache next to the model (or at --calib-cache); returns its path."""
    from .trtcache import write_calibration_cache

    cache_path = Path(calib_cache) if calib_cache else output.with_suffix(".cache")
    if from_cache and cache_path.exists() and Path(from_cache).resolve() == cache_path.resolve():
        raise InputError("the calibration cache output would overwrite --from-cache", path=str(cache_path))
    write_calibration_cache(cache_path, result.cache_amax, version)
    return str(cache_path)


def fp16_overflow_nodes(model, reader, limit: float = 65504.0) -> list:
    """Nodes that produce or read a tensor exceeding the FP16 range on ``reader``'s data, in graph order.

    Both sides must stay in FP32: a consumer in FP16 would see the value cast to inf.
    """
    from .collect import collect_statistics
    from .qdq import node_label

    stats = collect_statistics(model, reader, histogram=False)
    big = {t for t, s in stats.items() if s.amax > limit}
    return [node_label(n, i) for i, n in enumerate(model.graph.node)
            if big.intersection(n.output) or big.intersection(n.input)]


def _kept_only_tensors(model, plan) -> set:
    from .qdq import node_label

    chosen = set(plan.nodes)
    skipped = set(plan.skipped)
    readers: dict = {}
    for i, node in enumerate(model.graph.node):
        label = node_label(node, i)
        for name in node.input:
            readers.setdefault(name, set()).add("kept" if label in skipped else "quant" if label in chosen
                                                else "other")
    return {name for name, kinds in readers.items() if kinds == {"kept"}}


def _accuracy(fp32, variants: dict, reader, progress: bool) -> dict:
    from .evaluate import evaluate

    base = evaluate(fp32, reader, progress=progress)
    models = {"fp32": {"top1": base["top1"], "agreement": 100.0, "sqnr_db": None, "max_rel": 0.0}}
    for name, m in variants.items():
        models[name] = _error_row(evaluate(m, reader, reference=fp32, progress=progress))
    drop = None
    if base["top1"] is not None:
        drop = {name: base["top1"] - r["top1"] for name, r in models.items() if name != "fp32"}
    return {"data": reader.describe(), "n": base["n"], "models": models, "top1_drop": drop}


def _check_batch_size(model, batch_size: int, warn: Callable[[str], None]) -> None:
    """Say so when --batch-size cannot apply: the model's batch is fixed (by the model or --static)."""
    from ..model import input_specs

    if batch_size == 1:
        return
    batches = {spec["shape"][0] for spec in input_specs(model).values()
               if spec["shape"] and isinstance(spec["shape"][0], int)}
    if batches and batch_size not in batches:
        fixed = ", ".join(str(b) for b in sorted(batches))
        warn(f"--batch-size {batch_size} has no effect: the model's batch is fixed at {fixed} (by the model or "
             f"--static); batches of {fixed} are used")


def evaluate_model(model: PathLike, data: str, *, reference: Optional[PathLike] = None,
                   output: Optional[str] = None, limit: Optional[int] = None, batch_size: int = 1,
                   input_shapes: Sequence[str] = (), progress: bool = False,
                   warn: Callable[[str], None] = _noop) -> dict:
    """The ``edgesqueeze eval`` verb: load ``model`` (and ``reference``), open ``data``, run :func:`evaluate`.

    Raises:
        InputError: bad files or data; a reference whose inputs/outputs differ from the model's.
    """
    from ..data import open_data
    from ..model import input_specs, load_model, parse_input_shapes
    from .evaluate import evaluate

    shapes = parse_input_shapes(list(input_shapes))
    m = load_model(model, shapes)
    _check_batch_size(m, batch_size, warn)
    ref = None
    if reference:
        ref = load_model(reference, shapes)
        if set(input_specs(ref)) != set(input_specs(m)):
            raise InputError(f"the reference's inputs {sorted(input_specs(ref))} differ from the model's "
                             f"{sorted(input_specs(m))}", path=str(reference))
        outs = {o.name for o in m.graph.output}
        ref_outs = {o.name for o in ref.graph.output}
        if not outs <= ref_outs:
            raise InputError(f"the reference lacks the model's output '{sorted(outs - ref_outs)[0]}'",
                             path=str(reference))
    reader = open_data(data, m, batch_size=batch_size, limit=limit, shapes=shapes)
    result = evaluate(m, reader, reference=ref, output=output, progress=progress)
    result["model"] = str(model)
    result["reference"] = str(reference) if reference else None
    return result
