"""``build``: one call from a trained ONNX model to a verified, deployable bundle for a named target.

load → optimize → compress (as asked) → quantize (as the target allows) → validate → bundle.

>>> from edgesqueeze.pipeline import build
>>> summary = build("examples/digits/digits_cnn.onnx", "orin-nano", "bundle/", precision="int8",
...                 calib="examples/digits/calib.npz", val="examples/digits/val.npz")   # doctest: +SKIP

Every stage that cannot run (a missing optional piece, a target without TensorRT)
is skipped with a logged reason and recorded in the summary; user errors raise
the usual :mod:`edgesqueeze.errors` exceptions before anything is written.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import onnx

from . import __version__
from .errors import DeviceError, InputError, MissingDependencyError, UnsupportedError
from .fileio import PathLike, sha256_file
from .model import input_specs, load_model, model_bytes, parse_input_shapes

STAGES = ("load", "optimize", "compress", "quantize", "validate", "engine", "bundle")
SPARSITY_CHOICES = ("2:4",)
CALIB_METHODS = ("entropy", "minmax", "percentile", "mse")


# --------------------------------------------------------------------------------------------- helpers
class _Progress:
    """One tqdm bar per stage on a terminal; one log line per stage otherwise."""

    def __init__(self, enabled: bool, log: Callable[[str], None]):
        self.enabled = enabled and sys.stderr.isatty()
        self.log = log
        self.index = 0

    def stage(self, name: str, total: int = 1) -> "_Bar":
        self.index += 1
        return _Bar(self, f"[{self.index}/{len(STAGES)}] {name}", total)


class _Bar:
    def __init__(self, progress: _Progress, desc: str, total: int):
        self.progress, self.desc, self.total = progress, desc, max(1, total)
        self.bar = None
        self.t0 = time.perf_counter()
        self.note = ""

    def __enter__(self) -> "_Bar":
        if self.progress.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, file=sys.stderr, leave=True, dynamic_ncols=True,
                            bar_format="{desc:<22} {bar:30} {n_fmt}/{total_fmt} {elapsed} {postfix}")
        return self

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def done(self, note: str) -> None:
        self.note = note

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.bar is not None:
            if exc_type is None:
                self.bar.n = self.total
                self.bar.set_postfix_str(self.note, refresh=False)
            self.bar.close()
        elif exc_type is None:
            self.progress.log(f"{self.desc}: {self.note} ({self.seconds:.1f} s)")


class _CountingReader:
    """Wraps a DataReader so that iterating it advances a progress bar; everything else is delegated."""

    def __init__(self, reader, bar: _Bar):
        self._reader, self._bar = reader, bar

    def __iter__(self):
        for feed in self._reader:
            yield feed
            self._bar.update(1)

    def __len__(self) -> int:
        return len(self._reader)

    def __getattr__(self, name):
        return getattr(self._reader, name)


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _have_quant() -> bool:
    try:
        from .quant import calibrate, convert_fp16, quantize_qdq, write_calibration_cache  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_precision(profile, requested: str) -> str:
    """``auto`` → the target's best precision; an explicit one must be supported (UnsupportedError otherwise)."""
    requested = (requested or "auto").lower()
    try:
        from .quant import resolve_precision
    except ImportError:
        resolve_precision = None
    if resolve_precision is not None:
        return resolve_precision(profile, requested)
    if requested == "auto":
        return profile.best_precision()
    if requested not in ("fp32", "fp16", "int8"):
        raise InputError(f"unknown precision '{requested}'; choose auto, fp32, fp16 or int8")
    if not profile.supports(requested):
        raise UnsupportedError(f"--precision {requested} is not possible on {profile.name}: "
                               f"{profile.why_not(requested)}")
    return requested


def _predicted_ms(model: onnx.ModelProto, profile, precision: str, sparse: bool = False) -> Optional[float]:
    try:
        from .inspect import inspect_model
    except ImportError:
        return None
    totals = inspect_model(model, target=profile, precision=precision, sparse=sparse)["totals"]
    return totals.get("roofline_ms")


def _versions() -> Dict[str, str]:
    import numpy
    import onnxruntime

    return {"edgesqueeze": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__}


