"""Find the weight tensors of Conv / Gemm / MatMul layers and read or replace them in a model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import numpy as np
import onnx
from onnx import ModelProto, numpy_helper

from ..errors import InputError
from ..model import infer_shapes

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class Layer:
    """One weighted layer: the node, its weight initializer and its kind ("conv" or "fc")."""

    node: onnx.NodeProto
    index: int          # position of the node in graph.node
    weight: str         # initializer name of the weight
    bias: Optional[str]  # initializer name of the bias (Conv input 2, Gemm input C), if any
    kind: str           # "conv" for Conv, "fc" for Gemm / MatMul
    trans_b: bool = False  # Gemm transB (the weight is [out, in] when True, [in, out] otherwise)

    @property
    def name(self) -> str:
        """The node's name, or its first output when the node is unnamed."""
        return self.node.name or self.node.output[0]


def copy_model(model: ModelProto) -> ModelProto:
    """Return a deep copy of ``model`` (passes never mutate their input)."""
    out = ModelProto()
    out.CopyFrom(model)
    return out


def initializers(model: ModelProto) -> Dict[str, onnx.TensorProto]:
    """Map initializer name -> TensorProto (the proto itself, so it can be replaced in place)."""
    return {t.name: t for t in model.graph.initializer}


def attr(node: onnx.NodeProto, name: str, default=None):
    """Return the value of attribute ``name`` of ``node`` or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    """Set (or add) attribute ``name`` of ``node``."""
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.extend([onnx.helper.make_attribute(name, value)])


def find_layers(model: ModelProto, ops: Iterable[str] = WEIGHT_OPS, *, min_size: int = 1) -> List[Layer]:
    """Return the Conv / Gemm / MatMul layers whose weight is a floating-point initializer.

    Args:
        model: the ONNX model.
        ops: which op types to consider.
        min_size: skip weights with fewer elements.

    Returns:
        The layers in graph order. A MatMul counts when its second input is an initializer (``X @ W``).
    """
    inits = initializers(model)
    ops = tuple(ops)
    layers = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ops or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        w = inits.get(node.input[1])
        if w is None or w.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                            onnx.TensorProto.DOUBLE):
            continue
        if int(np.prod(w.dims)) < min_size:
            continue
        if node.op_type == "MatMul" and len(w.dims) != 2:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
        layers.append(Layer(node=node, index=i, weight=node.input[1], bias=bias,
                            kind="conv" if node.op_type == "Conv" else "fc",
                            trans_b=bool(attr(node, "transB", 0)) if node.op_type == "Gemm" else False))
    return layers


def get_array(model: ModelProto, name: str) -> np.ndarray:
    """Return initializer ``name`` as a numpy array (a copy).

    Raises:
        InputError: there is no such initializer.
    """
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t).copy()
    raise InputError("no such initializer", tensor=name)


def set_array(model: ModelProto, name: str, array: np.ndarray) -> None:
    """Replace initializer ``name`` by ``array`` (cast to the initializer's dtype; the shape may change)."""
    for t in model.graph.initializer:
        if t.name == name:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
            return
    raise InputError("no such initializer", tensor=name)


def add_initializer(model: ModelProto, name: str, array: np.ndarray) -> str:
    """Add an initializer with a name not yet used in the graph; return the name used."""
    used = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output} \
        | {i.name for i in model.graph.input}
    base, k = name, 1
    while name in used:
        name = f"{base}_{k}"
        k += 1
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name


def unique_name(model: ModelProto, base: str) -> str:
    """Return a tensor/node name based on ``base`` that is not used in the graph yet."""
    used = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output} \
        | {i.name for i in model.graph.input} | {n.name for n in model.graph.node}
    name, k = base, 1
    while name in used:
        name = f"{base}_{k}"
        k += 1
    return name


def sparsity(array: np.ndarray) -> float:
    """Fraction of exact zeros in ``array``."""
    return float(np.count_nonzero(array == 0)) / max(array.size, 1)


def use_counts(model: ModelProto) -> Dict[str, int]:
    """How many node inputs (plus graph outputs) read each tensor."""
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            if name:
                counts[name] = counts.get(name, 0) + 1
    for out in model.graph.output:
        counts[out.name] = counts.get(out.name, 0) + 1
    return counts


def reinfer(model: ModelProto) -> ModelProto:
    """Drop stale intermediate shapes and run shape inference again (after weights changed shape)."""
    del model.graph.value_info[:]
    return infer_shapes(model)
