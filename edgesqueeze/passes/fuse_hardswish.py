"""Hard-swish written out in elementwise ops, ``x * Clip(x + 3, 0, 6) / 6``, rewritten as ``x * HardSigmoid(x)``.

Paddle (MobileNetV3: PP-OCR's classifier and detector) and PyTorch exports below opset 14 write hard-swish as
four nodes, Add -> Clip -> Mul -> Div (or the division before the product, or a Mul by 1/6). Each is a pass
over the whole activation map; onnxruntime does not fuse them, so on a small MobileNet they cost as much CPU
time as the convolutions. ``HardSigmoid(alpha=1/6, beta=0.5)`` is ``Clip(x + 3, 0, 6) / 6``: two nodes instead of
four, both in every ai.onnx opset (HardSigmoid since 6) and both TensorRT layers (an activation and an
elementwise product), so the model keeps its opset. Exact up to float rounding (``x/6 + 0.5`` for
``(x + 3) / 6``); the optimizer's verification checks it. The Mul keeps the Div's output name.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import const, new_var, producer, sole_consumer
from .registry import register


def _scalar(tensor) -> Optional[float]:
    """The value of a one-element float constant of rank 0 or 1 (broadcasting it changes no shape), else None."""
    v = const(tensor) if tensor is not None else None
    if v is None or v.size != 1 or v.ndim > 1 or not np.issubdtype(v.dtype, np.floating):
        return None
    return float(np.asarray(v, np.float64).reshape(-1)[0])


def _is(value: Optional[float], want: float) -> bool:
    return value is not None and abs(value - want) <= 1e-6 * abs(want)


def _other(node: gs.Node, tensor) -> Optional[gs.Tensor]:
    """The input of a two-input ``node`` that is not ``tensor``."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    return b if a is tensor else a if b is tensor else None


