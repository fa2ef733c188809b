"""``edgesqueeze quantize``: INT8 (calibration cache + explicit QDQ model) or FP16, per target, per layer."""
from __future__ import annotations

import click

from ..precision import PRECISION_CHOICES
from ..quant.methods import DEFAULT_METHOD, METHODS
from .common import (emit, info, input_shape_option, json_option, output_option, preprocess_option, quiet,
                     static_option, table, target_option, warn, with_preprocess)


def split_names(values):
    """Names given as repeated and/or comma-separated options (``--keep a,b --keep c``), in order."""
    out = []
    for v in values or ():
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return out


@click.command("quantize")
@click.argument("model", type=click.Path())
@output_option(help="Output model (.onnx): the QDQ model for int8, the FP16 model for fp16. Its weights go to one "
                    "file OUTPUT.data next to it when the input kept them as external data or the result passes "
                    "2 GB (as optimize).")
@click.option("-p", "--precision", default="auto", show_default=True,
              type=click.Choice(PRECISION_CHOICES, case_sensitive=False),
              help="auto: what the --target runs fast (INT8 on Xavier/Orin, FP16 on TX1/Nano/TX2, FP32 on TK1).")
@target_option
@click.option("-c", "--calib", metavar="DATA", help="Calibration data: .npz/.npy, an image folder, or 'random'.")
@click.option("-m", "--method", default=DEFAULT_METHOD, show_default=True,
              type=click.Choice(METHODS, case_sensitive=False),
              help="Calibrator: auto = per network the one of mse/entropy/percentile closest to FP32; "
                   "entropy = TensorRT EntropyCalibration2.")
@click.option("--percentile", default=99.99, show_default=True, type=float, help="Percentile of the percentile method.")
@click.option("--keep", multiple=True, metavar="NODE[,NODE]",
              help="Layers (node names) kept in higher precision (FP16/FP32). Repeat or comma-separate.")
@click.option("--val", metavar="DATA", help="Validation data (labels give top-1): prints FP32 vs quantized accuracy.")
@click.option("--sensitivity", is_flag=True, help="Rank layers by the output error when only that layer is INT8.")
@click.option("--auto-keep", "auto_keep_drop", type=float, metavar="POINTS",
              help="Keep the most sensitive layers out of INT8 until the accuracy drop is at most POINTS.")
@click.option("--from-cache", type=click.Path(dir_okay=False), metavar="FILE",
              help="Use the ranges of an existing TensorRT calibration cache (trtexec, Polygraphy) instead of "
                   "calibrating.")
