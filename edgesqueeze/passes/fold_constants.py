"""Constant folding: every node whose inputs are all constant becomes an initializer.

This covers weights produced at run time by ``ConstantOfShape`` (the light Model-Zoo models), ``Constant``
nodes, and shape arithmetic (``Shape`` of a statically shaped tensor, ``Gather``/``Concat``/``Unsqueeze`` on it)
that feeds ``Reshape`` and friends. onnx-graphsurgeon evaluates the constant subgraph on onnxruntime.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime
from onnx_graphsurgeon.logger import G_LOGGER

from .registry import register


@register("fold_constants", opsets=(1, 10 ** 6),
          description="evaluate constant subgraphs (ConstantOfShape weights, Constant nodes, shape arithmetic)")
def fold_constants(graph, ctx):
    """Fold constant subgraphs and static shape computations into initializers."""
    before = {id(n): n for n in graph.nodes}
    level = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR  # its warnings go to stdout; the report says what was folded
    _quiet_onnxruntime()
    try:
        folded_shapes = _fold_shapes(graph)
        if _has_constant_nodes(graph):  # onnx-graphsurgeon's folding costs ~0.1 s even with nothing to do
            graph.fold_constants(fold_shapes=False, error_ok=True, flatten_subgraphs=False)
        graph.cleanup(remove_unused_graph_inputs=False)
    finally:
        G_LOGGER.severity = level
    remaining = {id(n) for n in graph.nodes}
    done = {id(n) for n in folded_shapes}
    folded = folded_shapes + [n for k, n in before.items() if k not in remaining and k not in done]
    # Constant nodes become initializers too (export writes the values as initializers)
    for node in [n for n in graph.nodes if n.op == "Constant" and "value" in n.attrs and len(n.outputs) == 1]:
        value = node.attrs["value"]
        if isinstance(value, gs.Constant) and not any(t is node.outputs[0] for t in graph.outputs):
            out = node.outputs[0]
            c = gs.Constant(out.name, value.values)
            for consumer in list(out.outputs):
                for i, t in enumerate(consumer.inputs):
                    if t is out:
                        consumer.inputs[i] = c
            node.outputs.clear()
            folded.append(node)
    for n in folded:
        ctx.record(f"fold_constants:{n.op}", [n.name or n.op])
    return graph


def _quiet_onnxruntime() -> None:
    """onnx-graphsurgeon evaluates on an optimizing onnxruntime session, which logs warnings we do not need."""
    onnxruntime.set_default_logger_severity(3)


def _fold_shapes(graph):
    """Replace ``Shape`` (honouring ``start``/``end``) and ``Size`` of statically shaped tensors by constants.

    Done here rather than by onnx-graphsurgeon's shape folding, which ignores ``Shape``'s ``start``/``end``.
    """
    folded = []
    for node in list(graph.nodes):
        if node.op not in ("Shape", "Size") or len(node.inputs) != 1 or len(node.outputs) != 1:
            continue
        shape = node.inputs[0].shape
        if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            continue
        if node.op == "Shape":
            rank = len(shape)
            start = int(node.attrs.get("start", 0))
            end = node.attrs.get("end")
            start = min(max(start + rank if start < 0 else start, 0), rank)
            end = rank if end is None else int(end)
            end = min(max(end + rank if end < 0 else end, 0), rank)
            value = np.array(shape[start:end], np.int64)
        else:
            value = np.array(int(np.prod(shape)), np.int64)
        out = node.outputs[0]
        if any(t is out for t in graph.outputs):
            continue
        c = gs.Constant(out.name, value)
        for consumer in list(out.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is out:
                    consumer.inputs[i] = c
        node.outputs.clear()
        node.inputs.clear()
        folded.append(node)
    return folded


def _has_constant_nodes(graph) -> bool:
    """True when some node (here or in a subgraph) has only constant inputs."""
    for node in graph.nodes:
        if all(isinstance(t, gs.Constant) or not t.name for t in node.inputs):
            return True
        if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            return True
    return False
