"""The exact rewrites for ops whose spelling changed between ai.onnx opsets (found by walking onnx.defs).

Each rewrite takes ``(node, ctx, hi, lo)`` (the node, the :class:`~.opset.Context`, its schema at the model's
opset and at the target opset, ``lo`` None when the op does not exist there) and returns the replacement
nodes, or None to leave the node to the generic check (relabel; newer attributes must be at their default).

=====================  ==========  ==============================================================
op                     changed at  rewrite when going below
=====================  ==========  ==============================================================
Reduce* (ReduceSum)    18 (13)     ``axes`` input -> attribute; ``noop_with_empty_axes=1`` with
                                   no axes -> Identity
Split                  13, 18      ``num_outputs`` -> explicit sizes; ``split`` input <-> attribute
Squeeze, Unsqueeze     13          ``axes`` input -> attribute
Pad                    11, 18, 19  ``axes`` -> full-rank pads; inputs -> attributes (<11); no wrap
Clip                   11          ``min``/``max`` inputs -> attributes
Resize                 11, 13, 18  newer attributes at defaults; empty roi/scales filled (<13)
Softmax family         13          axis meaning changed: explicit last axis, or Transpose around it
Constant               12          ``value_float(s)``/``value_int(s)``/... -> ``value`` tensor
Dropout                any         the identity at inference (no mask output, no training)
Gemm                   11          missing ``C`` -> a zero scalar
Reshape                14          ``allowzero=1`` kept only when the shape has no 0
QuantizeLinear & DQ    13          per-tensor scale only (no ``axis`` before 13)
GridSample             20          mode names (linear -> bilinear, cubic -> bicubic), 4-D only
Slice                  10          inputs -> attributes (steps of 1 only)
TopK                   10          ``K`` input -> attribute
HardSwish, Mish, Gelu  14, 18, 20  their definitions in older ops (HardSigmoid/Mul, Softplus/Tanh/Mul,
                                   Erf or Tanh)
=====================  ==========  ==============================================================
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
from onnx import NodeProto, helper, numpy_helper

from .opset import Context


def _get(node: NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _set(node: NodeProto, name: str, value) -> None:
    _drop(node, name)
    node.attribute.extend([helper.make_attribute(name, value)])


def _drop(node: NodeProto, name: str) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)


def _inputs(node: NodeProto, names) -> None:
    names = list(names)
    while names and not names[-1]:
        names.pop()
    del node.input[:]
    node.input.extend(names)


def _ints(a: np.ndarray) -> List[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _crosses(hi, lo, at: int) -> bool:
    return hi.since_version >= at and (lo is None or lo.since_version < at)


def reduce_axes(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    since = 13 if node.op_type == "ReduceSum" else 18
    if lo is None or not _crosses(hi, lo, since):
        return None
    axes = ctx.const(node, 1, "axes")
    noop = _get(node, "noop_with_empty_axes", 0)
    _drop(node, "noop_with_empty_axes")
    if axes is None or axes.size == 0:
        if noop:
            ctx.note(f"{node.op_type}: noop_with_empty_axes with no axes -> Identity")
            return [helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)]
        _inputs(node, node.input[:1])
    else:
        _set(node, "axes", _ints(axes))
        _inputs(node, node.input[:1])
    ctx.note(f"{node.op_type}: axes input -> attribute")
    return [node]


def split(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None:
        return None
    axis = _get(node, "axis", 0)
    sizes = None
    n = _get(node, "num_outputs")
    if n is not None and lo.since_version < 18:
        dims = ctx.dims(node, node.input[0])
        dim = dims[axis % len(dims)]
        if not isinstance(dim, int) or dim <= 0:
            raise ctx.unsupported(node, "num_outputs needs a static size along the split axis")
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sizes[-1] <= 0:
            raise ctx.unsupported(node, f"{dim} elements cannot make {n} chunks of {chunk}")
        _drop(node, "num_outputs")
        ctx.note("Split: num_outputs -> explicit split sizes")
    elif len(node.input) > 1 and node.input[1] and lo.since_version < 13:
        sizes = _ints(ctx.const(node, 1, "split"))
    if sizes is None:
        return [node]
    if lo.since_version >= 13:
        _inputs(node, [node.input[0], ctx.add_const(node.output[0] + "_split", np.array(sizes, np.int64))])
    else:
        _set(node, "split", [int(s) for s in sizes])
        _inputs(node, node.input[:1])
        ctx.note("Split: split input -> attribute")
    return [node]


def squeeze_axes(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or not _crosses(hi, lo, 13):
        return None
    axes = ctx.const(node, 1, "axes")
    if axes is not None:
        _set(node, "axes", _ints(axes))
    _inputs(node, node.input[:1])
    ctx.note(f"{node.op_type}: axes input -> attribute")
    return [node]


def pad(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None:
        return None
    mode = _get(node, "mode", "constant")
    if _crosses(hi, lo, 19) and mode == "wrap":
        raise ctx.unsupported(node, "mode 'wrap' first appears in opset 19")
    inputs = list(node.input) + [""] * (4 - len(node.input))
    if _crosses(hi, lo, 18) and inputs[3]:
        axes = _ints(ctx.const(node, 3, "axes"))
        pads = _ints(ctx.const(node, 1, "pads"))
        r = ctx.rank(node, inputs[0])
        full = [0] * (2 * r)
        for i, a in enumerate(axes):
            full[a % r] = pads[i]
            full[a % r + r] = pads[i + len(axes)]
        inputs[1] = ctx.add_const(node.output[0] + "_pads", np.array(full, np.int64))
        inputs[3] = ""
        ctx.note("Pad: axes -> full-rank pads")
    if lo.since_version < 11:
        _set(node, "pads", _ints(ctx.const(node, 1, "pads") if inputs[1] == node.input[1] else ctx.consts[inputs[1]]))
        value = ctx.const(node, 2, "constant_value") if inputs[2] else None
        if value is not None:
            _set(node, "value", float(np.asarray(value).reshape(-1)[0]))
        inputs = inputs[:1]
        ctx.note("Pad: pads/constant_value inputs -> attributes")
    _inputs(node, inputs)
    return [node]


def clip(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or not _crosses(hi, lo, 11):
        return None
    for i, name in ((1, "min"), (2, "max")):
        v = ctx.const(node, i, name)
        if v is not None:
            _set(node, name, float(np.asarray(v).reshape(-1)[0]))
    _inputs(node, node.input[:1])
    ctx.note("Clip: min/max inputs -> attributes")
    return [node]


def resize(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or lo.since_version < 11:
        raise ctx.unsupported(node, "Resize before opset 11 (and Upsample) has different coordinate rules")
    if _crosses(hi, lo, 19) and _get(node, "coordinate_transformation_mode") == "half_pixel_symmetric":
        raise ctx.unsupported(node, "coordinate_transformation_mode 'half_pixel_symmetric' first appears in opset 19")
    if _crosses(hi, lo, 18):
        axes = _get(node, "axes")
        if axes is not None:
            r = ctx.rank(node, node.input[0])
            if [a % r for a in axes] != list(range(r)):
                raise ctx.unsupported(node, "the axes attribute (a subset of axes) first appears in opset 18")
            _drop(node, "axes")
    if lo.since_version < 13:
        inputs = list(node.input) + [""] * (4 - len(node.input))
        if not inputs[1]:
            inputs[1] = ctx.add_const(node.output[0] + "_roi", np.zeros(0, np.float32))
        if not inputs[2]:
            inputs[2] = ctx.add_const(node.output[0] + "_scales", np.zeros(0, np.float32))
        _inputs(node, inputs)
        ctx.note("Resize: empty roi/scales inputs filled")
    return [node]


def softmax(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or not _crosses(hi, lo, 13):
        return None
    r = ctx.rank(node, node.input[0])
    a = _get(node, "axis", -1) % r
    _set(node, "axis", r - 1)
    if a == r - 1:
        ctx.note(f"{node.op_type}: axis made explicit (last axis)")
        return [node]
    perm = list(range(r))
    perm[a], perm[-1] = perm[-1], perm[a]
    t_in, t_out, out = ctx.fresh(node.input[0] + "_t"), ctx.fresh(node.output[0] + "_t"), node.output[0]
    first = helper.make_node("Transpose", [node.input[0]], [t_in], perm=perm, name=ctx.fresh(node.name or "transpose"))
    node.input[0], node.output[0] = t_in, t_out
    last = helper.make_node("Transpose", [t_out], [out], perm=perm, name=ctx.fresh(node.name or "transpose"))
    ctx.note(f"{node.op_type}: inner axis -> Transpose, last axis, Transpose")
    return [first, node, last]


def constant(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or lo.since_version >= 12:
        return None
    kinds = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64,
             "value_string": object, "value_strings": object}
    for name, dtype in kinds.items():
        v = _get(node, name)
        if v is not None:
            _drop(node, name)
            node.attribute.extend([helper.make_attribute("value", numpy_helper.from_array(np.array(v, dtype=dtype)))])
            ctx.note(f"Constant: {name} -> value tensor")
    return [node]


def dropout(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if len(node.output) > 1 and node.output[1] in ctx.used:
        raise ctx.unsupported(node, "its mask output is used")
    training = ctx.const(node, 2, "training_mode") if len(node.input) > 2 else None
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        raise ctx.unsupported(node, "training_mode is true")
    ctx.note("Dropout -> Identity (inference)")
    return [helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)]


def gemm(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or lo.since_version >= 11 or (len(node.input) > 2 and node.input[2]):
        return None
    elem = ctx.elem_type(node.output[0]) or 1
    zero = np.zeros((), dtype=helper.tensor_dtype_to_np_dtype(elem))
    _inputs(node, [node.input[0], node.input[1], ctx.add_const(node.output[0] + "_c", zero)])
    ctx.note("Gemm: missing C -> zero scalar")
    return [node]


def reshape(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or not _crosses(hi, lo, 14) or not _get(node, "allowzero", 0):
        return None
    shape = ctx.consts.get(node.input[1])
    if shape is None or 0 in _ints(shape):
        raise ctx.unsupported(node, "allowzero=1 with a shape that may hold 0 first appears in opset 14")
    _drop(node, "allowzero")
    ctx.note("Reshape: allowzero dropped (the shape has no 0)")
    return [node]


def quant_linear(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or not _crosses(hi, lo, 13):
        return None
    scale = ctx.consts.get(node.input[1])
    if scale is None or np.asarray(scale).size != 1:
        raise ctx.unsupported(node, "per-channel (or run-time) scales need opset 13")
    _drop(node, "axis")
    return None


def grid_sample(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or not _crosses(hi, lo, 20):
        return None
    if ctx.rank(node, node.input[0]) != 4:
        raise ctx.unsupported(node, "N-D sampling first appears in opset 20")
    mode = _get(node, "mode", "linear")
    _set(node, "mode", {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode))
    ctx.note("GridSample: mode renamed")
    return [node]


def slice_(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or lo.since_version >= 11:
        return None
    if lo.since_version == 10:  # Slice-10 takes inputs too, but no negative axes
        axes = ctx.const(node, 3, "axes") if len(node.input) > 3 and node.input[3] else None
        if axes is None or (np.asarray(axes) >= 0).all():
            return None
        r = ctx.rank(node, node.input[0])
        inputs = list(node.input)
        inputs[3] = ctx.add_const(node.output[0] + "_axes", np.array([a % r for a in _ints(axes)], np.int64))
        _inputs(node, inputs)
        ctx.note("Slice: negative axes made positive")
        return [node]
    starts, ends = ctx.const(node, 1, "starts"), ctx.const(node, 2, "ends")
    axes = ctx.const(node, 3, "axes")
    steps = ctx.const(node, 4, "steps")
    if steps is not None and any(s != 1 for s in _ints(steps)):
        raise ctx.unsupported(node, "steps other than 1 first appear in opset 10")
    _set(node, "starts", _ints(starts))
    _set(node, "ends", _ints(ends))
    if axes is not None:
        _set(node, "axes", _ints(axes))
    _inputs(node, node.input[:1])
    ctx.note("Slice: inputs -> attributes")
    return [node]


def topk(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is None or lo.since_version >= 10:
        return None
    _set(node, "k", _ints(ctx.const(node, 1, "K"))[0])
    _inputs(node, node.input[:1])
    ctx.note("TopK: K input -> attribute")
    return [node]


def hard_swish(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is not None:
        return None
    t = ctx.fresh(node.output[0] + "_hsig")
    ctx.note("HardSwish -> x * HardSigmoid(x, 1/6, 0.5) (its definition)")
    return [helper.make_node("HardSigmoid", [node.input[0]], [t], alpha=1.0 / 6, beta=0.5, name=ctx.fresh(node.name)),
            helper.make_node("Mul", [node.input[0], t], [node.output[0]], name=node.name)]


def mish(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    if lo is not None:
        return None
    sp, th = ctx.fresh(node.output[0] + "_softplus"), ctx.fresh(node.output[0] + "_tanh")
    ctx.note("Mish -> x * Tanh(Softplus(x)) (its definition)")
    return [helper.make_node("Softplus", [node.input[0]], [sp], name=ctx.fresh(node.name)),
            helper.make_node("Tanh", [sp], [th], name=ctx.fresh(node.name)),
            helper.make_node("Mul", [node.input[0], th], [node.output[0]], name=node.name)]


def gelu(node: NodeProto, ctx: Context, hi, lo) -> Optional[List[NodeProto]]:
    """Gelu (20) as its definition: 0.5 x (1 + erf(x / sqrt 2)), or with approximate='tanh'
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    if lo is not None:
        return None
    x, y = node.input[0], node.output[0]
    dt = helper.tensor_dtype_to_np_dtype(ctx.elem_type(x) or 1)

    def c(base, v):
        return ctx.add_const(y + "_" + base, np.array(v, dtype=dt))

    def t(base):
        return ctx.fresh(y + "_" + base)

    nodes, half, one = [], c("half", 0.5), c("one", 1.0)
    if _get(node, "approximate", "none") == "tanh":
        x3, inner, scaled, th, s = t("x3"), t("inner"), t("scaled"), t("tanh"), t("sum")
        nodes += [helper.make_node("Mul", [x, x], [t("x2")])]
        nodes += [helper.make_node("Mul", [nodes[-1].output[0], x], [x3]),
                  helper.make_node("Mul", [x3, c("k", 0.044715)], [t("kx3")])]
        nodes += [helper.make_node("Add", [x, nodes[-1].output[0]], [inner]),
                  helper.make_node("Mul", [inner, c("sqrt2pi", float(np.sqrt(2.0 / np.pi)))], [scaled]),
                  helper.make_node("Tanh", [scaled], [th]), helper.make_node("Add", [th, one], [s])]
    else:
        d, e, s = t("scaled"), t("erf"), t("sum")
        nodes += [helper.make_node("Div", [x, c("sqrt2", float(np.sqrt(2.0)))], [d]),
                  helper.make_node("Erf", [d], [e]), helper.make_node("Add", [e, one], [s])]
    hx = t("halfx")
    nodes += [helper.make_node("Mul", [x, half], [hx]), helper.make_node("Mul", [hx, s], [y], name=node.name)]
    ctx.note(f"Gelu -> its definition with {'Tanh' if len(nodes) > 6 else 'Erf'}")
    return nodes


REWRITES = {
    "HardSwish": hard_swish, "Mish": mish, "Gelu": gelu,
    **{op: reduce_axes for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                  "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
    "Split": split, "Squeeze": squeeze_axes, "Unsqueeze": squeeze_axes, "Pad": pad, "Clip": clip,
    "Resize": resize, "Softmax": softmax, "LogSoftmax": softmax, "Hardmax": softmax, "Constant": constant,
    "Dropout": dropout, "Gemm": gemm, "Reshape": reshape, "QuantizeLinear": quant_linear,
    "DequantizeLinear": quant_linear, "GridSample": grid_sample, "Slice": slice_, "TopK": topk,
}
