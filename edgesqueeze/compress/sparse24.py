"""2:4 structured sparsity: in every group of 4 consecutive input channels keep the 2 largest magnitudes.

This is the pattern Ampere sparse tensor cores (Orin: ``BuilderFlag.SPARSE_WEIGHTS`` / ``kSPARSE_WEIGHTS``) accept:
for a Conv weight ``[K, C, R, S]`` the groups run along ``C`` for every output channel and kernel position; for a
Gemm / MatMul weight they run along the reduction (input-feature) dimension.
"""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np
from onnx import ModelProto

from ._layers import WEIGHT_OPS, Layer, copy_model, find_layers, get_array, set_array


def input_axis(layer: Layer) -> int:
    """The axis of ``layer``'s weight that indexes input channels / features (the 2:4 group axis)."""
    if layer.node.op_type == "Conv":
        return 1
    if layer.node.op_type == "Gemm":
        return 1 if layer.trans_b else 0
    return 0  # MatMul: X @ W, W is [in, out]


def mask_2_4(weight: np.ndarray, axis: int) -> np.ndarray:
    """Boolean keep-mask: 2 largest magnitudes of every 4 consecutive entries along ``axis``.

    Ties keep the earlier position, so the mask is deterministic. ``weight.shape[axis]`` must be a multiple of 4.
    """
    w = np.moveaxis(np.abs(weight), axis, -1)
    groups = w.reshape(w.shape[:-1] + (w.shape[-1] // 4, 4))
    order = np.argsort(-groups, axis=-1, kind="stable")
    ranks = np.argsort(order, axis=-1, kind="stable")
    keep = (ranks < 2).reshape(w.shape)
    return np.moveaxis(keep, -1, axis)


def is_2_4(weight: np.ndarray, axis: int) -> bool:
    """True when every group of 4 consecutive entries along ``axis`` has at most 2 non-zeros."""
    if weight.shape[axis] % 4:
        return False
    w = np.moveaxis(weight != 0, axis, -1)
    groups = w.reshape(w.shape[:-1] + (w.shape[-1] // 4, 4))
    return bool((groups.sum(axis=-1) <= 2).all())


def sparsify_2_4(model: ModelProto, *, ops: Iterable[str] = WEIGHT_OPS) -> Tuple[ModelProto, dict]:
    """Apply 2:4 structured sparsity to every Conv / Gemm / MatMul weight whose input-channel count allows it.

    Args:
        model: the ONNX model (not modified).
        ops: which op types to sparsify.

    Returns:
        ``(model, report)``; ``report["changed"]`` lists the sparsified layers (name, weight, shape, sparsity),
        ``report["skipped"]`` the layers left dense with the reason (input channels per group % 4 != 0).
    """
    out = copy_model(model)
    changed, skipped, done = [], [], set()
    for ly in find_layers(out, ops):
        axis = input_axis(ly)
        w = get_array(out, ly.weight)
        entry = {"layer": ly.name, "op": ly.node.op_type, "weight": ly.weight, "shape": list(w.shape)}
        if ly.weight in done:
            continue
        if w.shape[axis] % 4:
            skipped.append(dict(entry, reason=f"input channels {w.shape[axis]} not a multiple of 4"))
            continue
        done.add(ly.weight)
        w = np.where(mask_2_4(w, axis), w, np.zeros_like(w))
        set_array(out, ly.weight, w)
        changed.append(dict(entry, axis=axis, sparsity=round(float(np.mean(w == 0)), 6)))
    params = sum(int(np.prod(c["shape"])) for c in changed)
    report = {"method": "2:4", "changed": changed, "skipped": skipped,
              "totals": {"layers_changed": len(changed), "layers_skipped": len(skipped), "params_sparse": params}}
    return out, report
