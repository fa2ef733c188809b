"""The build pipeline as named stages: each ``stage(state, options) -> StageRecord``, run in :data:`STAGES` order.

A stage reads the frozen :class:`~edgesqueeze.pipeline.options.BuildOptions`, reads and extends the
:class:`~edgesqueeze.pipeline.state.BuildState` (the models so far), and returns a record the summary is rendered
from. A stage that cannot or need not run returns a ``skipped`` record with its reason.
"""
from __future__ import annotations

from .._lazy import versions
from ..bundle import sign_bundle, write_archive
from ..bundle.assemble import assemble_bundle
from ..bundle.manifest import model_size
from ..compress import sparsify_2_4
from ..data import open_data
from ..errors import VerificationError
from ..fileio import sha256_file
from ..model import load_model
from ..precision import Precision
from ..quant import convert_fp16
from ..quant.qdq import custom_not_quantized
from ..quant.run import calibrate_amax, quantize_int8
from .options import BuildOptions
from .profiles import resolve_profile
from .progress import CountingReader
from .state import DONE, SKIPPED, BuildState, StageRecord
from .support import (DWSEP_PASS, accuracy_note, accuracy_warnings, cache_text, check_feeds, check_runs,
                      compat_function, device_runtime, engine_skip_reason, finish_models, first_real_feed,
                      inputs_json, local_engine, make_compatible, manifest_accuracy, manifest_compat,
                      plugin_expectation, predicted_ms, run_optimizer, shapes_json, strongly_typed_int8)
from .support import validate as compare_models


def load(state: BuildState, options: BuildOptions) -> StageRecord:
    """Load and check the input model, run it once, and open the data files so a bad one fails now."""
    path = options.model_path
    model = load_model(path, options.input_shapes, pin=options.static)
    calib = options.calib if options.precision is Precision.INT8 else None
    for spec, limit in ((calib, options.calib_limit), (options.val, options.val_limit)):
        if spec is not None and str(spec) != "random":
            open_data(spec, model, limit=limit)  # a bad data file fails now, not after the optimizer ran
    state.check_feeds = check_feeds(model, options.input_shapes, [(calib, model), (options.val, model)])
    check_runs(model, str(path), state.check_feeds)
    state.source = {"name": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}
    state.original = state.model = model
    state.profile = resolve_profile(model, options)
    nodes = len(model.graph.node)
    # the fallback note is said once the input is known good: a bad input is a one-line error
    return StageRecord("load", DONE, f"{path.name}: {nodes} nodes", payload={"nodes": nodes},
                       summary={"profile": state.profile},
                       warnings=(options.fallback_note,) if options.fallback_note else ())


def optimize(state: BuildState, options: BuildOptions) -> StageRecord:
    """Run the optimizer's passes (the target's list by default), verified on onnxruntime."""
    info = run_optimizer(state.model, options.profile, options.passes, options.early_skip, options.optimize,
                         state.check_feeds)
    state.model = info.pop("model")
    return StageRecord.from_info("optimize", info, info.get("note", ""))


def compress(state: BuildState, options: BuildOptions) -> StageRecord:
    """2:4 structured sparsity when asked; then the depthwise-separable fusion the optimize stage deferred."""
    profile, payload = options.profile, {}
    status, reason, note = SKIPPED, "no compression asked (--sparsity 2:4)", "nothing asked"
    if options.sparsity == "2:4":
        state.model, report = sparsify_2_4(state.model)
        changed = report.get("changed", report.get("layers", []))
        state.sparse_applied = bool(changed)
        payload = {"method": "2:4", "changed": len(changed), "skipped": len(report.get("skipped", []))}
        if not profile.sparse_2_4:
            state.warn(f"{profile.name} has no 2:4 sparse tensor cores: the pruned weights bring no speed-up there")
        status, reason, note = DONE, None, f"2:4 sparsity on {len(changed)} layer(s)"
    if options.late_fusion:
        fused = run_optimizer(state.model, profile, [DWSEP_PASS, "cleanup"], (), True, state.check_feeds)
        state.model = fused.pop("model")
        payload["late_fusion"] = fused.get("fusions", {})
        note += f"; then depthwise-separable fusion ({fused.get('note', '')})"
    return StageRecord("compress", status, note, reason, payload=payload)