def _clip_bounds(node: gs.Node) -> Tuple[Optional[float], Optional[float]]:
    """(min, max) of a Clip: attributes before opset 11, optional constant inputs after."""
    if "min" in node.attrs or "max" in node.attrs:
        return node.attrs.get("min"), node.attrs.get("max")
    lo = _scalar(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
    hi = _scalar(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    return lo, hi


def _relu6_of_x_plus_3(graph, clip: gs.Node) -> Optional[Tuple[gs.Tensor, gs.Node]]:
    """(x, the Add) when ``clip`` is ``Clip(x + 3, 0, 6)`` with the sum read only by the Clip."""
    if clip.op != "Clip" or not clip.inputs:
        return None
    lo, hi = _clip_bounds(clip)
    add = producer(clip.inputs[0])
    if lo != 0 or not _is(hi, 6.0) or add is None or add.op != "Add":
        return None
    if sole_consumer(graph, add.outputs[0]) is not clip or len(add.inputs) != 2:
        return None
    for a, b in ((0, 1), (1, 0)):
        if _is(_scalar(add.inputs[b]), 3.0) and const(add.inputs[a]) is None:
            return add.inputs[a], add
    return None


def _by_six(node: gs.Node, tensor) -> bool:
    """``node`` divides ``tensor`` by 6 (Div by 6 or Mul by 1/6)."""
    if node.op == "Div":
        return len(node.inputs) == 2 and node.inputs[0] is tensor and _is(_scalar(node.inputs[1]), 6.0)
    return node.op == "Mul" and _is(_scalar(_other(node, tensor)), 1.0 / 6.0)


def _match(graph, clip: gs.Node) -> Optional[Tuple[gs.Tensor, List[gs.Node]]]:
    """(x, the four nodes, last first) of a hard-swish around ``clip``: x * Clip(x+3,0,6) / 6 in either order."""
    found = _relu6_of_x_plus_3(graph, clip)
    if found is None:
        return None
    x, add = found
    nxt = sole_consumer(graph, clip.outputs[0])
    if nxt is None:
        return None
    if nxt.op == "Mul" and _other(nxt, clip.outputs[0]) is x:          # (x * relu6) / 6
        last = sole_consumer(graph, nxt.outputs[0])
        if last is not None and _by_six(last, nxt.outputs[0]):
            return x, [last, nxt, clip, add]
    elif _by_six(nxt, clip.outputs[0]):                                   # x * (relu6 / 6)
        last = sole_consumer(graph, nxt.outputs[0])
        if last is not None and last.op == "Mul" and _other(last, nxt.outputs[0]) is x:
            return x, [last, nxt, clip, add]
    return None


def _affine_of(graph, reader: gs.Node) -> Tuple[gs.Tensor, float, float, List[gs.Node]]:
    """(x, a, b, nodes) with ``reader``'s first input ``= a * x + b`` through scalar Add / Mul / Div nodes, each
    read only by the next (none: that input itself, 1, 0)."""
    x, a, b, nodes = reader.inputs[0], 1.0, 0.0, []
    while True:
        node = producer(x)
        if node is None or node.op not in ("Add", "Mul", "Div") or len(node.inputs) != 2 or \
                sole_consumer(graph, x) is not (nodes[-1] if nodes else reader):
            return x, a, b, nodes
        k = 0 if const(node.inputs[1]) is not None else 1 if node.op != "Div" else None
        c = _scalar(node.inputs[1 - k]) if k is not None else None
        if c is None or const(node.inputs[k]) is not None or (node.op == "Div" and c == 0):
            return x, a, b, nodes
        if node.op == "Add":
            b += a * c
        else:
            a *= c if node.op == "Mul" else 1.0 / c
        x, nodes = node.inputs[k], nodes + [node]


def _written_hardsigmoid(graph, clip: gs.Node, ctx) -> bool:
    """``Clip(a * x + b, 0, 1)`` (an exporter's HardSigmoid, e.g. torch's clamp) -> ``HardSigmoid(x, a, b)``."""
    lo, hi = _clip_bounds(clip)
    if lo != 0 or not _is(hi, 1.0):
        return False
    x, a, b, nodes = _affine_of(graph, clip)
    if not nodes:
        return False
    clip.op, clip.inputs, clip.attrs = "HardSigmoid", [x], {"alpha": a, "beta": b}
    for n in nodes:
        n.inputs.clear()
        n.outputs.clear()
    ctx.record("hardsigmoid", nodes[::-1] + [clip])
    return True


@register("fuse_hardswish", description="x * Clip(x+3, 0, 6) / 6 (four elementwise nodes) -> x * HardSigmoid(x)")
def fuse_hardswish(graph, ctx):
    """Rewrite each written-out hard-sigmoid as HardSigmoid and each written-out hard-swish as HardSigmoid + Mul;
    the result keeps the last node's output."""
    for clip in [n for n in graph.nodes if n.op == "Clip" and n.inputs]:
        _written_hardsigmoid(graph, clip, ctx)
    for clip in [n for n in graph.nodes if n.op == "Clip" and n.inputs]:
        found = _match(graph, clip)
        if found is None:
            continue
        x, nodes = found
        out = nodes[0].outputs[0]
        gate = new_var(ctx, f"{out.name}_hardsigmoid", like=x)
        hs = gs.Node("HardSigmoid", ctx.unique(f"{nodes[0].name or out.name}_hardsigmoid"),
                     attrs={"alpha": 1.0 / 6.0, "beta": 0.5}, inputs=[x], outputs=[gate])
        mul = gs.Node("Mul", ctx.unique(f"{nodes[0].name or out.name}_hardswish"), inputs=[x, gate], outputs=[out])
        for n in nodes:
            n.inputs.clear()
            n.outputs.clear()
        graph.nodes.extend([hs, mul])
        ctx.record("hardswish", nodes[::-1])
    return graph   # the optimizer removes the detached nodes and sorts after every pass
