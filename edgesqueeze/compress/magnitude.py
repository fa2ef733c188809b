"""Unstructured magnitude pruning of Conv / Gemm / MatMul weights (Han et al. 2015)."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from onnx import ModelProto

from ..errors import InputError
from ._layers import WEIGHT_OPS, copy_model, find_layers, get_array, set_array


def _smallest_mask(magnitudes: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` smallest entries (ties broken by position, so the result is deterministic)."""
    mask = np.zeros(magnitudes.size, dtype=bool)
    if count > 0:
        order = np.argsort(magnitudes.ravel(), kind="stable")
        mask[order[:count]] = True
    return mask.reshape(magnitudes.shape)


def prune_magnitude(model: ModelProto, sparsity: float = 0.8, *, scope: str = "layer",
                    std_q: Optional[float] = None, per_layer: Optional[Dict[str, float]] = None,
                    ops: Iterable[str] = WEIGHT_OPS, exclude: Sequence[str] = ()) -> Tuple[ModelProto, dict]:
    """Set the smallest-magnitude weights to zero.

    Args:
        model: the ONNX model (not modified).
        sparsity: fraction of weights to zero (0 <= sparsity < 1), per layer or over all layers.
        scope: ``"layer"`` (every layer gets ``sparsity``) or ``"global"`` (one magnitude threshold over all
            layers: layers with small weights lose more).
        std_q: when given, use Han et al.'s per-layer threshold ``std_q * std(W)`` instead of ``sparsity``.
        per_layer: per-layer sparsity overrides ``{layer or weight name: sparsity}``.
        ops: which op types to prune.
        exclude: layer or weight names to leave dense.

    Returns:
        ``(pruned model, report)``; the report lists every layer's size and resulting sparsity and the totals.

    Raises:
        InputError: a sparsity outside [0, 1), an unknown scope, a negative ``std_q``, or no prunable layer.
    """
    if scope not in ("layer", "global"):
        raise InputError(f"unknown pruning scope '{scope}' (use 'layer' or 'global')")
    if std_q is None and not 0.0 <= sparsity < 1.0:
        raise InputError(f"sparsity must be in [0, 1), got {sparsity}")
    if std_q is not None and std_q < 0:
        raise InputError(f"std_q must be >= 0, got {std_q}")
    per_layer = dict(per_layer or {})
    for name, s in per_layer.items():
        if not 0.0 <= s < 1.0:
            raise InputError(f"sparsity must be in [0, 1), got {s}", tensor=name)
    out = copy_model(model)
    layers = [ly for ly in find_layers(out, ops) if ly.name not in exclude and ly.weight not in exclude]
    seen, unique = set(), []
    for ly in layers:  # a weight shared by two nodes is pruned once
        if ly.weight not in seen:
            seen.add(ly.weight)
            unique.append(ly)
    if not unique:
        raise InputError("the model has no Conv/Gemm/MatMul weight initializers to prune")
    weights = {ly.weight: get_array(out, ly.weight) for ly in unique}
    masks = {}
    if std_q is not None:
        for ly in unique:
            w = weights[ly.weight]
            masks[ly.weight] = np.abs(w) < std_q * float(np.std(w))
    elif scope == "global":
        mags = np.concatenate([np.abs(weights[ly.weight]).ravel() for ly in unique
                               if ly.name not in per_layer and ly.weight not in per_layer] or [np.zeros(0)])
        count = int(round(sparsity * mags.size))
        glob = _smallest_mask(mags, count)
        pos = 0
        for ly in unique:
            w = weights[ly.weight]
            if ly.name in per_layer or ly.weight in per_layer:
                continue
            masks[ly.weight] = glob[pos:pos + w.size].reshape(w.shape)
            pos += w.size
    for ly in unique:
        if ly.weight in masks:
            continue
        s = per_layer.get(ly.name, per_layer.get(ly.weight, sparsity))
        w = weights[ly.weight]
        masks[ly.weight] = _smallest_mask(np.abs(w), int(round(s * w.size)))
    rows, total, zeros = [], 0, 0
    for ly in unique:
        w = weights[ly.weight]
        before = int(np.count_nonzero(w == 0))
        w = np.where(masks[ly.weight], np.zeros_like(w), w)
        set_array(out, ly.weight, w)
        nz = int(np.count_nonzero(w))
        total += w.size
        zeros += w.size - nz
        rows.append({"layer": ly.name, "op": ly.node.op_type, "weight": ly.weight, "shape": list(w.shape),
                     "params": int(w.size), "zeros_before": before, "nonzero": nz,
                     "sparsity": round(1.0 - nz / w.size, 6)})
    report = {"method": "magnitude", "scope": "std" if std_q is not None else scope,
              "target": None if std_q is not None else sparsity, "std_q": std_q, "layers": rows,
              "totals": {"params": total, "nonzero": total - zeros, "sparsity": round(zeros / max(total, 1), 6)}}
    return out, report