def quantize(state: BuildState, options: BuildOptions) -> StageRecord:
    """INT8 (calibration, QDQ model, TensorRT cache) or FP16, as resolved; then prove every model runs."""
    model = state.model
    state.models = {"fp32": model}
    if options.precision is Precision.INT8:
        record = _quantize_int8(state, options)
    elif options.precision is Precision.FP16:
        state.models["fp16"] = convert_fp16(model)
        record = StageRecord("quantize", DONE, "FP16 model (FP32 inputs/outputs)", payload={"precision": "fp16"})
    else:
        record = StageRecord("quantize", SKIPPED, "FP32: nothing to do", f"precision {options.precision}")
    state.models = finish_models(state.models, first_real_feed([(options.calib, model), (options.val, model)]),
                                 random=state.check_feeds)
    return record


def _quantize_int8(state: BuildState, options: BuildOptions) -> StageRecord:
    """Calibrate and quantize with the same :class:`~edgesqueeze.quant.run.QuantOptions` as ``quantize``."""
    model, profile, quant = state.model, options.profile, options.quant
    reader = open_data(options.calib, model, limit=options.calib_limit, shapes=options.input_shapes)
    if reader.is_random:
        state.warn("calibrating INT8 on random data: the scales, and so the accuracy, mean nothing")
    state.bar.set_total(len(reader))
    amax, caught = calibrate_amax(model, CountingReader(reader, state.bar), quant)
    for w in caught:  # routed to the build's warnings, not Python's stderr
        if issubclass(w.category, UserWarning) and "random data" not in str(w.message):  # said above
            state.warn(str(w.message))
    result = quantize_int8(model, amax, quant, _ranking_data(state, options) if quant.ranks_layers else None,
                           info=state.log)
    state.models["int8_qdq"] = result.model
    if strongly_typed_int8(profile):  # TensorRT >= 10.13: the QDQ model's own types decide, FP16 base
        state.models["int8_qdq_fp16"] = convert_fp16(result.model, qdq_fp16=True)
    custom = custom_not_quantized(model, amax)
    if custom:
        state.warn(f"INT8: {len(custom)} fused custom node(s) ({', '.join(sorted(set(custom.values())))}) stay "
                   "FP16/FP32: the QDQ model puts no Q/DQ around custom nodes"
                   + ("; build with --skip fuse_depthwise_separable to keep those layers INT8"
                      if "DepthwiseSeparableConv" in custom.values() else ""))
    if profile.has_tensorrt:
        state.cache_text = cache_text(result.cache_amax, profile.tensorrt)
    method = quant.method.value
    state.calib_info = {"data": "random" if reader.is_random else options.calib_name, "sha256": reader.sha256(),
                        "batches": len(reader), "method": method, "tensors": len(amax),
                        **({"percentile": quant.percentile} if method == "percentile" else {}),
                        **({"keep": result.keep} if result.keep else {})}
    extra = {"sensitivity": result.ranking} if result.ranking is not None else {}
    if result.auto_keep is not None:
        extra["auto_keep"] = result.auto_keep
    return StageRecord("quantize", DONE, f"{method} calibration on {len(reader)} batches, {len(amax)} tensors",
                       payload={"precision": "int8", **state.calib_info, "custom_not_quantized": len(custom),
                                **extra})


def _ranking_data(state: BuildState, options: BuildOptions):
    """The data ``--sensitivity``/``--auto-keep`` rank layers on: the validation data, else the calibration data."""
    if options.val is not None:
        return open_data(options.val, state.model, limit=options.val_limit, shapes=options.input_shapes)
    state.warn("no --val given: ranking layers on the calibration data")
    return open_data(options.calib, state.model, limit=options.calib_limit,
                     shapes=options.input_shapes)


def compat(state: BuildState, options: BuildOptions) -> StageRecord:
    """Lower every model to what the target's TensorRT parser and onnxruntime load (opset, IR)."""
    state.variant_sources = dict(state.models)  # the TensorRT variants are derived from these, then lowered
    state.models, info = make_compatible(state.models, options.profile)
    return StageRecord.from_info("compat", info, info["note"])


