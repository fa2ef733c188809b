"""``edgesqueeze convert``: lower a model's ONNX opset / IR version for an older runtime (JetPack 4.6 etc.)."""
from __future__ import annotations

import click

from .common import emit, input_shape_option, json_option, static_option, target_option


@click.command("convert")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The converted .onnx file.")
@click.option("--opset", type=click.IntRange(min=7), help="Highest ai.onnx opset to keep (overrides the target's).")
@target_option
@click.option("--ir", type=click.IntRange(min=3), help="Highest IR version to keep (overrides the target's).")
@input_shape_option
@static_option
@json_option
def command(model, output, opset, target, ir, input_shapes, static, as_json):
    """Lower MODEL's ai.onnx opset and IR version where that is exact, proven equal on onnxruntime.

    New exporters write opset 18+ / IR 10; JetPack 4.6 (TensorRT 8.2, onnxruntime 1.10) loads opset <= 13 and
    IR <= 8, and onnx's version converter cannot go down. --target uses the target's limits
    (edgesqueeze devices TARGET shows onnx_max_opset and onnx_max_ir); a node with no exact spelling at the
    lower opset (e.g. LayerNormalization below 17) fails with exit code 4 and names the node. Symbolic input
    dims are kept; --input gives the verification's shapes, --static pins them.

    \b
    Examples:
      edgesqueeze convert examples/digits/digits_cnn.onnx -o digits13.onnx --target tx2
      edgesqueeze convert net.onnx -o net13.onnx --opset 13 --ir 8
      edgesqueeze convert net.onnx -o net17.onnx --target xavier-nx --json
    """
    from ..compat import convert_file

    report = convert_file(model, output, opset=opset, target=target, ir=ir,
                          input_shapes=list(input_shapes) or None, static=static)
    emit(report, as_json, format_report)


def format_report(r: dict) -> str:
    """The lines ``edgesqueeze convert`` prints."""
    o, i = r["opset"], r["ir"]
    limits = f" for {r['target']}" if r.get("target") else ""
    if not r["changed"]:
        return (f"{r['output']}: unchanged{limits} (opset {o['from']}, IR {i['from']} are within opset "
                f"{r['max_opset'] or 'any'}, IR {r['max_ir'] or 'any'})")
    lines = [f"{r['output']}: opset {o['from']} -> {o['to']}, IR {i['from']} -> {i['to']}{limits}"]
    if r.get("inlined"):
        lines.append(f"  {r['inlined']}")
    for what, n in sorted((o.get("rewrites") or {}).items()):
        lines.append(f"  {n:4d} x {what}")
    v = r.get("verification") or {}
    if v.get("checked"):
        lines.append(f"verified on onnxruntime: max relative error {v['max_rel']:.3g} (rtol {v['rtol']:g}, "
                     f"seed {v['seed']}); onnx.checker (full) passed")
    elif v:
        lines.append(f"not verified on onnxruntime: {v.get('reason')}; onnx.checker (full) passed")
    return "\n".join(lines)