@click.option("--calib-cache", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write the TensorRT calibration cache (default: OUTPUT with suffix .cache).")
@click.option("--trt-version", metavar="VERSION",
              help="TensorRT version for the cache header (default: the target's, else 8.2.1).")
@click.option("--limit", type=int, help="Use at most this many calibration (and validation) samples.")
@click.option("--batch-size", default=1, show_default=True, type=int, help="Samples per batch for a model with a dynamic batch (a batch fixed by the model, or pinned by --input NAME:Nx... --static, wins, with a warning when they differ).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Calibration result cache folder "
              "(default: ~/.cache/edgesqueeze/calib).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the calibration result cache.")
@click.option("--memory-budget", default=512.0, show_default=True, type=float, metavar="MB",
              help="Activation memory exposed per batch while calibrating (more passes when exceeded).")
@click.option("--int8-weights", is_flag=True, help="Store weights as INT8 + DequantizeLinear (TensorRT >= 8.6).")
@input_shape_option
@static_option
@preprocess_option
@json_option
def command(model, output, precision, target, calib, method, percentile, keep, val, sensitivity, auto_keep_drop,
            from_cache, calib_cache, trt_version, limit, batch_size, cache_dir, no_cache, memory_budget,
            int8_weights, input_shapes, static, preprocess, as_json):
    """Quantize MODEL to INT8 or FP16.

    Symbolic input dims (batch, height, width) are kept in the written model: calibration runs at the shapes
    of the --calib data; --static pins the model to the --input shapes.

    INT8 writes an explicit QDQ model (what TensorRT 10/11 and onnxruntime run) and a TensorRT calibration
    cache (what TensorRT 8.x on JetPack 4.6/5.1 reads with trtexec --int8 --calib=FILE).

    \b
    Examples:
      edgesqueeze quantize net.onnx -p int8 --calib calib.npz -o net.int8.onnx
      edgesqueeze quantize net.onnx -t orin-nano --calib calib.npz --val val.npz -o net.int8.onnx
      edgesqueeze quantize net.onnx -p int8 --calib calib.npz --method minmax --keep head -o q.onnx
      edgesqueeze quantize net.onnx -p int8 --calib calib.npz --val val.npz --sensitivity -o q.onnx
      edgesqueeze quantize net.onnx -p int8 --calib calib.npz --val val.npz --auto-keep 0.5 -o q.onnx
      edgesqueeze quantize net.onnx -p int8 --from-cache trtexec.cache -o q.onnx
      edgesqueeze quantize net.onnx -p fp16 --keep Softmax --val val.npz -o net.fp16.onnx
    """
    from ..quant.run import quantize_model

    summary = quantize_model(
        model, output, precision=precision, target=target, calib=with_preprocess(calib, preprocess), method=method,
        percentile=percentile, keep=split_names(keep), val=with_preprocess(val, preprocess),
        sensitivity=sensitivity, auto_keep_drop=auto_keep_drop,
        from_cache=from_cache, calib_cache=calib_cache, trt_version=trt_version, limit=limit,
        batch_size=batch_size, cache_dir=cache_dir, no_cache=no_cache, memory_budget=memory_budget,
        int8_weights=int8_weights, input_shapes=input_shapes, static=static, progress=not quiet() and not as_json,
        info=info, warn=warn)
    emit(summary, as_json, _text)


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def _text(s: dict) -> str:
    lines = [f"precision: {s['precision']}" + (f" ({s['precision_reason']})" if s.get("precision_reason") else "")]
    if s.get("calibration"):
        c = s["calibration"]
        lines.append(f"calibration: {c['method']} on {c['data']}: {c['tensors']} tensors"
                     + (" (cached)" if c.get("cached") else f" in {c['seconds']:.2f} s"))
    if s.get("quantized"):
        q = s["quantized"]
        lines.append(f"quantized layers: {len(q['quantized_nodes'])}, kept/skipped: {len(q['skipped'])}")
        for node, why in q["skipped"].items():
            lines.append(f"  {node}: {why}")
        custom = q.get("custom_not_quantized") or {}
        if custom:
            ops = sorted({why.split(":")[0].replace("custom op ", "") for why in custom.values()})
            hint = (" (optimize with --skip fuse_depthwise_separable to keep those layers INT8)"
                    if "DepthwiseSeparableConv" in ops else "")
            lines.append(f"not quantized: {len(custom)} custom node(s) ({', '.join(ops)}): their TensorRT plugins "
                         f"run FP16/FP32{hint}")
    if s.get("fp16"):
        f = s["fp16"]
        lines.append(f"fp16 nodes: {f['fp16_nodes']}, fp32 nodes: {f['fp32_nodes']}, casts: {f['casts']}")
        if f.get("overflow"):
            lines.append(f"  beyond the fp16 range on the data: {', '.join(f['overflow'])}")
        if f["clipped_weights"]:
            lines.append(f"  weights clipped to the fp16 range: {', '.join(f['clipped_weights'])}")
    if s.get("sensitivity"):
        rows = [[r["node"], r["op"], _fmt(r["sqnr_db"], ".1f"), _fmt(r["max_rel"], ".4f"), _fmt(r["agreement"]),
                 _fmt(r["top1"])] for r in s["sensitivity"]]
        lines += ["", "per-layer sensitivity (only that layer INT8; most sensitive first):",
                  table(rows, ["layer", "op", "SQNR dB", "max rel err", "agree %", "top-1 %"], "llrrrr")]
    if s.get("auto_keep"):
        a = s["auto_keep"]
        lines.append(f"\nauto-keep: {len(a['keep'])} layer(s) kept ({', '.join(a['keep']) or 'none'}); "
                     f"{a['metric']} drop {a['drop']:.2f} points (budget {a['budget']:.2f})"
                     + ("" if a["met"] else " - budget NOT met even with every layer kept"))
    if s.get("accuracy"):
        acc = s["accuracy"]
        rows = [[name, _fmt(r["top1"]), _fmt(r.get("agreement")), _fmt(r.get("sqnr_db"), ".1f"),
                 _fmt(r.get("max_rel"), ".4f")] for name, r in acc["models"].items()]
        lines += ["", f"validation: {acc['data']}",
                  table(rows, ["model", "top-1 %", "agree %", "SQNR dB", "max rel err"], "lrrrr")]
    lines.append("")
    for kind, path in s["outputs"].items():
        lines.append(f"wrote {kind}: {path}")
    return "\n".join(lines)
