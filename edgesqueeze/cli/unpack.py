"""``edgesqueeze unpack``: rebuild the ONNX model from an ``.esq`` file."""
from __future__ import annotations

import click

from ..errors import InputError
from .common import emit, info, json_option, output_option


@click.command("unpack")
@click.argument("esq", type=click.Path())
@output_option(help=".onnx file to write.")
@json_option
def command(esq, output, as_json):
    """Decode ESQ (written by 'edgesqueeze pack') back into a runnable ONNX model.

    The weights come back bit for bit; the model is checked with the ONNX checker before it is written.

    \b
    Examples:
      edgesqueeze unpack net.esq -o net.onnx
      edgesqueeze unpack net.esq -o net.onnx --json
    """
    import onnx

    from ..compress.esq import unpack
    from ..model import model_hash, save_model

    model = unpack(esq)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"the unpacked model is not valid ONNX: {str(exc).splitlines()[0]}", path=esq) from exc
    save_model(model, output, inputs=(esq,))
    info(f"wrote {output}")
    params = sum(int(__import__("numpy").prod(t.dims)) for t in model.graph.initializer)
    report = {"input": str(esq), "output": str(output), "nodes": len(model.graph.node),
              "initializers": len(model.graph.initializer), "params": params, "sha256": model_hash(model)}
    emit(report, as_json, lambda r: f"{r['output']}: {r['nodes']} nodes, {r['params']} parameters, "
                                     f"sha256 {r['sha256'][:16]}")
