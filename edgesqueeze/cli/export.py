"""``edgesqueeze export``: PyTorch module -> verified ONNX."""
from __future__ import annotations

import click

from .._lazy import require
from ..fileio import check_writable, refuse_overwrite
from .common import emit, info, json_option


@click.command("export")
@click.argument("factory", metavar="FILE.py:FACTORY")
@click.option("-w", "--weights", type=click.Path(), default=None, help="State dict (.pt) to load into the model.")
@click.option("-i", "--input", "inputs", multiple=True, required=True, metavar="[NAME:]SHAPE",
              help="Example input shape, e.g. 1x3x224x224; repeat for several inputs (name:shape sets the name).")
@click.option("-o", "--output", required=True, type=click.Path(), help="ONNX file to write.")
@click.option("--opset", default=18, show_default=True, help="ai.onnx opset to export to.")
@click.option("--output-name", "output_names", multiple=True, help="Name(s) of the output tensor(s).")
@click.option("--dynamic-axes", "dynamic_axes", multiple=True, metavar="[NAME:]AXES",
              help="Export these axes as symbolic dims: input:0,2,3 or input:batch,height,width; repeat per input.")
@click.option("--legacy", is_flag=True, help="Use torch's TorchScript exporter instead of torch.export (dynamo).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-torch check (not recommended).")
@json_option
def command(factory, weights, inputs, output, opset, output_names, dynamic_axes, legacy, no_verify, as_json):
    """Export a PyTorch model to ONNX and check onnxruntime against torch on random inputs.

    FACTORY names a function that returns the torch.nn.Module: path/to/net.py:make_model or package.module:make_model.
    Needs the torch extra: pip install 'edgesqueeze[torch]'.

    \b
    Example:
      edgesqueeze export examples/digits_model.py:make_model --weights digits.pt --input 1x1x8x8 -o digits.onnx
      edgesqueeze export net.py:make_model --input input:1x3x224x224 --dynamic-axes input:batch,height,width -o net.onnx
    """
    from ..export import export_torch, load_factory, load_weights, parse_dynamic_axes, parse_example_shapes

    source = factory.rpartition(":")[0]
    refuse_overwrite(output, source if source.endswith(".py") else None, weights)  # never the user's own files
    check_writable(output)
    torch = require("torch", "exporting PyTorch models")
    make = load_factory(factory)
    module = make()
    if weights:
        load_weights(module, weights)
    names, shapes = parse_example_shapes(inputs)
    example = tuple(torch.randn(*s) for s in shapes)
    in_names = [n or (f"input_{i}" if len(shapes) > 1 else "input") for i, n in enumerate(names)]
    dyn = parse_dynamic_axes(dynamic_axes, in_names, [len(s) for s in shapes]) if dynamic_axes else None
    shape_text = ", ".join("x".join(map(str, s)) for s in shapes)
    report = export_torch(module, example, output, input_names=in_names, output_names=list(output_names) or None,
                          opset=opset, legacy=legacy, verify=not no_verify, dynamic_axes=dyn,
                          on_start=lambda: info(f"exporting {factory} with input(s) {shape_text} ..."))

    def text(r):
        lines = [f"wrote {r['path']} (opset {r['opset']}, {r['exporter']} exporter, sha256 {r['sha256'][:12]})"]
        v = r.get("verification")
        if v:
            lines.append(f"verified: onnxruntime matches torch on {v['trials']} random inputs "
                         f"(max abs error {max(v['max_abs_error']):.2e})")
        return "\n".join(lines)

    emit(report, as_json, text)
