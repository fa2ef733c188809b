"""Low-rank factorisation by truncated SVD: Gemm / MatMul / 1x1 Conv into two thinner layers, and optionally a
K x K Conv into a K x 1 followed by a 1 x K Conv (Jaderberg et al. 2014, scheme 2; Tai et al. 2016)."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import ModelProto, helper

from ..errors import InputError
from ._layers import WEIGHT_OPS, add_initializer, attr, copy_model, find_layers, get_array, reinfer, unique_name


def choose_rank(s: np.ndarray, m: int, n: int, *, energy: Optional[float], ratio: Optional[float],
                rank: Optional[int]) -> int:
    """Pick the rank for singular values ``s`` of an ``m x n`` matrix.

    ``rank`` wins when given; else ``ratio`` (factorised params <= ratio * m * n); else ``energy`` (smallest rank
    whose squared singular values keep that fraction of the total).
    """
    full = len(s)
    if rank is not None:
        return max(1, min(int(rank), full))
    if ratio is not None:
        return max(1, min(full, int(ratio * m * n // (m + n))))
    total = float(np.sum(s.astype(np.float64) ** 2))
    if total == 0.0:
        return 1
    kept = np.cumsum(s.astype(np.float64) ** 2) / total
    return int(min(full, np.searchsorted(kept, energy - 1e-12) + 1))


def _split(mat: np.ndarray, r: int) -> Tuple[np.ndarray, np.ndarray, float]:
    """``mat`` [m, n] ~= A [m, r] @ B [r, n], singular values shared as sqrt on both sides; returns energy kept."""
    u, s, vt = np.linalg.svd(mat.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:r])
    total = float(np.sum(s ** 2))
    return (u[:, :r] * root).astype(np.float32), (root[:, None] * vt[:r]).astype(np.float32), \
        float(np.sum(s[:r] ** 2) / total) if total else 1.0


def low_rank(model: ModelProto, energy: float = 0.9, *, ratio: Optional[float] = None, rank: Optional[int] = None,
             spatial: bool = False, always: bool = False, ops: Iterable[str] = WEIGHT_OPS,
             exclude: Sequence[str] = ()) -> Tuple[ModelProto, dict]:
    """Factorise weight layers by truncated SVD.

    Args:
        model: the ONNX model (not modified).
        energy: keep the smallest rank whose singular values hold this fraction of the squared-norm energy.
        ratio: instead of ``energy``: choose the rank so the two factors hold at most ``ratio`` of the params.
        rank: instead of both: this rank everywhere (capped at the full rank).
        spatial: also split K x K convolutions (group 1) into K x 1 then 1 x K.
        always: factorise even when the factors hold more parameters than the layer (by default such layers are
            skipped).
        ops: op types to consider (Gemm, MatMul, Conv).
        exclude: layer or weight names to leave alone.

    Returns:
        ``(model, report)``: per factorised layer the rank, full rank, energy kept and params before/after; the
        skipped layers with the reason.

    Raises:
        InputError: ``energy`` outside (0, 1], ``ratio`` outside (0, 1) or ``rank`` < 1.
    """
    if not 0.0 < energy <= 1.0:
        raise InputError(f"low-rank energy must be in (0, 1], got {energy}")
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise InputError(f"low-rank ratio must be in (0, 1), got {ratio}")
    if rank is not None and rank < 1:
        raise InputError(f"rank must be >= 1, got {rank}")
    out = copy_model(model)
    replace = {}
    rows, skipped = [], []
    counts = {}
    for ly in find_layers(out, ops):
        counts[ly.weight] = counts.get(ly.weight, 0) + 1
    for ly in find_layers(out, ops):
        node, w = ly.node, get_array(out, ly.weight)
        entry = {"layer": ly.name, "op": node.op_type, "shape": list(w.shape)}
        if ly.name in exclude or ly.weight in exclude:
            continue
        why = _unsupported(node, w, spatial, counts[ly.weight])
        if why:
            skipped.append(dict(entry, reason=why))
            continue
        if node.op_type == "Conv" and w.shape[2:] != (1, 1):
            mat = w.transpose(1, 2, 0, 3).reshape(w.shape[1] * w.shape[2], w.shape[0] * w.shape[3])
        elif node.op_type == "Conv":
            mat = w[:, :, 0, 0].T
        elif node.op_type == "Gemm":
            mat = (w.T if ly.trans_b else w) * float(attr(node, "alpha", 1.0))
        else:
            mat = w
        m, n = mat.shape
        s = np.linalg.svd(mat.astype(np.float64), compute_uv=False)
        r = choose_rank(s, m, n, energy=energy, ratio=ratio, rank=rank)
        before, after = int(w.size), int(r * (m + n))
        if after >= before and not always:
            skipped.append(dict(entry, reason=f"rank {r} of {len(s)} saves nothing ({after} >= {before} params)"))
            continue
        a, b, kept = _split(mat, r)
        replace[ly.index] = _factor_nodes(out, ly, w, a, b, r)
        rows.append(dict(entry, rank=r, full_rank=int(len(s)), energy=round(kept, 6), params_before=before,
                         params_after=after))
    replaced = {out.graph.node[i].input[1] for i in replace}  # the weights the factors take over
    new_nodes = []
    for i, node in enumerate(out.graph.node):
        new_nodes += replace.get(i, [node])
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    used = {i for nd in out.graph.node for i in nd.input} | {o.name for o in out.graph.output}
    keep = [t for t in out.graph.initializer if t.name in used or t.name not in replaced]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    out = reinfer(out)
    report = {"method": "low-rank", "energy": energy, "ratio": ratio, "rank": rank, "layers": rows,
              "skipped": skipped,
              "totals": {"layers": len(rows), "params_before": sum(r["params_before"] for r in rows),
                         "params_after": sum(r["params_after"] for r in rows)}}
    return out, report


def _unsupported(node: onnx.NodeProto, w: np.ndarray, spatial: bool, uses: int) -> Optional[str]:
    if uses > 1:
        return "weight shared with another node"
    if node.op_type == "Gemm" and attr(node, "transA", 0):
        return "Gemm with transA"
    if node.op_type == "Conv":
        if attr(node, "group", 1) != 1:
            return "grouped convolution"
        if w.ndim != 4:
            return f"{w.ndim - 2}-D convolution"
        if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return "auto_pad"
        if w.shape[2:] != (1, 1) and not spatial:
            return "K x K convolution (use spatial=True / --low-rank-spatial)"
    return None


def _factor_nodes(model: ModelProto, ly, w: np.ndarray, a: np.ndarray, b: np.ndarray, r: int):
    """Two nodes computing ``ly`` with factors ``a`` [m, r] and ``b`` [r, n] (``mat = a @ b``)."""
    node = ly.node
    base = ly.name
    mid = unique_name(model, f"{base}.lowrank")
    name1, name2 = unique_name(model, f"{base}.lr1"), unique_name(model, f"{base}.lr2")
    if node.op_type == "MatMul":
        w1 = add_initializer(model, f"{ly.weight}.lr1", a)
        w2 = add_initializer(model, f"{ly.weight}.lr2", b)
        return [helper.make_node("MatMul", [node.input[0], w1], [mid], name=name1),
                helper.make_node("MatMul", [mid, w2], list(node.output), name=name2)]
    if node.op_type == "Gemm":
        t = ly.trans_b
        w1 = add_initializer(model, f"{ly.weight}.lr1", a.T if t else a)
        w2 = add_initializer(model, f"{ly.weight}.lr2", b.T if t else b)
        first = helper.make_node("Gemm", [node.input[0], w1], [mid], name=name1, transB=int(t))
        rest = list(node.input[2:3])
        second = helper.make_node("Gemm", [mid, w2] + rest, list(node.output), name=name2, transB=int(t))
        if rest:
            second.attribute.extend([helper.make_attribute("beta", float(attr(node, "beta", 1.0)))])
        return [first, second]
    bias = list(node.input[2:3])
    kh, kw = w.shape[2:]
    strides = list(attr(node, "strides", [1, 1]))
    pads = list(attr(node, "pads", [0, 0, 0, 0]))
    dil = list(attr(node, "dilations", [1, 1]))
    if (kh, kw) == (1, 1):
        w1 = add_initializer(model, f"{ly.weight}.lr1", a.T.reshape(r, w.shape[1], 1, 1))
        w2 = add_initializer(model, f"{ly.weight}.lr2", b.T.reshape(w.shape[0], r, 1, 1))
        return [helper.make_node("Conv", [node.input[0], w1], [mid], name=name1, kernel_shape=[1, 1],
                                 strides=strides, pads=pads, dilations=dil),
                helper.make_node("Conv", [mid, w2] + bias, list(node.output), name=name2, kernel_shape=[1, 1])]
    cin, cout = w.shape[1], w.shape[0]
    vert = a.reshape(cin, kh, r).transpose(2, 0, 1)[..., None]           # [r, cin, kh, 1]
    horiz = b.reshape(r, cout, kw).transpose(1, 0, 2)[:, :, None, :]     # [cout, r, 1, kw]
    w1 = add_initializer(model, f"{ly.weight}.kx1", vert)
    w2 = add_initializer(model, f"{ly.weight}.1xk", horiz)
    return [helper.make_node("Conv", [node.input[0], w1], [mid], name=name1, kernel_shape=[kh, 1],
                             strides=[strides[0], 1], pads=[pads[0], 0, pads[2], 0], dilations=[dil[0], 1]),
            helper.make_node("Conv", [mid, w2] + bias, list(node.output), name=name2, kernel_shape=[1, kw],
                             strides=[1, strides[1]], pads=[0, pads[1], 0, pads[3]], dilations=[1, dil[1]])]
