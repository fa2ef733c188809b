"""Multiply-accumulate count for the compression reports: inspect's rule, at the shape the checks run at."""
from __future__ import annotations

from typing import Optional

from onnx import ModelProto

from ..errors import InputError
from ..inspect import count_macs as inspect_macs
from ..model import concrete_input_shapes, dynamic_inputs, graph_inputs, infer_shapes, strip_weights


def _at_check_shapes(model: ModelProto, given) -> Optional[ModelProto]:
    """A copy of ``model`` whose dynamic inputs have the shapes the checks run at (``given``: ``--input``, else
    the usual rules: batch 1, metadata), or None when a dynamic dimension has no value."""
    try:
        shapes = concrete_input_shapes(model, given)
    except InputError:
        return None
    pinned, _ = strip_weights(model)   # a copy with the shapes of the weights, not their bytes
    del pinned.graph.value_info[:]     # inferred again from the pinned inputs
    for vi in graph_inputs(pinned):
        dims = vi.type.tensor_type.shape.dim
        for d, v in zip(dims, shapes.get(vi.name, ())):
            d.Clear()
            d.dim_value = int(v)
    return pinned


def count_macs(model: ModelProto, shapes=None) -> Optional[int]:
    """Return the multiply-accumulates of the model (:func:`edgesqueeze.inspect.count_macs`'s rule), at the input
    shapes the checks run at for a dynamic model (``shapes``: ``--input``); None when a dynamic dimension has no
    value."""
    if dynamic_inputs(model):
        model = _at_check_shapes(model, shapes)
        if model is None:
            return None
    return inspect_macs(infer_shapes(model))
