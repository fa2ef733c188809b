"""``edgesqueeze inspect``: per-layer FLOPs, parameters, bytes and a roofline estimate."""
from __future__ import annotations

import click

from ..precision import PRECISIONS

from .common import emit, input_shape_option, json_option, target_option


@click.command("inspect")
@click.argument("model", type=click.Path())
@target_option
@click.option("-p", "--precision", type=click.Choice(PRECISIONS), default=None,
              help="Bytes per value and the target peak used for the roofline (default: the model's own: int8 for a "
                   "QDQ model, fp16 for an FP16 model, else fp32).")
@click.option("--sparse", is_flag=True, help="Use the target's 2:4 sparse INT8 peak.")
@click.option("--top", type=int, default=None, help="Show only the N most expensive layers.")
@input_shape_option
@json_option
def command(model, target, precision, sparse, top, input_shapes, as_json):
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
    """
    from ..inspect import format_report, inspect_model
    from ..model import load_model, parse_input_shapes

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
