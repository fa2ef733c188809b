"""BatchNormalization folding (inference mode).

``BN(y) = (y - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)`` is folded into the preceding Conv,
ConvTranspose, Gemm or (2-D) MatMul by scaling its output channels' weights and shifting its bias. A BN with no
producer to fold into (pre-activation BNs, as in DenseNet) becomes a per-channel ``Mul`` + ``Add``.
Legacy attributes (``spatial``, ``is_test``, ``consumed_inputs`` of opsets 1-7) are honoured; a BN in training
mode, or with its running-statistics outputs in use, is left alone.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import const, const_info, new_const, new_var, producer, sole_consumer, take_over_outputs
from .registry import register


def bn_scale_shift(bn: gs.Node) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(s, t)`` with ``BN(y) = y * s + t`` per channel, in float64; None when BN cannot be folded."""
    if bn.op != "BatchNormalization" or len(bn.inputs) != 5:
        return None
    if any(o.outputs for o in bn.outputs[1:]) or bn.attrs.get("training_mode", 0):
        return None
    if bn.attrs.get("spatial", 1) != 1 and any(const(t) is not None and const(t).ndim > 1 for t in bn.inputs[1:]):
        return None  # spatial=0 with per-element statistics
    vals = [const(t) for t in bn.inputs[1:]]
    if any(v is None for v in vals) or any(v.ndim > 1 for v in vals):
        return None
    gamma, beta, mean, var = (np.asarray(v, np.float64).reshape(-1) for v in vals)
    if len({gamma.size, beta.size, mean.size, var.size}) != 1:
        return None
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _bias(node: gs.Node, index: int, channels: int) -> np.ndarray:
    if len(node.inputs) > index and node.inputs[index].name:
        b = const(node.inputs[index])
        return np.asarray(b, np.float64).reshape(-1) if b is not None else None
    return np.zeros(channels)


