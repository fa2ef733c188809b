"""``edgesqueeze inspect``: per-layer FLOPs, parameters, bytes and a roofline estimate."""
from __future__ import annotations

from typing import Optional

import click

from ..precision import PRECISIONS
from .common import emit, input_shape_option, json_option, table, target_option


@click.command("inspect")
@click.argument("model", type=click.Path())
@target_option
@click.option("-p", "--precision", type=click.Choice(PRECISIONS), default=None,
              help="Bytes per value and the target peak used for the roofline (default: the model's own: int8 for a "
                   "QDQ model, fp16 for an FP16 model, else fp32).")
@click.option("--sparse", is_flag=True, help="Use the target's 2:4 sparse INT8 peak.")
@click.option("--top", type=int, default=None, help="Show only the N most expensive layers.")
@click.option("--dla", is_flag=True, help="With --target: predict which layers fall back from DLA to the GPU "
                                          "(from TensorRT's documented DLA limits; int8/fp16 only).")
@input_shape_option
@json_option
def command(model, target, precision, sparse, top, dla, input_shapes, as_json):
    """Print a per-layer table (op, output shape, parameters, MACs, weight and activation bytes, FLOP/byte) and totals.

    With --target, each layer also gets a roofline time, the larger of compute time at the target's peak for the
    precision and memory time at its peak bandwidth, and is marked compute- or memory-bound; depthwise-separable
    blocks show their DRAM traffic unfused vs fused.

    A model with dynamic dims is inspected at batch 1 and the sizes of --input or its metadata (Ultralytics imgsz).

    \b
    Examples:
      edgesqueeze inspect net.onnx
      edgesqueeze inspect net.onnx --target tx2 --precision fp16 --top 10
      edgesqueeze inspect net.onnx --target orin-nano --precision int8 --json
      edgesqueeze inspect net.onnx --target agx-orin --dla
    """
    from ..inspect import inspect_model
    from ..model import load_model, parse_input_shapes

    if dla:
        from ..dla import dla_report, format_dla_report

        if not target:
            raise click.UsageError("--dla needs --target (a board with DLA: xavier-nx, agx-xavier, orin-nx, agx-orin)")
        m = load_model(model)  # unpinned: dynamic dims are what DLA refuses
        report = dla_report(m, target, precision or _dla_precision(model_precision(m)))
        report["model"] = str(model)
        emit(report, as_json, format_dla_report)
        return

    # the table needs numbers: a dynamic model is inspected at its checks' concrete shapes (the file is unchanged)
    m = load_model(model, parse_input_shapes(input_shapes), pin=True)
    result = inspect_model(m, target=target, precision=precision or model_precision(m), sparse=sparse)
    result["model"] = str(model)
    emit(result, as_json, lambda r: format_report(r, top=top))


def model_precision(model) -> str:
    """The precision a model computes in: int8 with QuantizeLinear nodes, fp16 when most weights are float16."""
    from onnx import TensorProto

    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return "int8"
    floats = [t.data_type for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    return "fp16" if floats and floats.count(TensorProto.FLOAT16) * 2 > len(floats) else "fp32"


def _dla_precision(precision: str) -> str:
    """DLA builds run int8 or fp16: an FP32 model is built in fp16 for DLA unless --precision says otherwise."""
    return precision if precision in ("int8", "fp16") else "fp16"


def format_report(result: dict, top: Optional[int] = None) -> str:
    """Render :func:`edgesqueeze.inspect.inspect_model`'s result as the text table the CLI prints."""
    has_t = result["target"] is not None
    layers = result["layers"]
    shown = sorted(layers, key=lambda l: -l.get("time_ms", l["flops"]))[:top] if top else layers
    rows = []
    for l in shown:
        row = [l["name"][:40], l["op"], "x".join(map(str, l["output_shape"])), _si(l["params"]), _si(l["macs"]),
               _bytes(l["weight_bytes"]), _bytes(l["act_in_bytes"]), _bytes(l["act_out_bytes"]), f"{l['intensity']:.1f}"]
        if has_t:
            row += [f"{l['time_ms'] * 1e3:.1f}", l["bound"] + ("*" if l["fused"] else "")]
        rows.append(row)
    headers = ["layer", "op", "output", "params", "MACs", "weights", "act in", "act out", "FLOP/B"]
    if has_t:
        headers += ["roof us", "bound"]
    t = result["totals"]
    lines = [table(rows, headers, "llr" + "r" * (len(headers) - 3))]
    lines.append("")
    lines.append(f"total: {t['layers']} layers, {_si(t['params'])} params, {_si(t['macs'])} MACs, "
                 f"{_si(t['flops'])} FLOPs, weights {_bytes(t['weight_bytes'])}, "
                 f"activations {_bytes(t['activation_bytes'])}, intensity {t['intensity']:.1f} FLOP/B "
                 f"({result['precision']})")
    if has_t:
        lines.append(f"roofline on {result['target']} ({result['precision']}): {t['roofline_ms']:.3f} ms layer by layer, "
                     f"{t['roofline_fused_ms']:.3f} ms with pointwise ops fused (* above); "
                     f"{t['compute_bound_layers']} compute-bound, {t['memory_bound_layers']} memory-bound layers; "
                     f"ridge point {t['ridge_intensity']:.1f} FLOP/B")
        lines.append(f"predicted latency: {t['predicted_ms']:.3f} ms = fused roofline + {t['kernels']} layers x "
                     f"{t['kernel_launch_us']:g} us launch overhead (a typical figure; a lower bound, not a measurement)")
    if result["dwsep_blocks"]:
        rows = []
        for b in result["dwsep_blocks"]:
            r = [b["name"][:40], "fused" if b["fused_node"] else "unfused", _bytes(b["unfused_bytes"]),
                 _bytes(b["fused_bytes"]), _bytes(b["bytes_saved"])]
            if has_t:
                r += [f"{b['unfused_ms'] * 1e3:.1f}", f"{b['fused_ms'] * 1e3:.1f}"]
            rows.append(r)
        hd = ["depthwise-separable block", "now", "DRAM unfused", "DRAM fused", "saved"]
        if has_t:
            hd += ["unfused us", "fused us"]
        lines += ["", table(rows, hd, "ll" + "r" * (len(hd) - 2))]
    return "\n".join(lines)


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _bytes(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}B"
