"""Weight sharing: per-layer 1-D k-means with linear initialisation (Han et al. 2016, section 3).

Every layer's non-zero weights are replaced by the nearest of ``2**bits`` shared values (its codebook); pruned
zeros stay zero. Defaults follow the paper: 8 bits for convolutions, 5 bits for fully-connected layers.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from onnx import ModelProto

from ..errors import InputError
from ._layers import WEIGHT_OPS, copy_model, find_layers, get_array, set_array


def kmeans_1d(values: np.ndarray, k: int, *, iterations: int = 100) -> Tuple[np.ndarray, np.ndarray]:
    """Cluster a 1-D array into at most ``k`` clusters.

    Centroids start evenly spaced between the minimum and the maximum (linear initialisation, which Han et al.
    found best because it keeps the rare large weights). When the values have at most ``k`` distinct entries the
    codebook is exactly those values, so the result reproduces the input bit for bit.

    Args:
        values: the values to cluster (any shape; flattened).
        k: the number of clusters (>= 1).
        iterations: Lloyd iterations at most (stops earlier when the assignment no longer changes).

    Returns:
        ``(codebook, labels)``: float32 centroids sorted ascending (empty clusters dropped) and, for every value,
        the index of its centroid (int64, same shape as ``values``).

    Raises:
        InputError: ``k`` < 1.
    """
    if k < 1:
        raise InputError(f"k-means needs k >= 1, got {k}")
    v = np.asarray(values).ravel()
    if v.size == 0:
        return np.zeros(0, np.float32), np.zeros(np.shape(values), np.int64)
    distinct, inverse = np.unique(v.astype(np.float32), return_inverse=True)
    if distinct.size <= k:
        return distinct, inverse.reshape(np.shape(values)).astype(np.int64)
    x = v.astype(np.float64)
    cent = np.linspace(x.min(), x.max(), k)
    labels = None
    for _ in range(iterations):
        new = np.searchsorted((cent[1:] + cent[:-1]) / 2.0, x)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        sums = np.bincount(labels, weights=x, minlength=k)
        counts = np.bincount(labels, minlength=k)
        filled = counts > 0
        cent[filled] = sums[filled] / counts[filled]
        cent = np.sort(cent)
    labels = np.searchsorted((cent[1:] + cent[:-1]) / 2.0, x)
    used = np.unique(labels)
    codebook = cent[used].astype(np.float32)
    remap = np.full(k, -1, np.int64)
    remap[used] = np.arange(used.size)
    return codebook, remap[labels].reshape(np.shape(values))


def share_weights(model: ModelProto, *, conv_bits: int = 8, fc_bits: int = 5,
                  bits: Optional[Dict[str, int]] = None, bias_bits: Optional[int] = None, iterations: int = 100,
                  ops: Iterable[str] = WEIGHT_OPS, exclude: Sequence[str] = ()) -> Tuple[ModelProto, dict]:
    """Replace each layer's non-zero weights by a ``2**bits``-entry codebook found by 1-D k-means.

    Args:
        model: the ONNX model (not modified).
        conv_bits: bits per Conv weight (codebook of ``2**conv_bits`` values).
        fc_bits: bits per Gemm / MatMul weight.
        bits: per-layer overrides ``{layer or weight name: bits}``.
        bias_bits: when given, share each layer's bias too, with a ``2**bias_bits`` codebook (off by default, as
            in the paper; on a tiny network the biases are a visible part of the stored size).
        iterations: k-means iterations at most.
        ops: op types to share.
        exclude: layer or weight names to leave alone.

    Returns:
        ``(model, report)``: per layer the bits, codebook size, non-zeros and the RMS / max change of the weights.

    Raises:
        InputError: bits outside 1..16.
    """
    bits = dict(bits or {})
    checks = list(bits.items()) + [("conv", conv_bits), ("fc", fc_bits)] + \
        ([("bias", bias_bits)] if bias_bits is not None else [])
    for name, b in checks:
        if not 1 <= int(b) <= 16:
            raise InputError(f"bits must be in 1..16, got {b}",
                             tensor=None if name in ("conv", "fc", "bias") else name)
    out = copy_model(model)
    rows, done = [], set()
    tensors = []
    for ly in find_layers(out, ops):
        if ly.name in exclude or ly.weight in exclude:
            continue
        tensors.append((ly, ly.weight, int(bits.get(ly.name, bits.get(ly.weight, conv_bits if ly.kind == "conv"
                                                                          else fc_bits)))))
        if bias_bits is not None and ly.bias is not None:
            tensors.append((ly, ly.bias, int(bits.get(ly.bias, bias_bits))))
    for ly, name, b in tensors:
        if name in done:
            continue
        done.add(name)
        w = get_array(out, name)
        nz = w != 0
        codebook, labels = kmeans_1d(w[nz], 2 ** b, iterations=iterations)
        shared = np.zeros_like(w)
        shared[nz] = codebook[labels].astype(w.dtype)
        set_array(out, name, shared)
        diff = (shared - w).astype(np.float64)
        rows.append({"layer": ly.name, "op": ly.node.op_type, "weight": name,
                     "kind": "bias" if name == ly.bias else ly.kind, "bits": b,
                     "codebook": int(codebook.size), "params": int(w.size), "nonzero": int(nz.sum()),
                     "rms_change": float(np.sqrt(np.mean(diff ** 2))) if w.size else 0.0,
                     "max_change": float(np.abs(diff).max()) if w.size else 0.0})
    if not rows:
        raise InputError("the model has no Conv/Gemm/MatMul weight initializers to share")
    return out, {"method": "sharing", "conv_bits": conv_bits, "fc_bits": fc_bits, "bias_bits": bias_bits,
                 "layers": rows}
