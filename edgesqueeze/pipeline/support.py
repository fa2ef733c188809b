"""What the build stages do that is more than a call: optimizer, calibration cache, validation, local
TensorRT engine, predicted latency, and the small JSON helpers for the manifest."""
from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import onnx

from ..backends import get_runner
from ..backends.trt_plan import strongly_typed
from ..bundle.variants import custom_ops, inlined_variant, refresh_functions
from ..compare import compare_runs
from ..compat import make_target_compatible, onnx_version_of
from ..data import open_data
from ..errors import InputError, UnsupportedError, VerificationError
from ..inspect import inspect_model
from ..model import input_specs, nonfinite_initializers, random_feeds
from ..ortutil import compare_outputs, make_session, run_model
from ..passes import optimize as run_passes
from ..passes import resolve_passes
from ..quant import write_calibration_cache


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def plugin_expectation(model: onnx.ModelProto, profile, precision: str) -> Optional[str]:
    """Which engine the device should keep for fused custom nodes, and why, from inspect's roofline of the fused
    blocks (the plugin keeps the depthwise output on chip) against the same blocks unfused (TensorRT's own
    kernels write it to DRAM and read it back). None when the model has no fused block or the target no TensorRT.
    """
    if not profile.has_tensorrt:
        return None
    blocks = [b for b in inspect_model(model, target=profile, precision=precision)["dwsep_blocks"]
              if b["fused_node"] and "fused_ms" in b]
    if not blocks:
        return None
    fused, unfused = sum(b["fused_ms"] for b in blocks), sum(b["unfused_ms"] for b in blocks)
    saved = sum(b["bytes_saved"] for b in blocks)
    pick = "the plugin engine" if unfused > 1.05 * fused else "either (the blocks are compute-bound: same roofline)"
    return (f"expects {pick}: {len(blocks)} fused block(s) save {saved / 1e3:.1f} kB of DRAM traffic, roofline "
            f"{fused * 1e3:.2f} us fused vs {unfused * 1e3:.2f} us unfused on {profile.name}; build_engine.sh times "
            "the plugin and the native engine on the device and keeps the faster")


def predicted_ms(model: onnx.ModelProto, profile, precision: str, sparse: bool = False) -> Optional[float]:
    """The roofline-predicted latency of ``model`` on ``profile`` at ``precision``, in ms."""
    totals = inspect_model(model, target=profile, precision=precision, sparse=sparse)["totals"]
    return totals.get("predicted_ms", totals.get("roofline_ms"))


def local_trt_reason() -> Optional[str]:
    """Why no local TensorRT engine can be built here (None when one can)."""
    if not have("tensorrt"):
        return "TensorRT is not installed here (pip install 'edgesqueeze[trt]' on a machine with an NVIDIA GPU)"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU here (nvidia-smi not found)"
    return None


def engine_skip_reason(profile, trt_reason: Optional[str]) -> str:
    """Why the engine stage builds no local engine: the target's own lack of TensorRT comes first (installing
    TensorRT here would not help a TK1), else ``trt_reason`` (this machine's)."""
    if not profile.has_tensorrt:
        cc = f" (compute capability {profile.compute_capability}; TensorRT needs 5.0+)" if profile.compute_capability \
            else ""
        return f"{profile.name} has no TensorRT{cc}: no engine, and the bundle has no build_engine.sh"
    return trt_reason or "no local engine"


def device_runtime(profile) -> Optional[str]:
    """Whether a bundle can run on the target board itself, when that is in doubt (a Jetson without TensorRT and
    without a supported Python, such as the TK1); None for every other target."""
    if profile.kind != "jetson" or profile.has_tensorrt or profile.python:
        return None
    return (f"this bundle does not run on the {profile.display_name} itself: it has no TensorRT, and "
            f"run_on_device.py needs Python 3.6+ with onnxruntime, which has no build for its L4T {profile.l4t} "
            f"(32-bit ARM) userland; use the bundle for analysis and latency prediction, or run the model elsewhere")


def check_feeds(model: onnx.ModelProto, shapes, data_specs) -> Dict[str, "object"]:
    """The feed dict the build's checks run on: seeded random inputs at the concrete shapes of the inputs
    (``--input``, else batch 1 and the model's metadata), else the first sample of the data given.

    Raises:
        InputError: a dynamic dim has no value and no data was given (names the tensor, suggests --input).
    """
    try:
        return random_feeds(model, seed=0, shapes=shapes)[0]
    except InputError:
        feed = first_real_feed(data_specs)
        if feed is None:
            raise
        return feed


