"""Channel (filter) pruning by L1 norm (Li et al. 2017) that shrinks every consumer of the pruned channels.

The pass tracks, for every tensor whose axis 1 carries channels, a *layout*: the list of channel groups it is made
of (one group per producing Conv / Gemm / MatMul; a Concat along channels joins layouts end to end). Element-wise
ops that combine two such tensors (the Add of a residual block) unite their groups, so both branches keep the same
channels. Any use the pass does not understand (a graph output, a Reshape it cannot rewrite, a grouped conv, a
Split...) freezes the groups that reach it. Each free group then keeps the channels with the largest summed L1
norm of its producers' filters, and every producer, BatchNorm, depthwise conv, bias, broadcast constant and
consumer weight is sliced to match. With calibration inputs the channels are chosen by the variance they feed
their consumers and the consumers are refitted to the original's outputs (:mod:`._channel_calib`); spare rules
keep residual trunks and pooled (squeeze-excitation) groups whole.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from onnx import ModelProto, numpy_helper

from ..errors import InputError, UnsupportedError
from ..model import infer_shapes, tensor_shape
from ._layers import attr, copy_model, get_array, initializers, reinfer, set_array, set_attr, use_counts
from ._channel_calib import activation_scores, reconstruct
from ._channel_groups import Groups, Layout, unite
from ._macs import count_macs

UNARY = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
         "Softsign", "Gelu", "Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
         "GlobalMaxPool", "LpPool", "Abs", "Neg", "Exp", "Sqrt", "Erf", "Resize", "Upsample", "Cast", "Mish",
         "ThresholdedRelu", "Celu"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Pow"}


def prune_channels(model: ModelProto, ratio: float = 0.3, *, multiple_of: int = 1, min_channels: int = 1,
                   exclude: Sequence[str] = (), spare: Sequence[str] = (),
                   calib: Optional[np.ndarray] = None) -> Tuple[ModelProto, dict]:
    """Remove the output channels with the smallest L1 norm (or, with ``calib``, the least consumer variance)
    from Conv / Gemm / MatMul layers and shrink consumers.

    Args:
        model: the ONNX model (not modified); shapes must be inferable.
        ratio: fraction of each prunable channel group to remove (0 <= ratio < 1).
        multiple_of: round the kept channel count up to a multiple of this (8 suits tensor cores).
        min_channels: never keep fewer channels in a group.
        exclude: producer node names whose channels stay (they freeze their groups).
        spare: per-layer rules that keep whole groups (reported as frozen "spared ..."): ``"residual"``,
            groups tied by a residual Add/Sum/Sub (Li et al. 2017 prune only inside residual blocks: every block
            reads and writes the trunk, so its errors add up); ``"pooled"``, groups whose producers all output
            a 1x1 map (squeeze-excitation branches: negligible MACs, and their gates scale every channel).
        calib: unlabelled inputs of the first graph input, batch axis first (the first ``MAX_CALIB``): channels are chosen by the
            variance they feed their consumers and every consumer is refitted by least squares to the original's
            outputs (:mod:`._channel_calib`); None: data-free, L1 norm of the producers' filters.

    Returns:
        ``(model, report)``: the report lists every channel group (its producers, channels before/after, or the
        reason it is frozen) and the parameter and MAC totals before and after.

    Inference-mode BatchNormalizations with private parameters are sliced with their producer; anything that
    pins every group (shared BN parameters, training-mode BNs, weights computed at run time) is an error, never
    a silent no-op.

    Raises:
        InputError: ``ratio`` outside [0, 1).
        UnsupportedError: ``ratio > 0`` but every channel group is frozen (the error names why), so pruning
            would change nothing.
    """
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"channel pruning ratio must be in [0, 1), got {ratio}")
    out = infer_shapes(copy_model(model))
    walk = _Walk(out, exclude)
    walk.run()
    for root, reason in _spared(walk, spare).items():
        walk.groups.freeze(root, reason)
    if calib is not None:
        calib = np.asarray(calib, dtype=np.float32)[:MAX_CALIB]
        _data_scores(model, walk, calib)
    keep, group_rows = _choose_channels(walk.groups, ratio, multiple_of, min_channels)
    if ratio > 0 and not keep:
        reasons = sorted({r["frozen"] for r in group_rows if r["frozen"]})
        raise UnsupportedError("channel pruning would change nothing: every channel group is frozen ("
                               + "; ".join(reasons[:4]) + (", ..." if len(reasons) > 4 else "") + ")",
                               hint="fold the graph first (edgesqueeze optimize MODEL -o folded.onnx) or use "
                                    "--prune / --sparsity 2:4")

    def indices(tensor: str) -> np.ndarray:
        return _kept_indices(walk, keep, tensor)

    params_before = sum(int(np.prod(t.dims)) for t in out.graph.initializer)
    _apply_edits(out, walk, indices)
    out = reinfer(out)
    refits = None
    if calib is not None:
        refits = reconstruct(model, out, walk.consumers, lambda t: indices(t) if t in walk.layouts else None, calib)
    params_after = sum(int(np.prod(t.dims)) for t in out.graph.initializer)
    report = {"method": "channels", "ratio": ratio, "groups": group_rows,
              "totals": {"params_before": params_before, "params_after": params_after,
                         "macs_before": count_macs(model), "macs_after": count_macs(out),
                         "groups_pruned": sum(1 for r in group_rows if r["frozen"] is None),
                         "groups_frozen": sum(1 for r in group_rows if r["frozen"] is not None)}}
    if refits is not None:
        report["selection"] = "activation variance x consumer weight norm (calibration data)"
        report["refit"] = refits
    return out, report


def _kept_indices(walk: "_Walk", keep: Dict[int, np.ndarray], tensor: str) -> np.ndarray:
    """The kept positions along axis 1 of ``tensor`` (features of a flattened tensor included)."""
    lay = walk.layouts[tensor]
    parts, off = [], 0
    for g, n in lay.segments:
        r = walk.groups.find(g)
        parts.append(off + (keep[r] if r in keep else np.arange(n)))
        off += n
    idx = np.concatenate(parts)
    if lay.rep > 1:
        idx = (idx[:, None] * lay.rep + np.arange(lay.rep)[None, :]).ravel()
    return idx


def _apply_edits(out: ModelProto, walk: "_Walk", indices) -> None:
    """Slice every recorded weight, set depthwise groups and flatten-like Reshapes to the kept channels."""
    for kind, target, axis, tensor in walk.edits:
        idx = indices(tensor)
        if len(idx) == walk.layouts[tensor].channels * walk.layouts[tensor].rep and kind != "slice":
            continue            # nothing pruned here: leave the node as it is
        if kind == "group":     # depthwise conv: group count follows the channels
            set_attr(target, "group", int(len(idx)))
        elif kind == "reshape":  # flatten-like Reshape: let the feature dim follow
            shp = get_array(out, target)
            set_array(out, target, np.array([axis, -1], dtype=shp.dtype))  # the static batch dim, then the rest
        else:
            w = get_array(out, target)
            if w.shape[axis] != len(idx):
                set_array(out, target, np.take(w, idx, axis=axis))


SPARE_RULES = ("residual", "pooled")
MAX_CALIB = 256  # calibration inputs used (the first ones): enough rows for every refit, ~1 min on a small CNN


def _spared(walk: "_Walk", spare: Sequence[str]) -> Dict[int, str]:
    """The root groups that the ``spare`` rules keep, with the reason for the report."""
    bad = [r for r in spare if r not in SPARE_RULES]
    if bad:
        raise InputError(f"unknown channel spare rule(s) {', '.join(bad)} (known: {', '.join(SPARE_RULES)})")
    out: Dict[int, str] = {}
    if "pooled" in spare:
        members: Dict[int, List[bool]] = {}
        for g, pooled in walk.pooled.items():
            members.setdefault(walk.groups.find(g), []).append(pooled)
        out.update({r: "spared: pooled branch (1x1 map)" for r, flags in members.items() if all(flags)})
    if "residual" in spare:
        for label, lay in walk.residual:
            out.update({walk.groups.find(g): f"spared: residual {label}" for g, _ in lay.segments})
    return out


def _data_scores(model: ModelProto, walk: "_Walk", calib: np.ndarray) -> None:
    """Replace the L1 scores of every group that reaches a measured consumer by its data-aware score."""
    new: Dict[int, np.ndarray] = {}
    for tensor, score in activation_scores(model, walk.consumers, calib).items():
        lay, off = walk.layouts[tensor], 0
        per_channel = score.reshape(lay.channels, lay.rep).sum(axis=1)
        for g, n in lay.segments:
            r = walk.groups.find(g)
            new[r] = new.get(r, 0.0) + per_channel[off:off + n]
            off += n
    walk.groups.scores.update({r: s for r, s in new.items() if r in walk.groups.scores})


class _Walk:
    """The channel layouts of one model: which tensors carry which channel groups, and the edits pruning needs."""

    def __init__(self, model: ModelProto, exclude: Sequence[str]) -> None:
        self.model = model
        self.exclude = exclude
        self.shapes = {vi.name: tensor_shape(vi) for vi in list(model.graph.value_info) + list(model.graph.input)
                       + list(model.graph.output)}
        self.inits = initializers(model)
        for name, t in self.inits.items():
            self.shapes[name] = list(t.dims)
        self.uses = use_counts(model)
        self.groups = Groups()
        self.layouts: Dict[str, Layout] = {}
        self.edits: List[tuple] = []  # (kind, initializer or node, axis, tensor whose layout gives the indices)
        self.consumers: List[tuple] = []  # (node, input tensor): channel-mixing layers reading tracked channels
        self.pooled: Dict[int, bool] = {}  # per producer group: its output map is 1x1 (a pooled branch)
        self.residual: List[tuple] = []    # (node label, layout) of every Add/Sum/Sub of two tracked tensors

    def freeze(self, layout: Optional[Layout], reason: str) -> None:
        """Keep every channel of the groups in ``layout`` (``reason`` goes to the report)."""
        if layout is not None:
            for g, _ in layout.segments:
                self.groups.freeze(g, reason)

    def own_init(self, name: str) -> bool:
        """True for an initializer only one node uses (so it can be sliced)."""
        return name in self.inits and self.uses.get(name, 0) == 1

    def run(self) -> None:
        """Visit every node in order; a use the pass does not handle freezes the groups reaching it."""
        for node in self.model.graph.node:
            op = node.op_type
            ins = [self.layouts.get(i) if i else None for i in node.input]
            label = node.name or node.output[0]
            if node.domain not in ("", "ai.onnx"):
                for lay in ins:
                    self.freeze(lay, f"used by custom op {op} '{label}'")
                continue
            if not _visit(node, op, ins, label, self):
                for lay in ins:
                    self.freeze(lay, f"used by {op} '{label}'")
        for o in self.model.graph.output:
            self.freeze(self.layouts.get(o.name), f"graph output '{o.name}'")


def _choose_channels(groups: Groups, ratio: float, multiple_of: int, min_channels: int):
    """Per free group the channels to keep (largest summed L1 first); the report's rows for every group."""
    keep: Dict[int, np.ndarray] = {}
    group_rows = []
    for g in range(len(groups.parent)):
        if groups.find(g) != g:
            continue
        n = groups.size[g]
        reason = groups.frozen.get(g)
        if reason is None and g not in groups.scores:
            reason = "no producer"
        if reason is None:
            k = max(min_channels, int(round(n * (1.0 - ratio))))
            if multiple_of > 1:
                k = int(np.ceil(k / multiple_of) * multiple_of)
            k = min(k, n)
            order = np.argsort(-groups.scores[g], kind="stable")
            keep[g] = np.sort(order[:k])
        if groups.producers.get(g):
            group_rows.append({"producers": groups.producers[g], "channels": n,
                               "kept": int(len(keep[g])) if g in keep else n, "frozen": reason})
    return keep, group_rows


