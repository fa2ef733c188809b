"""Data-aware channel pruning: choose channels by what their consumers lose, then rebuild the consumers.

Both steps need only unlabelled calibration inputs (``compress --channels F --calib DATA``):

- **selection**: a channel's score is the variance it feeds each consumer, ``var(x_c) * ||W[:, c]||^2``, summed
  over the consumers of its group (channel-mixing layers: Conv with group 1, Gemm, 2-D MatMul). A channel that is
  nearly constant costs nothing to remove once its mean is folded into the consumer's bias; the L1 norm of the
  producer's filters (the data-free default) cannot see that.
- **reconstruction** (He et al. 2017, ThiNet): visiting consumers in graph order, refit each one's weights and
  bias by ridge least squares so that, on the *pruned* network's inputs, it reproduces the *original*
  network's output at sampled positions. Errors do not pile up layer after layer, and the removed channels'
  mean contribution moves into the bias.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np
from onnx import ModelProto

from ..ortutil import make_session
from ._layers import attr, get_array, set_array

ROWS_PER_SAMPLE = 48     # sampled output positions per calibration input and consumer
MAX_FEATURES = 4096      # a consumer with more inputs (C * kh * kw) keeps its weights, bias refit only
RIDGE = 1e-3             # relative to the mean diagonal of X^T X


def run_outputs(model: ModelProto, x: np.ndarray, names: Sequence[str], reduce: Callable) -> List[list]:
    """Run ``model`` on ``x`` (in batches of the model's static batch size, else one sample at a time; a remainder
    that does not fill a static batch is dropped) and collect ``reduce(name, i, array [1, ...])`` per tensor and
    sample ``i``."""
    names = list(dict.fromkeys(names))
    have = {o.name for o in model.graph.output}
    sess = make_session(model, extra_outputs=[n for n in names if n not in have])
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 1
    out: List[list] = [[] for _ in names]
    for s in range(0, len(x) - batch + 1, batch):
        for k, arr in enumerate(sess.run(names, {inp.name: x[s:s + batch]})):
            for j in range(batch):
                out[k].append(reduce(names[k], s + j, arr[j:j + 1]))
    return out


def consumer_weight_norms(model: ModelProto, node) -> np.ndarray:
    """Per input feature of a consumer: the squared norm of the weights reading it."""
    w = get_array(model, node.input[1]).astype(np.float64)
    if node.op_type == "Conv":
        return (w ** 2).sum(axis=(0,) + tuple(range(2, w.ndim)))
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return (w ** 2).sum(axis=0)
    return (w ** 2).sum(axis=1)


def activation_scores(model: ModelProto, consumers, x: np.ndarray) -> Dict[str, np.ndarray]:
    """Per consumer input tensor: ``var(x_c) * ||W[:, c]||^2`` per feature (axis 1: channels, or the features
    of a flattened tensor), summed over its consumers ``[(node, input tensor)]``."""
    tensors = sorted({t for _, t in consumers})

    def stats(name, i, arr):
        a = arr.reshape(arr.shape[0], arr.shape[1], -1).astype(np.float64)
        return a.sum(axis=(0, 2)), (a ** 2).sum(axis=(0, 2)), a.shape[0] * a.shape[2]
    got = dict(zip(tensors, run_outputs(model, x, tensors, stats)))
    scores: Dict[str, np.ndarray] = {}
    for node, t in consumers:
        s1 = sum(r[0] for r in got[t])
        s2 = sum(r[1] for r in got[t])
        n = sum(r[2] for r in got[t])
        var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
        norms = consumer_weight_norms(model, node)
        if norms.shape != var.shape:
            continue
        scores[t] = scores.get(t, 0.0) + var * norms
    return scores


def _conv_geometry(node, w_shape):
    k = list(w_shape[2:])
    s = list(attr(node, "strides", None) or [1] * len(k))
    d = list(attr(node, "dilations", None) or [1] * len(k))
    p = list(attr(node, "pads", None) or [0] * (2 * len(k)))
    return k, s, d, p


def _patches(node, w_shape, arr: np.ndarray, pos: np.ndarray, out_hw) -> np.ndarray:
    """Rows [P, C * kh * kw] of a 2-D convolution's input ``arr`` [1, C, H, W] at output positions ``pos``."""
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = _conv_geometry(node, w_shape)
    xp = np.pad(arr[0], ((0, 0), (pt, pb), (pl, pr)))
    oh, ow = pos // out_hw[1], pos % out_hw[1]
    ih = oh[:, None] * sh + np.arange(kh)[None, :] * dh
    iw = ow[:, None] * sw + np.arange(kw)[None, :] * dw
    rows = xp[:, ih[:, :, None], iw[:, None, :]]          # [C, P, kh, kw]
    return rows.transpose(1, 0, 2, 3).reshape(len(pos), -1)