def check_runs(model: onnx.ModelProto, path: str, feeds: Dict[str, "object"]) -> None:
    """Run the loaded model once on onnxruntime (on ``feeds``, see :func:`check_feeds`) so that a model that
    cannot run at its input shapes fails here, as a user error naming the file, not deep inside a later stage.

    Raises:
        UnsupportedError: onnxruntime cannot load or run the model (the message is onnxruntime's first line).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4  # the error is raised with its message: no second copy on stderr
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    try:
        sess = make_session(model, session_options=so)
    except Exception:  # noqa: BLE001 - what onnxruntime cannot load, the stages report with their own context
        return
    try:
        sess.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/RuntimeException types
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = text.split("Status Message:")[-1].strip()
        text = re.sub(r"^/\S+:\d+ .*?\)\s+", "", text)  # onnxruntime's source location and function
        raise UnsupportedError(f"onnxruntime cannot run the model at its input shapes: {text}", path=path,
                               hint="check the --input shapes (a hard-coded Reshape fixes the batch size)") from exc


def first_real_feed(specs) -> Optional[Dict[str, "object"]]:
    """The first feed dict of the first real (not random) data set among ``specs`` ((spec, model) pairs), or None."""
    for spec, model in specs:
        if spec is None or str(spec) == "random":
            continue
        try:
            return next(iter(open_data(spec, model, limit=1)))
        except Exception:  # noqa: BLE001 - the data was checked at load time; fall back to random inputs
            continue
    return None


def finish_models(models: Dict[str, onnx.ModelProto], feeds=None, random=None) -> Dict[str, onnx.ModelProto]:
    """Make every bundle model self-consistent and prove it runs: rebuild the custom nodes' local functions for
    the model's element type (an FP16 model needs FP16 function bodies), then run each once on onnxruntime,
    on ``feeds`` (a real input, when the user gave data) or on seeded random inputs (``random``, the build's check
    feeds, when given).

    Raises:
        VerificationError: a model does not load or run on onnxruntime, or gives non-finite outputs (names it).
    """
    import numpy as np

    what = "the first data sample"
    if feeds is None:
        feeds = random if random is not None else random_feeds(models["fp32"], seed=0)[0]
        what = "random inputs (seed 0)"
    out = {}
    for kind, m in models.items():
        if custom_ops(m):
            m = refresh_functions(m)
        try:
            session = make_session(m)
            result = session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - UnsupportedError from make_session or onnxruntime's own types
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VerificationError(f"the {kind} model does not run on onnxruntime: {text}",
                                    hint="a bug in the stage that made it: rerun with --debug and report it") from exc
        bad = [o.name for o, r in zip(session.get_outputs(), result)
               if np.issubdtype(np.asarray(r).dtype, np.floating) and not np.all(np.isfinite(r))]
        if bad:
            weights = nonfinite_initializers(m)
            if weights:
                raise VerificationError(f"the {kind} model gives NaN/Inf on {what}: {weights[0][1]} in initializer "
                                        f"'{weights[0][0]}' ({len(weights)} non-finite initializer(s))", tensor=bad[0],
                                        hint="the weights are broken: re-export from a finite checkpoint")
            raise VerificationError(f"the {kind} model gives NaN/Inf on {what}", tensor=bad[0],
                                    hint="a Log, Sqrt or division of arbitrary inputs? give real data with --calib "
                                         "or --val, or build from a model that is finite for any input")
        out[kind] = m
    return out


DWSEP_PASS = "fuse_depthwise_separable"


def strongly_typed_int8(profile) -> bool:
    """True when the target's TensorRT builds INT8 strongly typed (10.13+) on a GPU with fast FP16: the bundle
    then also carries the QDQ model on an FP16 base."""
    return bool(profile.has_tensorrt and profile.fast_fp16) and strongly_typed(profile.tensorrt)


def fusion_deferred(profile, passes, skip) -> bool:
    """True when the optimizer would fuse depthwise-separable blocks for this target and these options."""
    return DWSEP_PASS in resolve_passes(list(passes) if passes else None, tuple(skip), profile.name)


def run_optimizer(model, profile, passes, skip, enabled, feeds=None) -> dict:
    """Run the optimizer (verified on onnxruntime, on ``feeds`` when given); returns the stage's info with the
    new ``model`` in it."""
    if not enabled:
        return {"status": "skipped", "reason": "--no-optimize", "model": model, "note": "off"}
    out, report = run_passes(model, passes=list(passes) if passes else None, skip=tuple(skip),
                             target=profile.name, verify=True, feeds=None if feeds is None else [feeds])
    fusions = {k: (v.get("count") if isinstance(v, dict) else v) for k, v in sorted(report.get("fusions", {}).items())}
    names = [p["name"] if isinstance(p, dict) else str(p) for p in report.get("passes", [])]
    return {"status": "done", "model": out, "passes": names, "fusions": fusions,
            "nodes_before": report.get("nodes_before"), "nodes_after": report.get("nodes_after"),
            "verification": report.get("verification"),
            "note": f"{report.get('nodes_before')} -> {report.get('nodes_after')} nodes"}


def cache_text(amax: Dict[str, float], trt_version: str) -> str:
    """The calibration cache for ``trt_version`` as text (header EntropyCalibration2: what trtexec --calib reads)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgesqueeze-cache-") as tmp:
        path = Path(tmp) / "calibration.cache"
        write_calibration_cache(path, amax, trt_version=trt_version, algorithm="EntropyCalibration2")
        return path.read_text(encoding="utf-8")