def _local_trt_reason() -> Optional[str]:
    """Why no local TensorRT engine can be built here (None when one can)."""
    if not _have("tensorrt"):
        return "TensorRT is not installed here (pip install 'edgesqueeze[trt]' on a machine with an NVIDIA GPU)"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU here (nvidia-smi not found)"
    return None


# --------------------------------------------------------------------------------------------- build
def build(model_path: PathLike, target: str, out_dir: PathLike, *, precision: str = "auto",
          calib: Optional[str] = None, sparsity: Optional[str] = None, val: Optional[str] = None,
          input_shapes=None, archive: bool = False, passes: Optional[Sequence[str]] = None,
          skip_passes: Sequence[str] = (), optimize: bool = True, calib_method: str = "entropy",
          calib_limit: Optional[int] = None, val_limit: Optional[int] = None, dla: bool = False,
          workspace_mib: int = 1024, local_engine: str = "auto", force: bool = False, progress: bool = True,
          log: Optional[Callable[[str], None]] = None) -> dict:
    """Build a deployable bundle of ``model_path`` for ``target``.

    Args:
        model_path: the trained ``.onnx`` model (never modified).
        target: device profile name (``edgesqueeze devices``).
        out_dir: the bundle folder to create (must be absent, empty, or an old bundle with ``force``).
        precision: ``auto`` (best the target runs: INT8 needs ``calib``), ``fp32``, ``fp16`` or ``int8``.
        calib: calibration data for INT8 (``.npz``/``.npy``/image folder, or ``"random"`` for a smoke test).
        sparsity: ``"2:4"`` to prune weights to 2:4 structured sparsity.
        val: validation data: adds accuracy vs FP32 (and top-1 with labels) to the summary.
        input_shapes: shapes for dynamic inputs (``{name: dims}`` or ``["name:1x3x224x224"]``).
        archive: also write ``<out_dir>.tar.gz`` (byte-identical across runs).
        passes, skip_passes, optimize: the optimizer's pass list (None = the target's default), passes to skip,
            or no optimization at all.
        calib_method: entropy, minmax, percentile or mse.
        calib_limit, val_limit: use at most this many samples.
        dla: build the engine for a DLA core (GPU fallback on); the target must have DLA.
        workspace_mib: the TensorRT builder workspace in the engine script.
        local_engine: ``auto`` (build a local TensorRT engine when TensorRT and a GPU are present), ``on``, ``off``.
        force: replace an existing bundle in ``out_dir``.
        progress: show progress bars (on a terminal).
        log: called with one line per stage and per warning (default: silent).

    Returns:
        The summary: bundle path, target, precision, per-stage status/time, model sizes, predicted latency,
        accuracy, engine script plan, warnings.

    Raises:
        InputError: bad model, data or option (exit 3). UnsupportedError: the target cannot run the requested
        precision, DLA or sparsity (exit 4). MissingDependencyError: ``local_engine="on"`` without TensorRT
        (exit 5). VerificationError: an optimized model disagrees with its input (exit 7).
    """
    from .devices import get_profile

    log = log or (lambda msg: None)
    warnings: List[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"warning: {msg}")

    profile = get_profile(target)
    requested = (precision or "auto").lower()
    if requested not in ("auto", "fp32", "fp16", "int8"):
        raise InputError(f"unknown precision '{precision}'; choose auto, fp32, fp16 or int8")
    resolved = _resolve_precision(profile, requested)
    if resolved == "int8" and calib is None:
        if requested == "int8":
            raise InputError("--precision int8 needs calibration data", hint="give --calib calib.npz "
                             "(or --calib random for a smoke test whose accuracy means nothing)")
        fallback = "fp16" if profile.supports("fp16") else "fp32"
        warn(f"INT8 needs calibration data (--calib); auto chose {fallback} instead")
        resolved = fallback
    if sparsity is not None and sparsity not in SPARSITY_CHOICES:
        raise InputError(f"unknown --sparsity '{sparsity}'; choose {', '.join(SPARSITY_CHOICES)}")
    if calib_method not in CALIB_METHODS:
        raise InputError(f"unknown calibration method '{calib_method}'; choose {', '.join(CALIB_METHODS)}")
    if dla and not profile.dla_cores:
        raise UnsupportedError(f"{profile.name} has no DLA; drop --dla", hint="xavier-nx, agx-xavier, orin-nx and "
                               "agx-orin have DLA cores")
    if local_engine not in ("auto", "on", "off"):
        raise InputError(f"local_engine must be auto, on or off, not '{local_engine}'")
    trt_reason = _local_trt_reason() if local_engine != "off" else "local engine off"
    if local_engine == "on" and trt_reason:
        if not _have("tensorrt"):
            raise MissingDependencyError("tensorrt", "trt", "building a local engine (--local-engine on)")
        raise DeviceError(f"--local-engine on: {trt_reason}")
    if isinstance(input_shapes, (list, tuple, str)):
        input_shapes = parse_input_shapes(input_shapes)

    model_path = Path(model_path)
    out_dir = Path(out_dir)
    from .fileio import refuse_overwrite

    refuse_overwrite(out_dir, model_path)
    prog = _Progress(progress, log)
    stages: Dict[str, dict] = {}
    summary: dict = {"bundle": str(out_dir), "target": profile.name, "requested_precision": requested,
                     "precision": resolved, "stages": stages, "warnings": warnings}

    # 1. load ------------------------------------------------------------------------------------------
    with prog.stage("load") as bar:
        model = load_model(model_path, input_shapes)
        source = {"name": model_path.name, "sha256": sha256_file(model_path), "size": model_path.stat().st_size}
        bar.done(f"{model_path.name}: {len(model.graph.node)} nodes")
    stages["load"] = {"status": "done", "seconds": bar.seconds, "nodes": len(model.graph.node)}
    original = model

    # 2. optimize --------------------------------------------------------------------------------------
    with prog.stage("optimize") as bar:
        stages["optimize"] = _optimize(model, profile, passes, skip_passes, optimize)
        model = stages["optimize"].pop("model")
        bar.done(stages["optimize"].get("note", ""))
    stages["optimize"]["seconds"] = bar.seconds

    # 3. compress --------------------------------------------------------------------------------------
    sparse_applied = False
    with prog.stage("compress") as bar:
        if sparsity == "2:4":
            from .compress import sparsify_2_4

            model, report = sparsify_2_4(model)
            changed = report.get("changed", report.get("layers", []))
            sparse_applied = bool(changed)
            stages["compress"] = {"status": "done", "method": "2:4", "changed": len(changed),
                                  "skipped": len(report.get("skipped", []))}
            if not profile.sparse_2_4:
                warn(f"{profile.name} has no 2:4 sparse tensor cores: the pruned weights bring no speed-up there")
            note = f"2:4 sparsity on {len(changed)} layer(s)"
        else:
            stages["compress"] = {"status": "skipped", "reason": "no compression asked (--sparsity 2:4)"}
            note = "nothing asked"
        bar.done(note)
    stages["compress"]["seconds"] = bar.seconds

    # 4. quantize --------------------------------------------------------------------------------------
    models: Dict[str, onnx.ModelProto] = {"fp32": model}
    cache_text: Optional[str] = None
    calib_info: Optional[dict] = None
    quant_missing = None if _have_quant() else "the quantization package (edgesqueeze.quant) is not available"
    if quant_missing and resolved != "fp32":
        warn(f"{quant_missing}: building FP32 instead of {resolved}")
        resolved = summary["precision"] = "fp32"
    if resolved == "int8":
        from .data import open_data
        from .quant import calibrate, quantize_qdq

        reader = open_data(calib, model, limit=calib_limit)
        if getattr(reader, "is_random", False):
            warn("calibrating INT8 on random data: the scales, and so the accuracy, mean nothing")
        with prog.stage("quantize", total=len(reader)) as bar:
            amax = calibrate(model, _CountingReader(reader, bar), method=calib_method)
            models["int8_qdq"] = quantize_qdq(model, amax)
            if profile.has_tensorrt:
                cache_text = _cache_text(amax, profile.tensorrt)
            calib_info = {"data": "random" if getattr(reader, "is_random", False) else Path(str(calib)).name,
                          "sha256": reader.sha256(), "batches": len(reader), "method": calib_method,
                          "tensors": len(amax)}
            bar.done(f"{calib_method} calibration on {len(reader)} batches, {len(amax)} tensors")
        stages["quantize"] = {"status": "done", "precision": "int8", "seconds": bar.seconds, **calib_info}
    elif resolved == "fp16":
        from .quant import convert_fp16

        with prog.stage("quantize") as bar:
            models["fp16"] = convert_fp16(model)
            bar.done("FP16 model (FP32 inputs/outputs)")
        stages["quantize"] = {"status": "done", "precision": "fp16", "seconds": bar.seconds}
    else:
        with prog.stage("quantize") as bar:
            bar.done("FP32: nothing to do")
        stages["quantize"] = {"status": "skipped", "reason": quant_missing or f"precision {resolved}",
                              "seconds": bar.seconds}
    deploy_kind = {"int8": "int8_qdq", "fp16": "fp16", "fp32": "fp32"}[resolved]

    # 5. validate --------------------------------------------------------------------------------------
    summary["latency_ms"] = {
        "input": _predicted_ms(original, profile, "fp32"),
        "fp32": _predicted_ms(model, profile, "fp32", sparse=False),
        resolved: _predicted_ms(model, profile, resolved, sparse=sparse_applied and profile.sparse_2_4),
    }
    accuracy = None
    if val is not None:
        from .compare import compare_runs
        from .data import open_data

        reader = open_data(val, model, limit=val_limit)
        with prog.stage("validate", total=len(reader) * max(1, len(models) - 1) + len(reader)) as bar:
            accuracy = _validate(original, models, reader, bar)
            bar.done(_accuracy_note(accuracy, deploy_kind))
        stages["validate"] = {"status": "done", "seconds": bar.seconds, "samples": accuracy["samples"]}
        if getattr(reader, "is_random", False):
            warn("validation data is random: the accuracy figures mean nothing")
    else:
        with prog.stage("validate") as bar:
            bar.done("no --val data")
        stages["validate"] = {"status": "skipped", "reason": "no validation data (--val)", "seconds": bar.seconds}
    summary["accuracy"] = accuracy

    # 6. local engine ----------------------------------------------------------------------------------
    with prog.stage("engine") as bar:
        if trt_reason is None and profile.has_tensorrt:
            stages["engine"] = _local_engine(models[deploy_kind], resolved, profile, cache_text)
        else:
            stages["engine"] = {"status": "skipped", "reason": trt_reason or f"{profile.name} has no TensorRT"}
        bar.done(stages["engine"].get("note", stages["engine"].get("reason", "")))
    stages["engine"]["seconds"] = bar.seconds

    # 7. bundle ----------------------------------------------------------------------------------------
    with prog.stage("bundle") as bar:
        from .bundle.assemble import assemble_bundle

        options = {"precision": requested, "calibration": calib_info, "sparsity": sparsity if sparse_applied else None,
                   "passes": stages["optimize"].get("passes"), "skip_passes": sorted(skip_passes), "dla": dla,
                   "workspace_mib": int(workspace_mib), "input_shapes": _shapes_json(input_shapes),
                   "validation": _manifest_accuracy(accuracy)}
        manifest, script = assemble_bundle(
            out_dir, profile=profile, precision=resolved, models=models, deploy=deploy_kind, source=source,
            options=options, versions=_versions(), inputs=_inputs_json(model), cache_text=cache_text,
            sparsity=sparse_applied and profile.sparse_2_4, dla=dla, workspace_mib=workspace_mib, force=force,
            warn=warn)
        archive_path = None
        if archive:
            from .bundle import write_archive

            archive_path = write_archive(out_dir, out_dir.parent / f"{out_dir.resolve().name}.tar.gz")
        bar.done(f"{len(manifest['files'])} files")
    stages["bundle"] = {"status": "done", "seconds": bar.seconds, "files": len(manifest["files"])}
    summary.update({
        "archive": str(archive_path) if archive_path else None,
        "deploy_model": manifest["models"]["deploy"],
        "engine_script": script,
        "sizes": {"input": source["size"],
                  **{k: manifest["files"][rel]["size"] for k, rel in manifest["models"].items() if k != "deploy"}},
        "models": dict(manifest["models"]),
        "files": len(manifest["files"]),
    })
    return summary