def _supported(node) -> bool:
    if node.op_type == "Conv":
        auto = attr(node, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        return attr(node, "group", 1) == 1 and auto == "NOTSET"
    if node.op_type == "Gemm":
        return attr(node, "alpha", 1.0) == 1.0 and attr(node, "beta", 1.0) == 1.0 and not attr(node, "transA", 0)
    return node.op_type == "MatMul"


def reconstruct(teacher: ModelProto, pruned: ModelProto, consumers, out_index: Callable, x: np.ndarray,
                seed: int = 0) -> List[dict]:
    """Refit every consumer of pruned channels in ``pruned`` (in place, in graph order) by ridge least squares
    against ``teacher``'s outputs; ``out_index(tensor)`` gives the kept output channels of a consumer's output.

    Returns one row per consumer: its name, features, rows, and the relative error before and after."""
    by_out = {n.output[0]: n for n in pruned.graph.node}
    nodes = [by_out[n.output[0]] for n, _ in consumers if _supported(n)]
    rng = np.random.default_rng(seed)
    positions: Dict[str, list] = {}
    out_hw: Dict[str, tuple] = {}

    def take_y(name, i, arr):
        if arr.ndim == 2:
            return arr.astype(np.float64)
        flat = arr.reshape(arr.shape[1], -1)
        out_hw[name] = arr.shape[2:]
        pos = positions.setdefault(name, [None] * len(x))  # the samples a static batch leaves out stay None
        pos[i] = np.sort(rng.choice(flat.shape[1], min(ROWS_PER_SAMPLE, flat.shape[1]), replace=False))
        return flat[:, pos[i]].T.astype(np.float64)
    targets = dict(zip([n.output[0] for n in nodes], run_outputs(teacher, x, [n.output[0] for n in nodes], take_y)))
    rows = []
    for node in nodes:
        y = np.concatenate(targets[node.output[0]])
        idx = out_index(node.output[0])
        if idx is not None and len(idx) != y.shape[1]:
            y = y[:, idx]
        rows.append(_refit(pruned, node, x, y, positions.get(node.output[0]), out_hw.get(node.output[0])))
    return rows


def _refit(model: ModelProto, node, x: np.ndarray, y: np.ndarray, pos, out_hw) -> dict:
    """Least-squares weights (and bias) of one consumer from the pruned model's inputs to the targets ``y``
    (sampled at output positions ``pos`` of an ``out_hw`` map for a convolution)."""
    w = get_array(model, node.input[1])
    if node.op_type == "Conv" and w.ndim != 4:
        return {"node": node.name or node.output[0], "skipped": "not a 2-D convolution"}

    def take_x(name, i, arr):
        if arr.ndim == 2 or pos is None:
            return arr.reshape(arr.shape[0], -1).astype(np.float64)
        return _patches(node, w.shape, arr, pos[i], out_hw).astype(np.float64)
    bias = node.input[2] if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] else None
    w2 = w.reshape(w.shape[0], -1).T if node.op_type == "Conv" else (w.T if attr(node, "transB", 0) else w)
    if bias and get_array(model, bias).size != w2.shape[1]:
        return {"node": node.name or node.output[0], "skipped": "bias not per output feature"}
    a = np.concatenate(run_outputs(model, x, [node.input[0]], take_x)[0])
    b0 = get_array(model, bias).astype(np.float64).reshape(-1) if bias else np.zeros(w2.shape[1])
    before = _rel_err(a @ w2 + b0, y)
    if a.shape[1] > MAX_FEATURES:
        beta_w, beta_b = w2, b0 + (y - a @ w2 - b0).mean(axis=0) if bias else b0
    else:
        design = np.hstack([a, np.ones((len(a), 1))]) if bias else a
        gram = design.T @ design
        gram[np.diag_indices_from(gram)] += RIDGE * max(float(np.trace(gram)) / len(gram), 1e-12)
        beta = np.linalg.solve(gram, design.T @ y)
        beta_w, beta_b = (beta[:-1], beta[-1]) if bias else (beta, b0)
    after = _rel_err(a @ beta_w + beta_b, y)
    if after >= before:      # never make a layer worse than plain slicing
        beta_w, beta_b, after = w2, b0, before
    new_w = beta_w.T.reshape(w.shape) if node.op_type == "Conv" else \
        (beta_w.T if attr(node, "transB", 0) else beta_w)
    set_array(model, node.input[1], new_w.astype(w.dtype))
    if bias:
        set_array(model, bias, np.asarray(beta_b, dtype=w.dtype).reshape(get_array(model, bias).shape))
    return {"node": node.name or node.output[0], "features": int(a.shape[1]), "rows": int(len(a)),
            "error_before": before, "error_after": after}


def _rel_err(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(((pred - y) ** 2).mean() / max((y ** 2).mean(), 1e-20)))
