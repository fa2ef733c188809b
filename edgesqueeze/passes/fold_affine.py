"""Folding of constant element-wise arithmetic into the layer before it.

``Conv``/``ConvTranspose``/``Gemm`` followed by ``Mul``/``Div`` by a per-output-channel constant (or a scalar)
scales that layer's weights and bias; followed by ``Add``/``Sub`` of one shifts its bias. Chains of constant
``Mul``/``Add`` (a BatchNorm turned into Mul+Add followed by a learned scale, as in DenseNet) collapse into one
``Mul`` + one ``Add``. Only rewrites that keep the output's shape are made; each is exact up to rounding.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import channel_vector, const, new_const, producer, sole_consumer, take_over_outputs
from .fold_batchnorm import fold_scale_into
from .registry import register

_LAYERS = ("Conv", "ConvTranspose", "Gemm")


def _const_operand(node: gs.Node) -> Tuple[Optional[int], Optional[np.ndarray]]:
    """(index of the variable input, constant value) for a binary op with exactly one constant input."""
    if len(node.inputs) != 2:
        return None, None
    a, b = (const(t) for t in node.inputs)
    if (a is None) == (b is None):
        return None, None
    return (0, b) if b is not None else (1, a)


def _as_scale_shift(node: gs.Node, var_index: int, c: np.ndarray):
    """Express ``node`` as ``x * scale + shift`` (elementwise, c broadcast), or None."""
    c = np.asarray(c, np.float64)
    if node.op == "Mul":
        return c, np.zeros_like(c)
    if node.op == "Add":
        return np.ones_like(c), c
    if node.op == "Sub":
        return (np.ones_like(c), -c) if var_index == 0 else (-np.ones_like(c), c)
    if node.op == "Div" and var_index == 0 and np.all(c != 0):
        return 1.0 / c, np.zeros_like(c)
    return None


def _fold_into_layer(graph, layer: gs.Node, node: gs.Node, var_index: int, c: np.ndarray, ctx) -> bool:
    out = layer.outputs[0]
    if out.shape is None or out.dtype is None:
        return False
    rank = len(out.shape)
    if rank < 2:
        return False
    channels = out.shape[1]
    if not isinstance(channels, int):
        return False
    vec = channel_vector(c, rank, channels, axis=1)
    if vec is None or node.outputs[0].shape is None or list(node.outputs[0].shape) != list(out.shape):
        return False
    ss = _as_scale_shift(node, var_index, vec)
    if ss is None:
        return False
    if not fold_scale_into(layer, ss[0], ss[1], ctx):
        return False
    take_over_outputs(layer, node)
    return True


def _merge_chain(graph, first: gs.Node, second: gs.Node, ctx) -> bool:
    """``first`` and ``second`` are constant Mul/Add on the same path: collapse to at most one Mul and one Add."""
    i1, c1 = _const_operand(first)
    i2, c2 = _const_operand(second)
    if c1 is None or c2 is None or first.op not in ("Mul", "Add") or second.op not in ("Mul", "Add"):
        return False
    if not (np.issubdtype(c1.dtype, np.floating) and np.issubdtype(c2.dtype, np.floating)):
        return False
    if len(first.outputs[0].outputs) != 1 or first.outputs[0] is not second.inputs[i2]:
        return False
    dtype = np.result_type(c1.dtype, c2.dtype)
    a, b = np.asarray(c1, np.float64), np.asarray(c2, np.float64)
    x = first.inputs[i1]
    if first.op == second.op:  # (x * a) * b -> x * (a b);  (x + a) + b -> x + (a + b)
        merged = a * b if first.op == "Mul" else a + b
        first.inputs[1 - i1] = new_const(ctx, f"{first.name or first.op}_merged", merged.astype(dtype))
        take_over_outputs(first, second)
        return True
    if first.op == "Add" and second.op == "Mul":  # (x + a) * b -> x * b + a b
        mid = first.outputs[0]
        mul = gs.Node("Mul", ctx.unique(f"{second.name or 'mul'}_hoisted"),
                      inputs=[x, new_const(ctx, f"{second.name or 'mul'}_scale", b.astype(dtype))], outputs=[mid])
        add = gs.Node("Add", ctx.unique(f"{first.name or 'add'}_scaled"),
                      inputs=[mid, new_const(ctx, f"{first.name or 'add'}_shift", (a * b).astype(dtype))],
                      outputs=list(second.outputs))
        for n in (first, second):
            n.inputs.clear()
            n.outputs.clear()
        graph.nodes.extend([mul, add])
        return True
    return False


@register("fold_affine", description="fold constant Mul/Add/Sub/Div into Conv/Gemm weights and bias; "
                                     "collapse constant Mul/Add chains")
def fold_affine(graph, ctx):
    """Fold per-channel constant arithmetic into the preceding layer's weights and bias."""
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op not in ("Mul", "Add", "Sub", "Div") or not node.outputs:
                continue
            var_index, c = _const_operand(node)
            if c is None or not np.issubdtype(c.dtype, np.floating):
                continue
            x = node.inputs[var_index]
            prev = producer(x)
            if prev is None or sole_consumer(graph, x) is not node or len(prev.outputs) != 1:
                continue
            names = [prev.name or prev.op, node.name or node.op]
            if prev.op in _LAYERS and _fold_into_layer(graph, prev, node, var_index, c, ctx):
                ctx.record(f"fold_affine:{prev.op}+{node.op}", names)
                changed = True
            elif prev.op in ("Mul", "Add") and _merge_chain(graph, prev, node, ctx):
                ctx.record(f"fold_affine:{prev.op}+{node.op}", names)
                changed = True
        if changed:
            graph.cleanup(remove_unused_graph_inputs=False)
    return graph
