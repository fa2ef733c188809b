"""``edgesqueeze eval``: top-1 accuracy and output error against a reference model."""
from __future__ import annotations

import click

from .common import emit, input_shape_option, json_option, preprocess_option, quiet, table, warn, with_preprocess


@click.command("eval")
@click.argument("model", type=click.Path())
@click.option("-d", "--data", required=True, metavar="DATA",
              help="Evaluation data: .npz/.npy (labels under 'label'), an image folder, or 'random'.")
@click.option("-r", "--reference", type=click.Path(dir_okay=False), metavar="MODEL",
              help="Reference model (e.g. the FP32 original): output error and top-1 agreement.")
@click.option("--output", "score_output", metavar="NAME", help="Output holding class scores (default: the first).")
@click.option("--limit", type=int, help="Use at most this many samples.")
@click.option("--batch-size", default=1, show_default=True, type=int, help="Samples per batch; the model loads with static shapes, so its batch (fixed by the model or --input NAME:Nx...) wins, with a warning when they differ.")
@input_shape_option
@preprocess_option
@json_option
def command(model, data, reference, score_output, limit, batch_size, input_shapes, preprocess, as_json):
    """Evaluate MODEL on DATA with onnxruntime: top-1 accuracy (when the data has labels) and, with
    --reference, the output error and top-1 agreement against another model.

    \b
    Examples:
      edgesqueeze eval net.onnx --data val.npz
      edgesqueeze eval net.int8.onnx --data val.npz --reference net.onnx
      edgesqueeze eval net.fp16.onnx --data 'images/?resize=256&crop=224' --reference net.onnx --json
    """
    from ..quant.run import evaluate_model

    result = evaluate_model(model, with_preprocess(data, preprocess), reference=reference, output=score_output,
                            limit=limit,
                            batch_size=batch_size, input_shapes=input_shapes, progress=not quiet() and not as_json,
                            warn=warn)
    emit(result, as_json, _text)


def _text(r: dict) -> str:
    lines = [f"data: {r['data']}" + ("  [RANDOM: accuracy is meaningless]" if r["random"] else ""),
             f"samples: {r['n']}",
             f"top-1: {'-' if r['top1'] is None else format(r['top1'], '.2f') + ' %'}"]
    if r.get("agreement") is not None:
        lines.append(f"top-1 agreement with the reference: {r['agreement']:.2f} %")
    if r.get("output_error"):
        rows = [[name, f"{e['max_abs']:.4g}", f"{e['mean_abs']:.4g}", f"{e['max_rel']:.4g}",
                 "-" if e["sqnr_db"] is None else f"{e['sqnr_db']:.1f}"] for name, e in r["output_error"].items()]
        lines += ["", table(rows, ["output", "max abs", "mean abs", "max rel", "SQNR dB"], "lrrrr")]
    return "\n".join(lines)