def fold_scale_into(node: gs.Node, scale: np.ndarray, shift: np.ndarray, ctx) -> bool:
    """Rewrite ``node`` (Conv / ConvTranspose / Gemm / MatMul+Add-less) so that its output becomes
    ``out * scale + shift`` per output channel. Returns False when the node cannot take it."""
    info = const_info(node.inputs[1]) if len(node.inputs) > 1 else None
    if info is None or not np.issubdtype(info.dtype, np.floating):
        return False
    w = const(node.inputs[1])
    dtype, c = w.dtype, scale.size
    # float32 math for float32/float16 weights: within 1 ulp of float64-then-cast (measured: a quarter of the
    # weights differ by 1 ulp), which changes no output of PP-OCRv4 det beyond its rounding noise (issue 13)
    work = np.float32 if dtype in (np.float16, np.float32) else np.float64
    scale_w = scale.astype(work)
    if node.op == "Conv":
        if w.shape[0] != c:
            return False
        b = _bias(node, 2, c)
        if b is None:
            return False
        w_new = w.astype(work, copy=False) * scale_w.reshape((c,) + (1,) * (w.ndim - 1))
        b_new = b * scale + shift
    elif node.op == "ConvTranspose":
        g = int(node.attrs.get("group", 1))
        if w.shape[1] * g != c:
            return False
        b = _bias(node, 2, c)
        if b is None:
            return False
        grouped = w.astype(work, copy=False).reshape((g, w.shape[0] // g, w.shape[1]) + w.shape[2:])
        w_new = (grouped * scale_w.reshape((g, 1, w.shape[1]) + (1,) * (w.ndim - 2))).reshape(w.shape)
        b_new = b * scale + shift
    elif node.op == "Gemm":
        trans_b = int(node.attrs.get("transB", 0))
        n_out = w.shape[0] if trans_b else w.shape[1]
        if w.ndim != 2 or n_out != c:
            return False
        beta = float(node.attrs.get("beta", 1.0))
        w_new = w.astype(work, copy=False) * (scale_w[:, None] if trans_b else scale_w[None, :])
        if len(node.inputs) > 2 and node.inputs[2].name:
            bias = const(node.inputs[2])
            if bias is None or bias.ndim > 1 or bias.size not in (1, c):
                return False
            b = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (c,)) * beta
        else:
            b = np.zeros(c)
        # Gemm computes alpha * A B + beta * C: the scaled B keeps alpha, the new C takes beta (set to 1)
        b_new = b * scale + shift
        node.attrs["beta"] = 1.0
    else:
        return False
    node.inputs[1] = new_const(ctx, f"{node.inputs[1].name}_folded", w_new.astype(dtype))
    bias = new_const(ctx, f"{node.name or node.op}_bias_folded", b_new.astype(dtype))
    if len(node.inputs) > 2:
        node.inputs[2] = bias
    else:
        node.inputs.append(bias)
    return True


def _fold_into_matmul(graph, mm: gs.Node, bn: gs.Node, scale, shift, ctx) -> bool:
    w = const(mm.inputs[1])
    out = mm.outputs[0]
    if w is None or w.ndim != 2 or w.shape[1] != scale.size or out.shape is None or len(out.shape) != 2:
        return False  # BN normalises axis 1, which is MatMul's last axis only for 2-D outputs
    mm.inputs[1] = new_const(ctx, f"{mm.inputs[1].name}_folded", (w.astype(np.float64) * scale).astype(w.dtype))
    mid = new_var(ctx, f"{out.name}_scaled", out)
    add = gs.Node("Add", ctx.unique(f"{bn.name or 'bn'}_shift"),
                  inputs=[mid, new_const(ctx, f"{bn.name or 'bn'}_shift", shift.astype(w.dtype))],
                  outputs=list(bn.outputs[:1]))
    mm.outputs[0] = mid
    bn.outputs.clear()
    bn.inputs.clear()
    graph.nodes.append(add)
    return True


def _to_mul_add(graph, bn: gs.Node, scale, shift, ctx) -> bool:
    x = bn.inputs[0]
    rank = len(x.shape) if x.shape is not None else None
    dtype = const(bn.inputs[1]).dtype
    if rank is None or rank < 2 or not np.issubdtype(dtype, np.floating):
        return False
    shape = (scale.size,) + (1,) * (rank - 2)
    base = bn.name or "bn"
    mid = new_var(ctx, f"{base}_scaled", bn.outputs[0])
    mul = gs.Node("Mul", ctx.unique(f"{base}_mul"), inputs=[x, new_const(ctx, f"{base}_scale",
                                                                           scale.reshape(shape).astype(dtype))],
                  outputs=[mid])
    add = gs.Node("Add", ctx.unique(f"{base}_add"), inputs=[mid, new_const(ctx, f"{base}_shift",
                                                                            shift.reshape(shape).astype(dtype))],
                  outputs=list(bn.outputs[:1]))
    bn.outputs.clear()
    bn.inputs.clear()
    graph.nodes.extend([mul, add])
    return True


@register("fold_batchnorm", description="fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul "
                                        "(else into a per-channel Mul+Add)")
def fold_batchnorm(graph, ctx):
    """Fold inference-mode BatchNormalization into the layer before it."""
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        folded = bn_scale_shift(bn)
        if folded is None:
            continue
        scale, shift = folded
        prev = producer(bn.inputs[0])
        if prev is not None and sole_consumer(graph, bn.inputs[0]) is bn and len(prev.outputs) == 1:
            if prev.op in ("Conv", "ConvTranspose", "Gemm") and fold_scale_into(prev, scale, shift, ctx):
                take_over_outputs(prev, bn)
                ctx.record(f"fold_batchnorm:{prev.op}+BatchNormalization", [prev, bn])
                continue
            if prev.op == "MatMul" and _fold_into_matmul(graph, prev, bn, scale, shift, ctx):
                ctx.record("fold_batchnorm:MatMul+BatchNormalization", [prev, bn])
                continue
        name = bn.name
        if _to_mul_add(graph, bn, scale, shift, ctx):
            ctx.record("fold_batchnorm:BatchNormalization->Mul+Add", [name])
    return graph