def _optimize(model, profile, passes, skip, enabled) -> dict:
    if not enabled:
        return {"status": "skipped", "reason": "--no-optimize", "model": model, "note": "off"}
    try:
        from .passes import optimize as run_passes
    except ImportError as exc:
        return {"status": "skipped", "reason": f"the optimizer is not available ({exc})", "model": model,
                "note": "optimizer missing"}
    out, report = run_passes(model, passes=list(passes) if passes else None, skip=tuple(skip),
                             target=profile.name, verify=True)
    fusions = {k: (v.get("count") if isinstance(v, dict) else v) for k, v in sorted(report.get("fusions", {}).items())}
    names = [p["name"] if isinstance(p, dict) else str(p) for p in report.get("passes", [])]
    return {"status": "done", "model": out, "passes": names, "fusions": fusions,
            "nodes_before": report.get("nodes_before"), "nodes_after": report.get("nodes_after"),
            "verification": report.get("verification"),
            "note": f"{report.get('nodes_before')} -> {report.get('nodes_after')} nodes"}


def _cache_text(amax: Dict[str, float], trt_version: str) -> str:
    """The calibration cache for ``trt_version`` as text (header EntropyCalibration2: what trtexec --calib reads)."""
    import tempfile

    from .quant import write_calibration_cache

    with tempfile.TemporaryDirectory(prefix="edgesqueeze-cache-") as tmp:
        path = Path(tmp) / "calibration.cache"
        write_calibration_cache(path, amax, trt_version=trt_version, algorithm="EntropyCalibration2")
        return path.read_text(encoding="utf-8")


