"""Small helpers the passes share: constants, consumers, bypassing nodes, fresh tensors."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

ACTIVATION_OPS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
                  "Softplus", "PRelu")


def const(tensor) -> Optional[np.ndarray]:
    """The value of a constant tensor (initializer or Constant-node output), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant" and "value" in tensor.inputs[0].attrs:
        val = tensor.inputs[0].attrs["value"]
        if isinstance(val, gs.Constant):
            return np.asarray(val.values)
    return None


class ConstInfo:
    """Shape and dtype of a constant without loading its values (lazy initializers stay lazy, and are then
    written back unchanged instead of being re-encoded)."""

    __slots__ = ("shape", "dtype", "ndim")

    def __init__(self, shape, dtype):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)


def const_info(tensor) -> Optional[ConstInfo]:
    """:class:`ConstInfo` of an initializer (None for anything else)."""
    if isinstance(tensor, gs.Constant):
        try:
            return ConstInfo(tensor.shape, tensor.dtype)
        except TypeError:  # a dtype numpy does not know (bfloat16, float8): treat as not foldable
            return None
    return None


def is_output(graph: gs.Graph, tensor) -> bool:
    """True when ``tensor`` is a graph output."""
    return any(t is tensor for t in graph.outputs)


def sole_consumer(graph: gs.Graph, tensor) -> Optional[gs.Node]:
    """The one node reading ``tensor`` when it has exactly one consumer and is not a graph output."""
    if is_output(graph, tensor) or len(tensor.outputs) != 1:
        return None
    return tensor.outputs[0]


def producer(tensor) -> Optional[gs.Node]:
    """The node writing ``tensor`` (None for graph inputs and constants)."""
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def new_const(ctx, base: str, values: np.ndarray) -> gs.Constant:
    """A fresh constant (never mutate an existing one: it may be shared)."""
    return gs.Constant(ctx.unique(base), np.ascontiguousarray(values))


def new_var(ctx, base: str, like=None) -> gs.Variable:
    """A fresh variable, with dtype/shape copied from ``like`` when given."""
    return gs.Variable(ctx.unique(base), dtype=getattr(like, "dtype", None), shape=getattr(like, "shape", None))


def take_over_outputs(keep: gs.Node, drop: gs.Node) -> None:
    """Make ``keep`` write ``drop``'s outputs (so names, graph outputs and consumers stay), detaching ``drop``."""
    old = list(keep.outputs)
    keep.outputs = list(drop.outputs)
    drop.outputs.clear()
    drop.inputs.clear()
    for t in old:  # the intermediate tensor is now dangling
        t.inputs.clear()


def bypass(graph: gs.Graph, node: gs.Node, keep_input: int = 0) -> bool:
    """Remove a node whose output equals its input ``keep_input``; returns False when that cannot be done.

    Consumers read the input instead. When the output is a graph output, the input's producer writes the output
    tensor instead (so the graph output keeps its name); that needs the input to be produced by a node and to be
    read by nobody else.
    """
    src, dst = node.inputs[keep_input], node.outputs[0]
    if is_output(graph, dst):
        prod = producer(src)
        if prod is None or is_output(graph, src) or len(src.outputs) != 1 or any(o is src for o in graph.inputs):
            return False
        idx = [i for i, t in enumerate(prod.outputs) if t is src][0]
        node.inputs.clear()
        node.outputs.clear()
        prod.outputs[idx] = dst
        return True
    for consumer in list(dst.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is dst:
                consumer.inputs[i] = src
    node.inputs.clear()
    node.outputs.clear()
    return True


def channel_vector(values: np.ndarray, rank: int, channels: int, axis: int = 1) -> Optional[np.ndarray]:
    """If ``values`` broadcasts against a rank-``rank`` tensor only along ``axis`` (or is a scalar), return it as a
    length-``channels`` vector; else None (it would change the shape or vary along another axis)."""
    v = np.asarray(values)
    if v.ndim > rank:
        return None
    shape = (1,) * (rank - v.ndim) + v.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis % rank):
        return None
    if shape[axis % rank] not in (1, channels):
        return None
    return np.broadcast_to(v.reshape(-1), (channels,)).copy()


def attr_list(node: gs.Node, name: str, default: Sequence[int]) -> List[int]:
    """An int-list attribute, or the default."""
    v = node.attrs.get(name)
    return list(default) if v is None else [int(x) for x in v]


def ir_version_for(model) -> int:
    """The model's IR version, raised to what its opsets need and to 4 (initializers no longer graph inputs)."""
    try:
        need = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except Exception:  # noqa: BLE001 - an opset newer than this onnx knows
        need = model.ir_version
    return max(int(model.ir_version), int(need), 4)