def validate(state: BuildState, options: BuildOptions) -> StageRecord:
    """Predict the latency of each model on the target; with ``--val``, measure its accuracy against the input."""
    profile, precision = options.profile, options.precision.value
    latency = {"input": predicted_ms(state.original, profile, "fp32"),
               "fp32": predicted_ms(state.model, profile, "fp32", sparse=False),
               precision: predicted_ms(state.model, profile, precision,
                                       sparse=state.sparse_applied and profile.sparse_2_4)}
    expect = plugin_expectation(state.models[options.deploy_kind], profile, precision)
    if options.val is None:
        return StageRecord("validate", SKIPPED, "no --val data", "no validation data (--val)",
                           summary={"latency_ms": latency, "accuracy": None, "plugin_expectation": expect})
    reader = open_data(options.val, state.model, limit=options.val_limit, shapes=options.input_shapes)
    state.bar.set_total(len(reader) * max(1, len(state.models) - 1) + len(reader))
    state.accuracy = compare_models(state.original, state.models, reader, state.bar)
    if reader.is_random:
        warnings = ["validation data is random: the accuracy figures mean nothing"]
    else:
        cause = f"{options.sparsity} sparsity (compress)" if state.sparse_applied else "the optimizer"
        warnings = accuracy_warnings(state.accuracy, options.deploy_kind, max_drop=options.max_accuracy_drop,
                                     fp32_cause=cause)
        if warnings and options.strict:
            raise VerificationError(f"{warnings[0]} (--strict: no bundle written)", path=str(options.model_path),
                                    hint=f"the limit is --max-drop {100 * options.max_accuracy_drop:g} points")
    return StageRecord("validate", DONE, accuracy_note(state.accuracy, options.deploy_kind),
                       payload={"samples": state.accuracy["samples"]},
                       summary={"latency_ms": latency, "accuracy": state.accuracy, "plugin_expectation": expect},
                       warnings=warnings)


def engine(state: BuildState, options: BuildOptions) -> StageRecord:
    """Build a TensorRT engine for this machine's GPU to validate the graph (when TensorRT and a GPU are here)."""
    profile = options.profile
    if options.trt_reason is None and profile.has_tensorrt:
        info = local_engine(state.models[options.deploy_kind], options.precision.value, profile, state.cache_text,
                            state.check_feeds)
    else:
        info = {"status": SKIPPED, "reason": engine_skip_reason(profile, options.trt_reason)}
    return StageRecord.from_info("engine", info, info.get("note", info.get("reason", "")))


def bundle(state: BuildState, options: BuildOptions) -> StageRecord:
    """Write the bundle (models, cache, engine script, manifest) and, when asked, its archive."""
    profile = options.profile
    manifest_options = {
        "precision": options.requested, "calibration": state.calib_info,
        "sparsity": options.sparsity if state.sparse_applied else None,
        "passes": state.records["optimize"].payload.get("passes"), "skip_passes": sorted(options.skip_passes),
        "dla": options.dla, "workspace_mib": int(options.workspace_mib),
        "input_shapes": shapes_json(options.input_shapes), "validation": manifest_accuracy(state.accuracy)}
    if device_runtime(profile):
        manifest_options["device_runtime"] = device_runtime(profile)
    manifest, script = assemble_bundle(
        options.out_dir, profile=profile, precision=options.precision.value, models=state.models,
        deploy=options.deploy_kind, source=state.source, options=manifest_options, versions=versions(),
        inputs=inputs_json(state.model), cache_text=state.cache_text,
        sparsity=state.sparse_applied and profile.sparse_2_4, dla=options.dla, workspace_mib=options.workspace_mib,
        force=options.force, warn=state.warn, variant_sources=state.variant_sources,
        compat=compat_function(profile), compat_report=manifest_compat(state.records["compat"].to_dict()),
        shape_profile=state.profile)
    signature = sign_bundle(options.out_dir, options.sign_key) if options.sign_key else None
    archive = write_archive(options.out_dir, options.archive_path) if options.archive else None
    files = manifest["files"]
    sizes = {"input": state.source["size"],
             **{k: model_size(files, rel) for k, rel in manifest["models"].items() if k != "deploy"}}
    return StageRecord("bundle", DONE, f"{len(files)} files", payload={"files": len(files)},
                       summary={"archive": str(archive) if archive else None,
                                "signature": str(signature) if signature else None,
                                "deploy_model": manifest["models"]["deploy"], "engine_script": script,
                                "sizes": sizes, "models": dict(manifest["models"]), "files": len(files),
                                "device_runtime": device_runtime(profile)})


STAGES = [load, optimize, compress, quantize, compat, validate, engine, bundle]
