"""``edgesqueeze build``: model → optimized, compressed, quantized, verified bundle for a target."""
from __future__ import annotations

import click

from ..backends.trt_profile import parse_shapes_spec, profile_lines
from ..errors import InputError
from ..precision import PRECISION_CHOICES
from ..quant.methods import DEFAULT_METHOD, METHODS
from .common import (emit, info, input_shape_option, json_option, preprocess_option, quiet, static_option, table,
                     target_option, warn, with_preprocess)
from .quantize import split_names


def _shapes_param(ctx, param, value):
    """A malformed shape list is a usage error (exit 2); whether it fits the model is checked later (exit 3)."""
    if value:
        try:
            parse_shapes_spec(value, "--" + param.name.replace("_", "-"))
        except InputError as exc:
            raise click.BadParameter(exc.message) from exc
    return value


@click.command("build")
@click.argument("model", type=click.Path())
@target_option
@click.option("-p", "--precision", type=click.Choice(PRECISION_CHOICES), default="auto",
              show_default=True, help="auto = the best the target runs (INT8 needs --calib).")
@click.option("--calib", metavar="DATA", help="Calibration data for INT8: .npz/.npy, an image folder, or 'random'.")
@click.option("--calib-method", "-m", "--method", "calib_method", type=click.Choice(METHODS), default=DEFAULT_METHOD,
              show_default=True, help="Calibrator (entropy = TensorRT EntropyCalibration2); --method as in quantize.")
@click.option("--percentile", default=99.99, show_default=True, type=float, help="Percentile of the percentile method.")
@click.option("--keep", multiple=True, metavar="NODE[,NODE]",
              help="Layers (node names) kept in higher precision (FP16/FP32). Repeat or comma-separate.")
@click.option("--sensitivity", is_flag=True, help="Rank layers by the output error when only that layer is INT8.")
@click.option("--auto-keep", "auto_keep_drop", type=float, metavar="POINTS",
              help="Keep the most sensitive layers out of INT8 until the accuracy drop is at most POINTS.")
@click.option("--calib-limit", type=click.IntRange(min=1), help="Use at most N calibration batches.")
@click.option("--sparsity", type=click.Choice(["2:4"]), help="Prune weights to 2:4 structured sparsity.")
@click.option("--val", metavar="DATA", help="Validation data: report accuracy against the FP32 model.")
@click.option("--val-limit", type=click.IntRange(min=1), help="Use at most N validation batches.")
@click.option("--max-drop", "max_drop", type=click.FloatRange(0, 100), default=1.0, show_default=True,
              metavar="POINTS", help="With --val: warn (naming the stage) when a stage loses more top-1 points.")
@click.option("--max-accuracy-drop", "max_accuracy_drop", type=click.FloatRange(0, 1), hidden=True,
              help="The same limit as a fraction (older spelling).")
@click.option("--strict", is_flag=True, help="With --val: a loss over --max-drop is an error (exit 7), no bundle.")
@input_shape_option
@static_option
@click.option("--min-shapes", callback=_shapes_param, metavar="NAME:DIMS[,..]",
              help="TensorRT optimization profile: smallest shape of each dynamic input (trtexec's --minShapes).")
@click.option("--opt-shapes", callback=_shapes_param, metavar="NAME:DIMS[,..]",
              help="Shape the engine is tuned for (alone: min = opt = max). Default: batch from the data, or 1.")
@click.option("--max-shapes", callback=_shapes_param, metavar="NAME:DIMS[,..]",
              help="Largest shape of each dynamic input. Default: batch 8, other dims from the data.")
@click.option("--passes", multiple=True, metavar="P1,P2", help="Optimizer passes to run (default: the target's).")
@click.option("--skip", "skip_passes", multiple=True, metavar="P1,P2", help="Optimizer passes to skip.")
@click.option("--no-optimize", is_flag=True, help="Do not run the optimizer.")
@click.option("--dla", is_flag=True, help="Build the engine for DLA core 0 (GPU fallback); the target needs DLA.")
@click.option("--workspace", "workspace_mib", type=click.IntRange(min=16), default=1024, show_default=True,
              help="TensorRT builder workspace in MiB (build_engine.sh).")