def validate(original, models, reader, bar) -> dict:
    """Accuracy of every model against the input model's outputs (and labels when the data has them)."""
    ref_sess = make_session(original)
    results = {}
    ref_cache: List[dict] = []
    feeds = list(reader)
    labels = getattr(reader, "labels", None)
    for f in feeds:
        ref_cache.append(run_model(original, f, session=ref_sess))
        bar.update(1)
    for kind, m in models.items():
        sess = make_session(m)
        it = iter(ref_cache)
        r = compare_runs(lambda f: next(it), lambda f, s=sess, mm=m: run_model(mm, f, session=s), feeds, labels,
                         progress=bar.update if kind != "fp32" else None)
        results[kind] = r
    any_r = next(iter(results.values()))
    acc = any_r.get("accuracy")
    return {"samples": any_r["samples"], "labelled": bool(acc and acc.get("n")),
            "reference_top1": acc["a"] if acc else None,
            "models": {k: {"top1": (r["accuracy"] or {}).get("b"), "outputs": r["outputs"]}
                       for k, r in results.items()}}


def accuracy_note(acc: dict, deploy_kind: str) -> str:
    d = acc["models"].get(deploy_kind, {})
    if d.get("top1") is not None and acc.get("reference_top1") is not None:
        return f"top-1 {100 * acc['reference_top1']:.2f}% -> {100 * d['top1']:.2f}% ({deploy_kind})"
    errs = [o.get("max_rel") for o in d.get("outputs", {}).values() if o.get("max_rel") is not None]
    return f"max relative error {max(errs):.3g} ({deploy_kind})" if errs else "done"


_ADVICE = {"int8_qdq": "try --method minmax or percentile, more calibration data, --keep for the sensitive "
                        "layers (--sensitivity ranks them), or --precision fp16",
           "fp16": "keep the layers that overflow in FP32 with --keep, or use --precision fp32"}


def top1_loss(before: Optional[float], after: Optional[float], max_drop: float) -> Optional[str]:
    """Describe a top-1 loss larger than ``max_drop`` (fractions) as "N top-1 points (a% -> b%)"; None otherwise."""
    if before is None or after is None or before - after <= max_drop:
        return None
    return f"{100 * (before - after):.2f} top-1 points ({100 * before:.2f}% -> {100 * after:.2f}%)"


def accuracy_warnings(acc: dict, deploy_kind: str, max_drop: float = 0.01,
                      fp32_cause: str = "the optimizer") -> List[str]:
    """Warnings when a stage lost more accuracy than ``max_drop`` (a fraction of top-1, or of top-1 agreement).

    The loss is put where it happened: input -> optimized FP32 model (``fp32_cause``: the optimizer, or a
    compression such as 2:4 sparsity) and optimized FP32 -> the deploy model (quantization, with advice for
    its precision).
    """
    models = acc["models"]
    fp32, deploy = models.get("fp32", {}), models.get(deploy_kind, {})
    ref = acc.get("reference_top1")
    if ref is not None and deploy.get("top1") is not None:
        out = []
        lost = top1_loss(ref, fp32.get("top1"), max_drop)
        if lost:
            out.append(f"the optimized fp32 model loses {lost}: {fp32_cause} lost it")
        lost = top1_loss(fp32.get("top1", ref), deploy["top1"], max_drop) if deploy_kind != "fp32" else None
        if lost:
            out.append(f"quantizing to {deploy_kind} loses {lost} over the fp32 model: {_ADVICE[deploy_kind]}")
        return out
    out = []
    for kind in dict.fromkeys(["fp32", deploy_kind]):
        for name, o in models.get(kind, {}).get("outputs", {}).items():
            if o.get("top1_agreement") is not None and o["top1_agreement"] < 1 - max_drop:
                out.append(f"the {kind} model agrees with the input model on only "
                           f"{100 * o['top1_agreement']:.2f}% of top-1 predictions ({name})")
    return out


