"""Per-layer INT8 sensitivity and automatic selection of layers kept in higher precision.

``layer_sensitivity`` quantizes one layer at a time (every other layer stays float) and measures the output
error against the FP32 model on validation data. ``auto_keep`` quantizes everything, then keeps the most
sensitive layers out of INT8, worst first, until the accuracy drop is within a budget.
"""
from __future__ import annotations

import sys
from typing import Dict, List, Mapping, Optional, Sequence

from onnx import ModelProto

from ..errors import InputError
from .evaluate import evaluate
from .qdq import node_label, plan_qdq, quantizable_nodes, quantize_qdq


def _score(result: dict) -> float:
    """Mean of the outputs' SQNR in dB (higher is better); +inf when exact."""
    errs = result["output_error"] or {}
    vals = [e["sqnr_db"] if e["sqnr_db"] is not None else float("inf") for e in errs.values()]
    return sum(vals) / len(vals) if vals else float("inf")


def layer_sensitivity(model: ModelProto, amax: Mapping[str, float], reader, *,
                      nodes: Optional[Sequence[str]] = None, progress: bool = False) -> List[dict]:
    """Rank layers by the error INT8 causes when only that layer is quantized.

    Args:
        model: FP32 model.
        amax: calibrated ranges.
        reader: validation data (labels optional).
        nodes: layers to test (default: every quantizable layer).
        progress: show a progress bar.

    Returns:
        One dict per layer, most sensitive first: ``{"node", "op", "sqnr_db", "max_rel", "agreement", "top1"}``.

    Raises:
        InputError: a named layer is not quantizable.
    """
    all_nodes = quantizable_nodes(model)
    chosen = list(nodes) if nodes is not None else all_nodes
    bad = [n for n in chosen if n not in all_nodes]
    if bad:
        raise InputError(f"'{bad[0]}' is not a quantizable layer; these are: {', '.join(all_nodes)}")
    ops = {node_label(n, i): n.op_type for i, n in enumerate(model.graph.node)}
    rows = []
    it = chosen
    if progress:
        from tqdm import tqdm

        it = tqdm(chosen, desc="sensitivity", unit="layer", leave=False, disable=not sys.stderr.isatty())
    for label in it:
        plan = plan_qdq(model, amax, keep=[n for n in all_nodes if n != label])
        if not plan.nodes:
            rows.append({"node": label, "op": ops.get(label), "sqnr_db": None, "max_rel": None, "agreement": None,
                         "top1": None, "skipped": plan.skipped.get(label)})
            continue
        res = evaluate(quantize_qdq(model, amax, plan=plan), reader, reference=model)
        worst = max(e["max_rel"] for e in res["output_error"].values())
        rows.append({"node": label, "op": ops.get(label), "sqnr_db": _score(res), "max_rel": worst,
                     "agreement": res["agreement"], "top1": res["top1"]})
    rows.sort(key=lambda r: (r["sqnr_db"] is None, r["sqnr_db"] if r["sqnr_db"] is not None else 0.0))
    return rows


def auto_keep(model: ModelProto, amax: Mapping[str, float], reader, max_drop: float, *,
              keep: Sequence[str] = (), ranking: Optional[List[dict]] = None, progress: bool = False) -> Dict:
    """Keep the most sensitive layers out of INT8 until the accuracy drop is at most ``max_drop`` points.

    The drop is in top-1 points when the data has labels, else in points of top-1 agreement with FP32.

    Args:
        model: FP32 model. amax: calibrated ranges. reader: validation data.
        max_drop: allowed drop, in percentage points (>= 0).
        keep: layers kept from the start (--keep).
        ranking: a :func:`layer_sensitivity` result (computed when None).
        progress: show progress bars.

    Returns:
        ``{"keep": [layers], "fp32": metric, "int8": metric, "drop": points, "metric": "top1"|"agreement",
        "steps": [{"keep": n, "metric": value}], "met": bool, "ranking": ranking}``.

    Raises:
        InputError: a negative budget.
    """
    if max_drop < 0:
        raise InputError(f"--auto-keep needs a non-negative accuracy drop, got {max_drop}")
    ranking = ranking if ranking is not None else layer_sensitivity(model, amax, reader, progress=progress)
    base = evaluate(model, reader)
    metric = "top1" if base["top1"] is not None else "agreement"
    ref = base["top1"] if metric == "top1" else 100.0
    kept = list(keep)
    order = [r["node"] for r in ranking if r["node"] not in kept]
    steps = []
    while True:
        plan = plan_qdq(model, amax, keep=kept)
        if not plan.nodes:
            value = ref
        else:
            value = evaluate(quantize_qdq(model, amax, plan=plan), reader, reference=model)[metric]
        steps.append({"keep": len(kept), "metric": value})
        if ref - value <= max_drop or not order:
            break
        kept.append(order.pop(0))
    return {"keep": kept, "fp32": ref, "int8": value, "drop": ref - value, "metric": metric, "steps": steps,
            "met": ref - value <= max_drop, "ranking": ranking}