def _visit(node, op, ins, label, walk: "_Walk") -> bool:
    """Record what ``node`` does to channel layouts; return False when it is a use the pass does not handle."""
    x = ins[0] if ins else None
    out0 = node.output[0] if node.output else None
    rank = len(walk.shapes.get(out0) or []) if out0 else 0
    for handler in _HANDLERS:  # the first that recognises the node decides
        done = handler(node, op, ins, x, out0, rank, label, walk)
        if done is not None:
            return done
    return False


def _visit_conv(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """A Conv with constant weights produces a channel group (depthwise: passes channels through)."""
    if op == "Conv" and len(node.input) > 1 and node.input[1] in walk.inits:
        w = walk.inits[node.input[1]].dims
        group = attr(node, "group", 1)
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if group > 1:
            if x is not None and group == w[0] == x.channels and w[1] == 1 and walk.own_init(node.input[1]) \
                    and (bias is None or walk.own_init(bias)) and x.rep == 1:
                walk.edits.append(("slice", node.input[1], 0, node.input[0]))  # depthwise: channels pass through
                if bias:
                    walk.edits.append(("slice", bias, 0, node.input[0]))
                walk.edits.append(("group", node, None, node.input[0]))
                walk.layouts[out0] = x
                return True
            return False
        if x is not None:
            if x.rep != 1 or not walk.own_init(node.input[1]):
                return False
            walk.edits.append(("slice", node.input[1], 1, node.input[0]))
            walk.consumers.append((node, node.input[0]))
        _produce(node, label, node.input[1], 0, bias, 0, walk, "conv")
        return True
    return None


def _visit_gemm(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """A Gemm with constant B produces a channel group."""
    if op == "Gemm" and len(node.input) > 1 and node.input[1] in walk.inits and not attr(node, "transA", 0):
        trans_b = attr(node, "transB", 0)
        if x is not None:
            if not walk.own_init(node.input[1]):
                return False
            walk.edits.append(("slice", node.input[1], 1 if trans_b else 0, node.input[0]))
            walk.consumers.append((node, node.input[0]))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        _produce(node, label, node.input[1], 0 if trans_b else 1, bias, -1, walk, "gemm")
        return True
    return None


def _visit_matmul(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """A 2-D MatMul with a constant right side produces a channel group."""
    if op == "MatMul" and len(node.input) > 1 and node.input[1] in walk.inits \
            and len(walk.inits[node.input[1]].dims) == 2 and rank == 2:
        if x is not None:
            if not walk.own_init(node.input[1]):
                return False
            walk.edits.append(("slice", node.input[1], 0, node.input[0]))
            walk.consumers.append((node, node.input[0]))
        _produce(node, label, node.input[1], 1, None, -1, walk, "matmul")
        return True
    return None


def _visit_untracked(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """A node that no channel-tracked tensor reaches."""
    if x is None and all(lay is None for lay in ins):
        return True  # nothing channel-tracked flows through this node
    return None


def _visit_unary(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """Pointwise and pooling ops keep their input's layout."""
    if op in UNARY and all(lay is None for lay in ins[1:]):
        if op in ("MaxPool",) and len(node.output) > 1 and node.output[1]:
            return False
        if op == "Resize" and len(node.input) > 3 and node.input[3]:
            return False  # explicit output sizes name the channel count
        if x.rep != 1 and op not in ("Relu", "Identity", "Dropout", "Sigmoid", "Tanh", "LeakyRelu", "Clip"):
            return False
        walk.layouts[out0] = x
        return True
    return None


def _visit_normalization(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """BatchNormalization / InstanceNormalization: their per-channel parameters follow the channels."""
    if op in ("BatchNormalization", "InstanceNormalization") and x is not None and x.rep == 1:
        params = [i for i in node.input[1:] if i]
        if not all(walk.own_init(p) for p in params):
            return False
        for p in params:
            walk.edits.append(("slice", p, 0, node.input[0]))
        walk.layouts[out0] = x
        return True
    return None


def _visit_prelu(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """PRelu with a constant slope keeps its input's layout."""
    if op == "PRelu" and x is not None and x.rep == 1 and ins[1] is None:
        return _broadcast_const(node, node.input[1], x, node.input[0], walk) \
            and _set(walk.layouts, out0, x)
    return None


def _visit_pad(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """Pad that does not pad the channel axis keeps its input's layout."""
    if op == "Pad" and x is not None and x.rep == 1:
        pads = node.input[1] if len(node.input) > 1 else None
        pads_v = get_pad(node, pads, walk.inits)
        if pads_v is None or len(pads_v) < 4:
            return False
        r = len(pads_v) // 2
        if pads_v[1] != 0 or pads_v[r + 1] != 0:
            return False
        walk.layouts[out0] = x
        return True
    return None


def _visit_elementwise(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """Elementwise ops unite the groups of their tracked inputs; constants must broadcast over channels."""
    if op in ELEMENTWISE:
        tracked = [(i, lay) for i, lay in enumerate(ins) if lay is not None]
        base = tracked[0][1]
        if base.rep != 1:
            return False
        for _, lay in tracked[1:]:
            if not unite(base, lay, walk.groups):
                return False
        if op in ("Add", "Sum", "Sub") and len(tracked) > 1:
            walk.residual.append((f"{op} '{label}'", base))
        for i, name in enumerate(node.input):
            if ins[i] is not None or not name:
                continue
            if name in walk.inits:
                if not _broadcast_const(node, name, base, node.input[tracked[0][0]], walk):
                    return False
            else:
                shp = walk.shapes.get(name)
                if shp is None:
                    return False
                pos = len(shp) - (rank - 1)
                if 0 <= pos < len(shp) and shp[pos] != 1:
                    return False
        walk.layouts[out0] = base
        return True
    return None


def _visit_concat(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """Concat along channels: the output layout is the inputs' segments in order."""
    if op == "Concat" and rank > 1 and attr(node, "axis", 0) in (1, 1 - rank):
        if any(lay is not None and lay.rep != 1 for lay in ins):
            return False
        segs = []
        for name, lay in zip(node.input, ins):
            if lay is None:
                shp = walk.shapes.get(name)
                if not shp or len(shp) < 2 or not isinstance(shp[1], int):
                    return False
                lay = Layout([(walk.groups.new(shp[1], frozen="concatenated with an untracked tensor"), shp[1])])
            segs += lay.segments
        walk.layouts[out0] = Layout(segs)
        return True
    return None


def _visit_flatten(node, op, ins, x, out0, rank, label, walk) -> Optional[bool]:
    """Flatten / flatten-like Reshape to 2-D: features are channels times the spatial size."""
    if op in ("Flatten", "Reshape") and x is not None:
        in_shape, out_shape = walk.shapes.get(node.input[0]), walk.shapes.get(out0)
        if not in_shape or not out_shape or len(out_shape) != 2 or len(in_shape) < 2 \
                or any(not isinstance(d, int) for d in in_shape):
            return False
        if op == "Flatten" and attr(node, "axis", 1) != 1:
            return False
        if op == "Reshape":
            if not walk.own_init(node.input[1]) or out_shape[0] != in_shape[0]:
                return False
            walk.edits.append(("reshape", node.input[1], int(in_shape[0]), node.input[0]))
        walk.layouts[out0] = Layout(x.segments, x.rep * int(np.prod(in_shape[2:], dtype=np.int64)))
        return True
    return None


_HANDLERS = (_visit_conv, _visit_gemm, _visit_matmul, _visit_untracked, _visit_unary, _visit_normalization,
             _visit_prelu, _visit_pad, _visit_elementwise, _visit_concat, _visit_flatten)


def _set(layouts, name, layout) -> bool:
    layouts[name] = layout
    return True


def get_pad(node, pads_name, inits) -> Optional[List[int]]:
    """The pads of a Pad node (attribute before opset 11, input after); None when not constant."""
    p = attr(node, "pads")
    if p is not None:
        return list(p)
    if pads_name and pads_name in inits:
        return [int(v) for v in numpy_helper.to_array(inits[pads_name])]
    return None


def _produce(node, label, weight, axis, bias, bias_axis, walk: "_Walk", kind):
    """Start a new channel group for a producer's output (frozen when its weights cannot be sliced)."""
    w = np.abs(np.asarray(_array(walk.inits[weight]), dtype=np.float64))
    n = w.shape[axis]
    score = np.moveaxis(w, axis, 0).reshape(n, -1).sum(axis=1)
    frozen = None
    if not walk.own_init(weight):
        frozen = f"weight '{weight}' is shared"
    elif bias is not None and not walk.own_init(bias):
        frozen = f"bias '{bias}' is not a private initializer"
    elif bias is not None and walk.inits[bias].dims and walk.inits[bias].dims[-1] not in (1, n):
        frozen = f"bias '{bias}' does not broadcast per channel"
    elif label in walk.exclude:
        frozen = "excluded"
    g = walk.groups.new(n, producer=label, score=score, frozen=frozen)
    out0 = node.output[0]
    shape = walk.shapes.get(out0) or []
    walk.pooled[g] = len(shape) > 2 and all(d == 1 for d in shape[2:])
    walk.layouts[out0] = Layout([(g, n)])
    if frozen is None:
        walk.edits.append(("slice", weight, axis, out0))
        if bias is not None and walk.inits[bias].dims and walk.inits[bias].dims[-1] == n:
            walk.edits.append(("slice", bias, bias_axis if bias_axis >= 0 else len(walk.inits[bias].dims) - 1, out0))


def _array(t):
    return numpy_helper.to_array(t)


def _broadcast_const(node, name, layout, tensor, walk: "_Walk") -> bool:
    """Slice a constant that broadcasts against a channel tensor; True when that is possible (or not needed)."""
    shp = list(walk.inits[name].dims)
    rank = len(walk.shapes.get(tensor) or [])
    if rank < 2:
        return False
    pos = len(shp) - (rank - 1)  # the constant's dim aligned with axis 1 of the tensor
    if pos < 0 or pos >= len(shp) or shp[pos] == 1:
        return True
    if shp[pos] != layout.channels or not walk.own_init(name):
        return False
    walk.edits.append(("slice", name, pos, tensor))
    return True