def manifest_accuracy(acc: Optional[dict]) -> Optional[dict]:
    if not acc:
        return None
    out = {"samples": acc["samples"], "reference_top1": acc["reference_top1"]}
    for kind, m in acc["models"].items():
        agree = [o.get("top1_agreement") for o in m["outputs"].values() if o.get("top1_agreement") is not None]
        out[kind] = {"top1": m["top1"], "top1_agreement": agree[0] if agree else None}
    return out


def local_engine(model, precision, profile, cache_text, feeds) -> dict:
    """Build and run a TensorRT engine for this machine's GPU on ``feeds`` to validate the graph (not the
    device's engine)."""
    import numpy as np


    trt_model, path = model, "plain"
    if custom_ops(model):  # no plugin library is built here: hand TensorRT the standard-op variant
        trt_model, path = inlined_variant(model), "inlined"
    runner = get_runner("trt", trt_model, precision=precision, cache_dir=False)
    with runner:
        out = runner.infer(feeds)
    ref = run_model(model, feeds)
    err = compare_outputs(ref, {k: np.asarray(v) for k, v in out.items()})
    worst = max((s.get("max_rel", 0.0) for s in err.values()), default=0.0)
    return {"status": "done", "max_rel_vs_ort": worst, "model_variant": path,
            "note": f"local TensorRT engine built ({path} model); max rel err vs onnxruntime {worst:.3g}"}


def inputs_json(model) -> dict:
    return {name: {"shape": list(spec["shape"]), "dtype": spec["dtype"].name}
            for name, spec in sorted(input_specs(model).items())}


def shapes_json(shapes) -> Optional[dict]:
    if not shapes:
        return None
    return {("" if k is None else k): list(v) for k, v in sorted(shapes.items(), key=lambda kv: str(kv[0]))}


def make_compatible(models: Dict[str, onnx.ModelProto], profile) -> Tuple[Dict[str, onnx.ModelProto], dict]:
    """Lower every bundle model to the target's ONNX limits (opset, IR), each proven equal on onnxruntime.

    Returns ``(models, stage info)``; the info has per-model reports and a one-line ``note``.

    Raises:
        UnsupportedError: a node has no exact spelling at the target's opset/IR (names node, op and target).
    """
    limits = {"max_opset": profile.onnx_max_opset, "max_ir": profile.onnx_max_ir}
    if limits["max_opset"] is None and limits["max_ir"] is None:
        return models, {"status": "skipped", "reason": f"{profile.name} has no ONNX opset/IR limit", **limits,
                        "note": "no ONNX limit"}
    out, reports = {}, {}
    for kind, m in models.items():
        out[kind], rep = make_target_compatible(m, profile)
        reports[kind] = {"opset": [onnx_version_of(m), onnx_version_of(out[kind])],
                         "ir_version": [m.ir_version, out[kind].ir_version], "changed": rep["changed"],
                         "rewrites": (rep.get("opset") or {}).get("rewrites", {}), "inlined": rep.get("inlined"),
                         "verification": rep.get("verification")}
    changed = [k for k, r in reports.items() if r["changed"]]
    first = next(iter(reports.values()))
    errs = ", ".join(f"{k} {(reports[k]['verification'] or {}).get('max_rel', 0.0):.2g}" for k in changed)
    if changed:
        note = (f"opset {first['opset'][0]} -> {first['opset'][1]}, IR {first['ir_version'][0]} -> "
                f"{first['ir_version'][1]} for {profile.name} (max rel err vs before: {errs})")
    else:
        note = f"already within {profile.name}'s limits (opset <= {limits['max_opset']}, IR <= {limits['max_ir']})"
    return out, {"status": "done" if changed else "skipped", **limits, "models": reports, "note": note,
                 **({} if changed else {"reason": "already within the target's ONNX limits"})}


def compat_function(profile) -> Optional[Callable[[onnx.ModelProto], onnx.ModelProto]]:
    """``model -> model`` lowered to the target's ONNX limits (None for a target without limits)."""
    if profile.onnx_max_opset is None and profile.onnx_max_ir is None:
        return None

    return lambda m: make_target_compatible(m, profile)[0]


def manifest_compat(info: dict) -> dict:
    """The manifest's ``onnx_compat`` section: the limits and each model's opset/IR before and after."""
    return {"max_opset": info.get("max_opset"), "max_ir": info.get("max_ir"),
            "models": {k: {"opset": r["opset"], "ir_version": r["ir_version"], "rewrites": r["rewrites"],
                           "inlined": r["inlined"]}
                       for k, r in sorted(info.get("models", {}).items())}}