def _validate(original, models, reader, bar) -> dict:
    """Accuracy of every model against the input model's outputs (and labels when the data has them)."""
    from .compare import compare_runs
    from .ortutil import make_session, run_model

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


def _accuracy_note(acc: dict, deploy_kind: str) -> str:
    d = acc["models"].get(deploy_kind, {})
    if d.get("top1") is not None and acc.get("reference_top1") is not None:
        return f"top-1 {100 * acc['reference_top1']:.2f}% -> {100 * d['top1']:.2f}% ({deploy_kind})"
    errs = [o.get("max_rel") for o in d.get("outputs", {}).values() if o.get("max_rel") is not None]
    return f"max relative error {max(errs):.3g} ({deploy_kind})" if errs else "done"


def _manifest_accuracy(acc: Optional[dict]) -> Optional[dict]:
    if not acc:
        return None
    out = {"samples": acc["samples"], "reference_top1": acc["reference_top1"]}
    for kind, m in acc["models"].items():
        agree = [o.get("top1_agreement") for o in m["outputs"].values() if o.get("top1_agreement") is not None]
        out[kind] = {"top1": m["top1"], "top1_agreement": agree[0] if agree else None}
    return out


def _local_engine(model, precision, profile, cache_text) -> dict:
    """Build and run a TensorRT engine for this machine's GPU to validate the graph (not the device's engine)."""
    import numpy as np

    from .backends import get_runner
    from .model import random_feeds
    from .ortutil import compare_outputs, run_model

    feeds = random_feeds(model, seed=0)[0]
    runner = get_runner("trt", model, precision=precision, cache_dir=False)
    with runner:
        out = runner.infer(feeds)
    ref = run_model(model, feeds)
    err = compare_outputs(ref, {k: np.asarray(v) for k, v in out.items()})
    worst = max((s.get("max_rel", 0.0) for s in err.values()), default=0.0)
    return {"status": "done", "max_rel_vs_ort": worst, "note": f"local TensorRT engine built; max rel err {worst:.3g}"}


def _inputs_json(model) -> dict:
    return {name: {"shape": list(spec["shape"]), "dtype": spec["dtype"].name}
            for name, spec in sorted(input_specs(model).items())}


def _shapes_json(shapes) -> Optional[dict]:
    if not shapes:
        return None
    return {("" if k is None else k): list(v) for k, v in sorted(shapes.items(), key=lambda kv: str(kv[0]))}
