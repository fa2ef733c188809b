"""``edgesqueeze compare``: two models, bundles or backends on the same data."""
from __future__ import annotations

import math
import sys

import click

from ..errors import VerificationError
from .common import emit, json_option, quiet, table


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("-d", "--data", metavar="DATA", help="Inputs (and labels): .npz/.npy/image folder; default: random.")
@click.option("--backend-a", type=click.Choice(["ort", "trt"]), help="Backend for A (default ort, or A's prefix).")
@click.option("--backend-b", type=click.Choice(["ort", "trt"]), help="Backend for B (default ort, or B's prefix).")
@click.option("--limit", type=click.IntRange(min=1), help="Compare at most N batches.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime threads.")
@click.option("--max-rel", type=float, help="Fail (exit 7) when an output's max relative error exceeds this.")
@click.option("--min-agreement", type=float, help="Fail (exit 7) when top-1 agreement falls below this (0..1).")
@json_option
def command(a, b, data, backend_a, backend_b, limit, threads, max_rel, min_agreement, as_json):
    """Run A and B on the same data and report per-output max/mean absolute and relative error and top-1
    agreement (A is the reference). A and B are .onnx models, bundles (their deploy model) or
    BACKEND:PATH (ort:, trt:). A relative error against an all-zero reference is inf (null in --json).

    \b
    Examples:
      edgesqueeze compare examples/digits/digits_cnn.onnx bundle/ --data examples/digits/val.npz
      edgesqueeze compare bundle/models/model.fp32.onnx bundle/models/model.int8_qdq.onnx -d val.npz --json
      edgesqueeze compare ort:model.onnx trt:model.onnx -d val.npz --max-rel 1e-2
    """
    from ..compare import compare

    bar = None
    progress = None
    if not quiet() and not as_json:
        from tqdm import tqdm

        if sys.stderr.isatty():
            bar = tqdm(desc="compare", unit="batch", file=sys.stderr, leave=False)
            progress = bar.update
    try:
        result = compare(a, b, data, backend_a=backend_a, backend_b=backend_b, limit=limit, threads=threads,
                         progress=progress)
    finally:
        if bar is not None:
            bar.close()
    emit(_finite_or_null(result) if as_json else result, as_json, format_comparison)
    for name, s in result["outputs"].items():
        if "shape_mismatch" in s:
            raise VerificationError(f"output shapes differ: {s['shape_mismatch']}", tensor=name)
        if max_rel is not None and s["max_rel"] > max_rel:
            raise VerificationError(f"max relative error {s['max_rel']:.3g} > {max_rel:g}", tensor=name)
        if min_agreement is not None and s["top1_agreement"] is not None and s["top1_agreement"] < min_agreement:
            raise VerificationError(f"top-1 agreement {s['top1_agreement']:.4f} < {min_agreement:g}", tensor=name)


def _finite_or_null(obj):
    """JSON has no inf/NaN: a relative error against an all-zero reference (inf in the table) becomes null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def format_comparison(result: dict) -> str:
    """Human-readable table of a :func:`edgesqueeze.compare.compare` result."""
    rows = []
    for name, s in result["outputs"].items():
        if "shape_mismatch" in s:
            rows.append([name, "shape mismatch", str(s["shape_mismatch"]), "", "", ""])
            continue
        agree = "-" if s["top1_agreement"] is None else f"{100 * s['top1_agreement']:.2f}%"
        rows.append([name, f"{s['max_abs']:.3g}", f"{s['mean_abs']:.3g}", f"{s['max_rel']:.3g}",
                     f"{s['mean_rel']:.3g}", agree])
    lines = [f"A (reference): {result['a']}", f"B:             {result['b']}",
             f"data: {result['data']} ({result['samples']} samples)", "",
             table(rows, ["output", "max abs", "mean abs", "max rel", "mean rel", "top-1 agree"], "lrrrrr")]
    acc = result.get("accuracy")
    if acc and acc.get("n"):
        lines += ["", f"top-1 accuracy on {acc['n']} labelled samples ({acc['output']}): "
                      f"A {100 * acc['a']:.2f}%  B {100 * acc['b']:.2f}%  (B - A {100 * (acc['b'] - acc['a']):+.2f} points)"]
    if result.get("random_data"):
        lines += ["", "note: random inputs; pass --data val.npz to compare on real data"]
    return "\n".join(lines)