@click.option("--local-engine", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Also build a TensorRT engine for this machine's GPU to validate the graph.")
@click.option("--archive", is_flag=True, help="Also write OUTPUT.tar.gz (byte-identical across runs).")
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False), metavar="KEY",
              help="Sign the bundle's manifest with this SSH key (see 'edgesqueeze sign').")
@click.option("--force", is_flag=True, help="Replace an existing bundle in OUTPUT.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Bundle folder to create.")
@preprocess_option
@json_option
def command(model, target, precision, calib, calib_method, percentile, keep, sensitivity, auto_keep_drop, calib_limit,
            sparsity, val, val_limit, max_drop, max_accuracy_drop, strict, input_shapes, static, min_shapes,
            opt_shapes, max_shapes, passes, skip_passes, no_optimize, dla, workspace_mib, local_engine, archive,
            sign_key, force, output, preprocess, as_json):
    """Build a deployable bundle of MODEL for a target: load, optimize, compress, quantize, validate, package.

    The bundle holds the optimized FP32 model, the FP16 or QDQ INT8 model, the TensorRT calibration cache,
    build_engine.sh (trtexec flags for the target's TensorRT version), the plugin sources when the model
    has custom nodes, run_on_device.py and a manifest with the sha256 of every file.

    The bundle's models keep the input's symbolic dims (batch, height, width); checks run at the shapes of
    --input, else of the data, else batch 1 and the model's metadata (Ultralytics imgsz). --static pins them.

    \b
    Examples:
      edgesqueeze build examples/digits/digits_cnn.onnx --target orin-nano --precision int8 \\
          --calib examples/digits/calib.npz --val examples/digits/val.npz -o bundle/
      edgesqueeze build net.onnx -t tx2 -o bundle-tx2/                  # auto: FP16 on a TX2
      edgesqueeze build net.onnx -t agx-orin --sparsity 2:4 --dla -o bundle/ --archive
      edgesqueeze build net.onnx -t orin-nano -p int8 --calib calib.npz --method minmax --keep head -o bundle/
      edgesqueeze build net.onnx -t orin-nano -p int8 --calib c.npz --val v.npz --strict -o bundle/  # exit 7 on a loss
      edgesqueeze build yolo.onnx -t orin-nano --min-shapes images:1x3x320x320 --opt-shapes images:1x3x640x640 \
          --max-shapes images:8x3x1280x1280 -o bundle/              # dynamic input: TensorRT profile
      edgesqueeze bench bundle/                                         # then run it (CPU default)
    """
    from ..pipeline import build

    if not target:
        raise click.UsageError("Missing option '-t' / '--target' (see 'edgesqueeze devices' for the names).")
    calib, val = with_preprocess(calib, preprocess), with_preprocess(val, preprocess)
    summary = build(model, target, output, precision=precision, calib=calib, sparsity=sparsity, val=val,
                    input_shapes=list(input_shapes) or None, static=static, archive=archive,
                    passes=split_names(passes) or None,
                    skip_passes=split_names(skip_passes), optimize=not no_optimize, calib_method=calib_method,
                    calib_limit=calib_limit, val_limit=val_limit, dla=dla, workspace_mib=workspace_mib,
                    local_engine=local_engine, force=force, progress=not quiet() and not as_json,
                    max_accuracy_drop=max_accuracy_drop if max_accuracy_drop is not None else max_drop / 100,
                    strict=strict, sign_key=sign_key, percentile=percentile, keep=split_names(keep),
                    sensitivity=sensitivity, auto_keep_drop=auto_keep_drop, min_shapes=min_shapes,
                    opt_shapes=opt_shapes, max_shapes=max_shapes, log=_log)
    emit(summary, as_json, format_summary)


def _log(message: str) -> None:
    if message.startswith("warning: "):
        warn(message[len("warning: "):])
    else:
        info(message)


