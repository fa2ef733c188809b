"""``quantize_model``: the ``edgesqueeze quantize`` verb as a Python function."""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import InputError
from ..fileio import PathLike


def _noop(_msg: str) -> None:
    pass


def _error_row(res: dict) -> dict:
    errs = (res.get("output_error") or {}).values()
    sq = [e["sqnr_db"] for e in errs if e["sqnr_db"] is not None]
    return {"top1": res["top1"], "agreement": res.get("agreement"),
            "sqnr_db": min(sq) if sq else None, "max_rel": max((e["max_rel"] for e in errs), default=None)}


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
                   calib: Optional[str] = None, method: str = "entropy", percentile: float = 99.99,
                   keep: Sequence[str] = (), val: Optional[str] = None, sensitivity: bool = False,
                   auto_keep_drop: Optional[float] = None, from_cache: Optional[PathLike] = None,
                   calib_cache: Optional[PathLike] = None, trt_version: Optional[str] = None,
                   limit: Optional[int] = None, batch_size: int = 1, cache_dir: Optional[PathLike] = None,
                   no_cache: bool = False, memory_budget: float = 512.0, int8_weights: bool = False,
                   input_shapes: Sequence[str] = (), progress: bool = False,
                   info: Callable[[str], None] = _noop, warn: Callable[[str], None] = _noop) -> dict:
    """Quantize the model file ``model`` and write the results; returns a JSON-ready summary.

    INT8 writes ``output`` (explicit QDQ model) and a TensorRT calibration cache (``calib_cache``, default
    ``output`` with suffix ``.cache``); FP16 writes the FP16 model; FP32 writes the model unchanged.
    Arguments mirror the command-line options (see ``edgesqueeze quantize --help``).

    Raises:
        InputError: bad files, data or options (e.g. INT8 without --calib or --from-cache, --sensitivity
            without data).
        UnsupportedError: the target cannot run the requested precision.
    """
    from ..data import open_data
    from ..devices import get_profile
    from ..fileio import check_writable, refuse_overwrite
    from ..model import load_model, parse_input_shapes, save_model
    from . import calibrate, convert_fp16, default_cache_dir, plan_qdq, quantize_qdq, resolve_precision
    from .policy import precision_reason
    from .sensitivity import auto_keep, layer_sensitivity
    from .trtcache import read_calibration_cache, write_calibration_cache

    from .calibrators import amax_function

    if not 0.0 < float(percentile) <= 100.0:
        raise InputError(f"--percentile must be in (0, 100], got {percentile}")
    amax_function(method, percentile)  # validates the method before any work
    model_path = Path(model)
    output = Path(output)
    data_files = [p for p in (calib, val, from_cache) if p and str(p) != "random"]
    refuse_overwrite(output, model_path, *data_files)  # the model, the data and a cache read are never written
    if calib_cache:
        refuse_overwrite(calib_cache, model_path, *data_files)
        if Path(calib_cache).resolve() == output.resolve():
            raise InputError("--calib-cache and -o name the same file", path=str(output))
    check_writable(output)
    fp32 = load_model(model_path, parse_input_shapes(list(input_shapes)))
    _check_batch_size(fp32, batch_size, warn)
    profile = get_profile(target) if target else None
    # without a target an explicit precision is simply what the user asked for (onnxruntime runs all three)
    if profile is not None or precision.lower() == "auto":
        chosen = resolve_precision(profile, precision)
    else:
        chosen = _checked(precision)
    if chosen == "int8" and precision.lower() == "auto" and not (calib or from_cache):
        target_profile = profile if profile is not None else _cpu()
        fallback = "fp16" if target_profile.supports("fp16") else "fp32"
        warn(f"auto chose INT8 but no calibration data was given (--calib); building {fallback} instead")
        chosen, reason = fallback, f"INT8 needs --calib; {fallback} instead"
    else:
        reason = precision_reason(profile, chosen) if profile is not None else None
    summary: dict = {"model": str(model_path), "precision": chosen, "requested": precision.lower(),
                     "target": target, "outputs": {}}
    if precision.lower() == "auto" and reason:
        summary["precision_reason"] = reason
    val_reader = open_data(val, fp32, batch_size=batch_size, limit=limit) if val else None
    if val_reader is not None and val_reader.is_random:
        warn("validation on random data: accuracy numbers mean nothing")
    if chosen != "int8" and (sensitivity or auto_keep_drop is not None):
        raise InputError("--sensitivity and --auto-keep apply to INT8 (use --precision int8)")

    if chosen == "fp32":
        save_model(fp32, output, inputs=(model_path,))
        summary["outputs"]["model"] = str(output)
        return summary

    if chosen == "fp16":
        report: dict = {}
        out_model = convert_fp16(fp32, keep_fp32=keep, report=report)
        summary["fp16"] = report
        data_spec = calib or val
        if data_spec:
            report["overflow"] = fp16_overflow_nodes(fp32, open_data(data_spec, fp32, batch_size=batch_size,
                                                                     limit=limit))
            risky = [n for n in report["overflow"] if n not in keep]
            if risky:
                warn(f"{len(risky)} layer(s) produce values beyond the FP16 range (65504) on the data: "
                     f"{', '.join(risky[:5])}; keep them in FP32 with --keep {','.join(risky[:5])}")
        save_model(out_model, output, inputs=(model_path,))
        summary["outputs"]["model"] = str(output)
        if val_reader is not None:
            summary["accuracy"] = _accuracy(fp32, {"fp16": out_model}, val_reader, progress)
        return summary

    # ---------------------------------------------------------------------------------------- int8
    if from_cache:
        header, amax = read_calibration_cache(from_cache)
        summary["calibration"] = {"method": f"cache ({header})", "data": str(from_cache), "tensors": len(amax),
                                  "cached": True}
    else:
        if not calib:
            raise InputError("INT8 needs calibration data: give --calib DATA (or --from-cache FILE)",
                             hint="--calib random works for latency tests only")
        reader = open_data(calib, fp32, batch_size=batch_size, limit=limit)
        if reader.is_random:
            warn("calibrating on random data: the INT8 model is for latency tests only, not for accuracy")
        info(f"calibrating ({method}) on {reader.describe()}")
        details: dict = {}
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            amax = calibrate(fp32, reader, method=method, percentile=percentile,
                             cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
                             memory_budget_mb=memory_budget, progress=progress, details=details)
        for w in caught:
            if "random data" not in str(w.message):
                warn(str(w.message))
        summary["calibration"] = {"method": method, "percentile": percentile if method == "percentile" else None,
                                  "data": reader.describe(), "random": reader.is_random, "tensors": len(amax),
                                  "cached": details.get("cached", False),
                                  "seconds": time.perf_counter() - start, "nonfinite": details.get("nonfinite", {})}
    keep = list(keep)
    ranking = None
    if sensitivity or auto_keep_drop is not None:
        data = val_reader
        if data is None:
            if not calib or from_cache:
                raise InputError("--sensitivity/--auto-keep need validation data: give --val DATA")
            data = open_data(calib, fp32, batch_size=batch_size, limit=limit)
            warn("no --val given: ranking layers on the calibration data")
        info("measuring per-layer sensitivity")
        ranking = layer_sensitivity(fp32, amax, data, progress=progress)
        summary["sensitivity"] = ranking
        if auto_keep_drop is not None:
            result = auto_keep(fp32, amax, data, auto_keep_drop, keep=keep, ranking=ranking, progress=progress)
            keep = result["keep"]
            summary["auto_keep"] = {k: v for k, v in result.items() if k != "ranking"}
            summary["auto_keep"]["budget"] = auto_keep_drop
    plan = plan_qdq(fp32, amax, keep)
    qdq = quantize_qdq(fp32, amax, plan=plan, int8_weights=int8_weights)
    summary["quantized"] = plan.to_dict()
    summary["keep"] = keep
    save_model(qdq, output, inputs=(model_path,))
    summary["outputs"]["qdq model"] = str(output)

    version = trt_version or (profile.tensorrt_version if profile is not None and profile.tensorrt_version
                              else "8.2.1")
    cache_path = Path(calib_cache) if calib_cache else output.with_suffix(".cache")
    if from_cache and cache_path.exists() and Path(from_cache).resolve() == cache_path.resolve():
        raise InputError("the calibration cache output would overwrite --from-cache", path=str(cache_path))
    # a tensor read only by kept layers gets no range, so TensorRT's implicit INT8 keeps those layers out too
    kept_only = _kept_only_tensors(fp32, plan)
    write_calibration_cache(cache_path, {k: v for k, v in amax.items() if k not in kept_only}, version)
    summary["outputs"]["calibration cache"] = str(cache_path)
    summary["trt_version"] = version
    if val_reader is not None:
        summary["accuracy"] = _accuracy(fp32, {"int8": qdq}, val_reader, progress)
    return summary


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
    """Say so when --batch-size cannot apply: the model is loaded with static shapes, so its batch is fixed."""
    from ..model import input_specs

    if batch_size == 1:
        return
    batches = {spec["shape"][0] for spec in input_specs(model).values() if spec["shape"]}
    if batches and batch_size not in batches:
        fixed = ", ".join(str(b) for b in sorted(batches))
        warn(f"--batch-size {batch_size} has no effect: the model's batch is fixed at {fixed} (by the model or "
             f"--input); batches of {fixed} are used. Give --input NAME:{batch_size}x... to calibrate in batches of "
             f"{batch_size} (the written model then has that batch too)")


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
    reader = open_data(data, m, batch_size=batch_size, limit=limit)
    result = evaluate(m, reader, reference=ref, output=output, progress=progress)
    result["model"] = str(model)
    result["reference"] = str(reference) if reference else None
    return result
