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

import warnings as pywarnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import onnx

from ..errors import DeviceError, InputError, MissingDependencyError, UnsupportedError
from ..fileio import PathLike, sha256_file
from ..model import load_model, parse_input_shapes
from .progress import CountingReader, Progress
from . import stages
from .stages import (DWSEP_PASS, accuracy_note, accuracy_warnings, fusion_deferred, have, have_quant, inputs_json,
                     local_trt_reason, manifest_accuracy, predicted_ms, resolve_target_precision, run_optimizer,
                     shapes_json, strongly_typed_int8, validate, versions)

SPARSITY_CHOICES = ("2:4",)
CALIB_METHODS = ("entropy", "minmax", "percentile", "mse")


def build(model_path: PathLike, target: str, out_dir: PathLike, *, precision: str = "auto",
          calib: Optional[str] = None, sparsity: Optional[str] = None, val: Optional[str] = None,
          input_shapes=None, archive: bool = False, passes: Optional[Sequence[str]] = None,
          skip_passes: Sequence[str] = (), optimize: bool = True, calib_method: str = "entropy",
          calib_limit: Optional[int] = None, val_limit: Optional[int] = None, dla: bool = False,
          workspace_mib: int = 1024, local_engine: str = "auto", force: bool = False, progress: bool = True,
          max_accuracy_drop: float = 0.02, log: Optional[Callable[[str], None]] = None) -> dict:
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
        max_accuracy_drop: warn when the deploy model's top-1 falls more than this (a fraction) below the input
            model's, or (without labels) when its top-1 agreement with it falls below ``1 - max_accuracy_drop``.
        log: called with one line per stage and per warning (default: silent).

    Returns:
        The summary: bundle path, target, precision, per-stage status/time, model sizes, predicted latency,
        accuracy, engine script plan, warnings.

    Raises:
        InputError: bad model, data or option (exit 3). UnsupportedError: the target cannot run the requested
        precision, DLA or sparsity, or a node has no exact spelling at the target's ONNX opset/IR (exit 4). MissingDependencyError: ``local_engine="on"`` without TensorRT
        (exit 5). VerificationError: an optimized model disagrees with its input (exit 7).
    """
    from ..devices import get_profile

    log = log or (lambda msg: None)
    warnings: List[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"warning: {msg}")

    profile = get_profile(target)
    requested = (precision or "auto").lower()
    if requested not in ("auto", "fp32", "fp16", "int8"):
        raise InputError(f"unknown precision '{precision}'; choose auto, fp32, fp16 or int8")
    resolved = resolve_target_precision(profile, requested)
    if resolved == "int8" and calib is None:
        if requested == "int8":
            raise InputError("--precision int8 needs calibration data", hint="give --calib calib.npz "
                             "(or --calib random for a smoke test whose accuracy means nothing)")
        fallback = "fp16" if profile.supports("fp16") else "fp32"
        fallback_note = f"INT8 needs calibration data (--calib); auto chose {fallback} instead"
        resolved = fallback
    else:
        fallback_note = None
    if sparsity is not None and sparsity not in SPARSITY_CHOICES:
        raise InputError(f"unknown --sparsity '{sparsity}'; choose {', '.join(SPARSITY_CHOICES)}")
    if calib_method not in CALIB_METHODS:
        raise InputError(f"unknown calibration method '{calib_method}'; choose {', '.join(CALIB_METHODS)}")
    if dla and not profile.dla_cores:
        raise UnsupportedError(f"{profile.name} has no DLA; drop --dla", hint="xavier-nx, agx-xavier, orin-nx and "
                               "agx-orin have DLA cores")
    if local_engine not in ("auto", "on", "off"):
        raise InputError(f"local_engine must be auto, on or off, not '{local_engine}'")
    trt_reason = local_trt_reason() if local_engine != "off" else "local engine off"
    if local_engine == "on" and trt_reason:
        if not have("tensorrt"):
            raise MissingDependencyError("tensorrt", "trt", "building a local engine (--local-engine on)")
        raise DeviceError(f"--local-engine on: {trt_reason}")
    if isinstance(input_shapes, (list, tuple, str)):
        input_shapes = parse_input_shapes(input_shapes)

    model_path = Path(model_path)
    out_dir = Path(out_dir)
    from ..fileio import refuse_overwrite

    refuse_overwrite(out_dir, model_path)
    from ..bundle.writer import check_out_dir

    check_out_dir(out_dir, force=force)  # before any work; checked again when the bundle is written
    archive_target = out_dir.parent / f"{out_dir.resolve().name}.tar.gz"
    if archive and archive_target.exists() and not force:
        raise InputError("the archive already exists", path=str(archive_target), hint="pass --force to replace it")
    prog = Progress(progress, log)
    stage_info: Dict[str, dict] = {}
    summary: dict = {"bundle": str(out_dir), "target": profile.name, "requested_precision": requested,
                     "precision": resolved, "stages": stage_info, "warnings": warnings}

    # 1. load ------------------------------------------------------------------------------------------
    with prog.stage("load") as bar:
        model = load_model(model_path, input_shapes)
        stages.check_runs(model, str(model_path))
        from ..data import open_data

        for spec, limit in ((calib if resolved == "int8" else None, calib_limit), (val, val_limit)):
            if spec is not None and str(spec) != "random":
                open_data(spec, model, limit=limit)  # a bad data file fails now, not after the optimizer ran
        source = {"name": model_path.name, "sha256": sha256_file(model_path), "size": model_path.stat().st_size}
        bar.done(f"{model_path.name}: {len(model.graph.node)} nodes")
    stage_info["load"] = {"status": "done", "seconds": bar.seconds, "nodes": len(model.graph.node)}
    original = model
    if fallback_note:  # said once the input is known good: a bad input is a one-line error
        warn(fallback_note)

    # 2. optimize --------------------------------------------------------------------------------------
    # Compression must see the pointwise convolutions before they disappear into DepthwiseSeparableConv
    # nodes: with --sparsity the depthwise-separable fusion waits until after the compress stage.
    late_fusion = bool(sparsity) and optimize and fusion_deferred(profile, passes, skip_passes)
    with prog.stage("optimize") as bar:
        early_skip = tuple(skip_passes) + ((DWSEP_PASS,) if late_fusion else ())
        stage_info["optimize"] = run_optimizer(model, profile, passes, early_skip, optimize)
        model = stage_info["optimize"].pop("model")
        bar.done(stage_info["optimize"].get("note", ""))
    stage_info["optimize"]["seconds"] = bar.seconds

    # 3. compress --------------------------------------------------------------------------------------
    sparse_applied = False
    with prog.stage("compress") as bar:
        if sparsity == "2:4":
            from ..compress import sparsify_2_4

            model, report = sparsify_2_4(model)
            changed = report.get("changed", report.get("layers", []))
            sparse_applied = bool(changed)
            stage_info["compress"] = {"status": "done", "method": "2:4", "changed": len(changed),
                                  "skipped": len(report.get("skipped", []))}
            if not profile.sparse_2_4:
                warn(f"{profile.name} has no 2:4 sparse tensor cores: the pruned weights bring no speed-up there")
            note = f"2:4 sparsity on {len(changed)} layer(s)"
        else:
            stage_info["compress"] = {"status": "skipped", "reason": "no compression asked (--sparsity 2:4)"}
            note = "nothing asked"
        if late_fusion:
            fused = run_optimizer(model, profile, [DWSEP_PASS, "cleanup"], (), True)
            model = fused.pop("model")
            stage_info["compress"]["late_fusion"] = fused.get("fusions", {})
            note += f"; then depthwise-separable fusion ({fused.get('note', '')})"
        bar.done(note)
    stage_info["compress"]["seconds"] = bar.seconds

    # 4. quantize --------------------------------------------------------------------------------------
    models: Dict[str, onnx.ModelProto] = {"fp32": model}
    cache_text: Optional[str] = None
    calib_info: Optional[dict] = None
    quant_missing = None if have_quant() else "the quantization package (edgesqueeze.quant) is not available"
    if quant_missing and resolved != "fp32":
        warn(f"{quant_missing}: building FP32 instead of {resolved}")
        resolved = summary["precision"] = "fp32"
    if resolved == "int8":
        from ..data import open_data
        from ..quant import calibrate, quantize_qdq
        from ..quant.qdq import custom_not_quantized

        reader = open_data(calib, model, limit=calib_limit)
        if getattr(reader, "is_random", False):
            warn("calibrating INT8 on random data: the scales, and so the accuracy, mean nothing")
        with prog.stage("quantize", total=len(reader)) as bar:
            with pywarnings.catch_warnings(record=True) as caught:  # routed to warn(), not Python's stderr
                pywarnings.simplefilter("always")
                amax = calibrate(model, CountingReader(reader, bar), method=calib_method)
            for w in caught:
                if issubclass(w.category, UserWarning) and "random data" not in str(w.message):  # said above
                    warn(str(w.message))
            models["int8_qdq"] = quantize_qdq(model, amax)
            if strongly_typed_int8(profile):  # TensorRT >= 10.13: the QDQ model's own types decide, FP16 base
                from ..quant import convert_fp16

                models["int8_qdq_fp16"] = convert_fp16(models["int8_qdq"], qdq_fp16=True)
            custom = custom_not_quantized(model, amax)
            if custom:
                warn(f"INT8: {len(custom)} fused custom node(s) ({', '.join(sorted(set(custom.values())))}) stay "
                     "FP16/FP32: their TensorRT plugins have no INT8 kernels"
                     + ("; build with --skip fuse_depthwise_separable to keep those layers INT8"
                        if "DepthwiseSeparableConv" in custom.values() else ""))
            if profile.has_tensorrt:
                cache_text = stages.cache_text(amax, profile.tensorrt)
            calib_info = {"data": "random" if getattr(reader, "is_random", False) else Path(str(calib)).name,
                          "sha256": reader.sha256(), "batches": len(reader), "method": calib_method,
                          "tensors": len(amax)}
            bar.done(f"{calib_method} calibration on {len(reader)} batches, {len(amax)} tensors")
        stage_info["quantize"] = {"status": "done", "precision": "int8", "seconds": bar.seconds, **calib_info,
                                  "custom_not_quantized": len(custom)}
    elif resolved == "fp16":
        from ..quant import convert_fp16

        with prog.stage("quantize") as bar:
            models["fp16"] = convert_fp16(model)
            bar.done("FP16 model (FP32 inputs/outputs)")
        stage_info["quantize"] = {"status": "done", "precision": "fp16", "seconds": bar.seconds}
    else:
        with prog.stage("quantize") as bar:
            bar.done("FP32: nothing to do")
        stage_info["quantize"] = {"status": "skipped", "reason": quant_missing or f"precision {resolved}",
                              "seconds": bar.seconds}
    models = stages.finish_models(models, stages.first_real_feed([(calib, model), (val, model)]))
    deploy_kind = {"int8": "int8_qdq", "fp16": "fp16", "fp32": "fp32"}[resolved]

    # 4b. compat: what the target's TensorRT parser and onnxruntime load (opset, IR) --------------------
    variant_sources = dict(models)  # the TensorRT variants are derived from these, then lowered themselves
    with prog.stage("compat") as bar:
        models, stage_info["compat"] = stages.make_compatible(models, profile)
        bar.done(stage_info["compat"]["note"])
    stage_info["compat"]["seconds"] = bar.seconds
    summary["compat"] = stage_info["compat"]

    # 5. validate --------------------------------------------------------------------------------------
    summary["latency_ms"] = {
        "input": predicted_ms(original, profile, "fp32"),
        "fp32": predicted_ms(model, profile, "fp32", sparse=False),
        resolved: predicted_ms(model, profile, resolved, sparse=sparse_applied and profile.sparse_2_4),
    }
    accuracy = None
    if val is not None:
        from ..data import open_data

        reader = open_data(val, model, limit=val_limit)
        with prog.stage("validate", total=len(reader) * max(1, len(models) - 1) + len(reader)) as bar:
            accuracy = validate(original, models, reader, bar)
            bar.done(accuracy_note(accuracy, deploy_kind))
        stage_info["validate"] = {"status": "done", "seconds": bar.seconds, "samples": accuracy["samples"]}
        if getattr(reader, "is_random", False):
            warn("validation data is random: the accuracy figures mean nothing")
        else:
            for msg in accuracy_warnings(accuracy, deploy_kind, max_drop=max_accuracy_drop):
                warn(msg)
    else:
        with prog.stage("validate") as bar:
            bar.done("no --val data")
        stage_info["validate"] = {"status": "skipped", "reason": "no validation data (--val)", "seconds": bar.seconds}
    summary["accuracy"] = accuracy

    # 6. local engine ----------------------------------------------------------------------------------
    with prog.stage("engine") as bar:
        if trt_reason is None and profile.has_tensorrt:
            stage_info["engine"] = stages.local_engine(models[deploy_kind], resolved, profile, cache_text)
        else:
            stage_info["engine"] = {"status": "skipped", "reason": trt_reason or f"{profile.name} has no TensorRT"}
        bar.done(stage_info["engine"].get("note", stage_info["engine"].get("reason", "")))
    stage_info["engine"]["seconds"] = bar.seconds

    # 7. bundle ----------------------------------------------------------------------------------------
    with prog.stage("bundle") as bar:
        from ..bundle.assemble import assemble_bundle

        options = {"precision": requested, "calibration": calib_info, "sparsity": sparsity if sparse_applied else None,
                   "passes": stage_info["optimize"].get("passes"), "skip_passes": sorted(skip_passes), "dla": dla,
                   "workspace_mib": int(workspace_mib), "input_shapes": shapes_json(input_shapes),
                   "validation": manifest_accuracy(accuracy)}
        manifest, script = assemble_bundle(
            out_dir, profile=profile, precision=resolved, models=models, deploy=deploy_kind, source=source,
            options=options, versions=versions(), inputs=inputs_json(model), cache_text=cache_text,
            sparsity=sparse_applied and profile.sparse_2_4, dla=dla, workspace_mib=workspace_mib, force=force,
            warn=warn, variant_sources=variant_sources, compat=stages.compat_function(profile),
            compat_report=stages.manifest_compat(stage_info["compat"]))
        archive_path = None
        if archive:
            from ..bundle import write_archive

            archive_path = write_archive(out_dir, archive_target)
        bar.done(f"{len(manifest['files'])} files")
    stage_info["bundle"] = {"status": "done", "seconds": bar.seconds, "files": len(manifest["files"])}
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