def _size(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0


def _ms(v) -> str:
    return "-" if v is None else f"{v:.4f}" if v < 0.1 else f"{v:.3f}"


def format_summary(s: dict) -> str:
    """The summary table ``edgesqueeze build`` prints."""
    acc = s.get("accuracy") or {}
    ref_top1 = acc.get("reference_top1")
    lat = s.get("latency_ms") or {}
    rows = []

    def acc_cells(kind):
        if not acc:
            return ["-", "-"]
        m = acc["models"].get(kind) or {}
        top1 = "-" if m.get("top1") is None else f"{100 * m['top1']:.2f}%"
        outs = list((m.get("outputs") or {}).values())
        err = "-" if not outs or "max_rel" not in outs[0] else f"{outs[0]['max_rel']:.2g}"
        agree = outs[0].get("top1_agreement") if outs else None
        return [top1 + (f" (agree {100 * agree:.1f}%)" if agree is not None and kind != "fp32" else ""), err]

    rows.append(["input model (fp32)", _size(s["sizes"].get("input")), _ms(lat.get("input")),
                 "-" if ref_top1 is None else f"{100 * ref_top1:.2f}%", "0"])
    labels = {"fp32": "optimized fp32", "fp16": "fp16", "int8_qdq": "int8 (QDQ)",
              "int8_qdq_fp16": "int8 (QDQ, fp16 base)"}
    prec_of = {"fp32": "fp32", "fp16": "fp16", "int8_qdq": "int8", "int8_qdq_fp16": "int8"}
    for kind in ("fp32", "fp16", "int8_qdq", "int8_qdq_fp16"):
        if kind not in s["models"]:
            continue
        mark = " *" if s["models"][kind] == s["models"]["deploy"] else ""
        rows.append([labels[kind] + mark, _size(s["sizes"].get(kind)), _ms(lat.get(prec_of[kind])),
                     *acc_cells(kind)])
    n = acc.get("samples")
    head = ["model", "size", f"predicted ms ({s['target']})",
            f"top-1 (val{', n=' + str(n) if n else ''})", "max rel err vs input"]
    lines = [f"built {s['bundle'].rstrip('/')}/ for {s['target']}: precision {s['precision']}"
             + (f" (asked: {s['requested_precision']})" if s["requested_precision"] != s["precision"] else ""),
             "", table(rows, head, "lrrrr"), "", "* = deploy model (runs on onnxruntime" +
             ("; the device's TensorRT engine comes from build_engine.sh)" if s.get("engine_script") else ")")]
    if s.get("device_runtime"):
        lines += [f"device: {s['device_runtime']}"]
    stages = s.get("stages", {})
    skipped = [f"{k}: {v.get('reason')}" for k, v in stages.items() if v.get("status") == "skipped"]
    if skipped:
        lines += ["skipped: " + "; ".join(skipped)]
    kept = (stages.get("quantize") or {}).get("keep")
    if kept:
        lines += [f"kept out of INT8: {', '.join(kept)}"]
    compat = stages.get("compat") or {}
    if compat.get("status") == "done":
        lines += [f"ONNX compat: {compat['note']}"]
    if s.get("engine_script"):
        es = s["engine_script"]
        flags = " ".join(es["flags"]) or "(fp32)"
        lines += [f"engine script: build_engine.sh for TensorRT {es['trt_version']}: {es['workspace_flag']} {flags}"]
    if s.get("profile"):
        lines += [f"TensorRT profile {line}" for line in profile_lines(s["profile"])]
    if s.get("plugin_expectation"):
        lines += [f"custom nodes: {s['plugin_expectation']}"]
    if s.get("signature"):
        lines += [f"signed: {s['signature']}"]
    if s.get("archive"):
        lines += [f"archive: {s['archive']}"]
    total = sum(v.get("seconds", 0.0) for v in stages.values())
    lines += [f"{s['files']} files, built in {total:.1f} s. Next: edgesqueeze bench {s['bundle']}"]
    return "\n".join(lines)
