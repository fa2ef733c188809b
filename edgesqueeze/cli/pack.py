"""``edgesqueeze pack``: store a pruned / shared ONNX model as a Huffman-coded ``.esq`` file."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..fileio import refuse_overwrite, write_bytes_atomic
from .common import emit, info, json_option, output_option, table


@click.command("pack")
@click.argument("model", type=click.Path())
@click.option("--conv-index-bits", type=int, default=8, show_default=True,
              help="Relative-index width for Conv weights (a longer run of zeros takes a filler entry).")
@click.option("--fc-index-bits", type=int, default=5, show_default=True,
              help="Relative-index width for Gemm/MatMul weights.")
@click.option("--dense", "dense", default=None, type=click.Path(dir_okay=False), metavar="ONNX",
              help="The dense fp32 model to compare sizes with (default: MODEL itself).")
@output_option(help=".esq file to write.")
@json_option
def command(model, conv_index_bits, fc_index_bits, dense, output, as_json):
    """Pack MODEL's weights as sparse, shared, Huffman-coded streams (Deep Compression storage).

    Prints the size of the weights dense, sparse (relative indices), with weight sharing and with Huffman
    coding, per layer and in total. 'edgesqueeze unpack' restores the model bit for bit.

    \b
    Examples:
      edgesqueeze compress net.onnx --prune 0.9 --share 8,5 -o net.small.onnx
      edgesqueeze pack net.small.onnx --dense net.onnx -o net.esq
      edgesqueeze unpack net.esq -o net.restored.onnx
    """
    from ..compress.esq import pack
    from ..model import load_model

    m = load_model(model, check=True, require_static=False)
    dense_path = Path(dense) if dense else Path(model)
    if not dense_path.is_file():
        raise InputError("no such file", path=str(dense_path))
    data, report = pack(m, conv_index_bits=conv_index_bits, fc_index_bits=fc_index_bits,
                        dense_onnx_bytes=dense_path.stat().st_size)
    refuse_overwrite(output, model, *( [dense] if dense else []))
    write_bytes_atomic(output, data)
    info(f"wrote {output}")
    report["output"] = str(output)
    emit(report, as_json, size_table)


def size_table(report) -> str:
    """Table 1 of Han et al.: per layer and total, the weight storage at each stage (bytes) and the ratio."""
    def kb(bits):
        return f"{bits / 8 / 1024:.1f}"
    rows = []
    for r in report["layers"]:
        rows.append([r["layer"], r["params"], f"{100 * r['nonzero'] / max(r['params'], 1):.1f}%",
                     r["index_bits"], r["value_bits"], kb(r["dense_bits"]), kb(r["sparse_bits"]),
                     kb(r["shared_bits"]), kb(r["huffman_bits"]), f"{r['ratio']:.1f}x"])
    t = report["totals"]
    rows.append(["total", t["params"], f"{100 * t['nonzero'] / max(t['params'], 1):.1f}%", "", "",
                 kb(t["dense_bits"]), kb(t["sparse_bits"]), kb(t["shared_bits"]), kb(t["huffman_bits"]),
                 f"{report['weights_ratio']:.1f}x"])
    lines = [table(rows, ["layer", "weights", "kept", "idx bits", "val bits", "dense KiB", "sparse KiB",
                          "+share KiB", "+Huffman KiB", "ratio"], "lrrrrrrrrr"),
             f"file: {report['file_bytes']} bytes (skeleton {report['skeleton_bytes']} bytes) vs dense ONNX "
             f"{report['dense_onnx_bytes']} bytes: {report['file_ratio']:.1f}x smaller"]
    return "\n".join(lines)
