"""The registry of ``edgesqueeze``-domain custom ops and the model transforms every op shares.

Each custom op is a :class:`CustomOp` subclass registered with :func:`register_op`, the way passes register
with :func:`edgesqueeze.passes.registry.register`. Code outside the op's own file never tests an op type: the
optimizer, FP16 conversion, ``inspect``, the IR lowering in :mod:`edgesqueeze.compat` and the bundle's
TensorRT variants look the op up here (:func:`op_of`, :func:`custom_ops`) and call its methods.

Adding a third custom op is one new file ``edgesqueeze/plugins/<op>.py`` (imported once in
``edgesqueeze/plugins/__init__.py``, which registers it, like ``passes/__init__.py`` does for passes) plus its
CUDA kernel and TensorRT plugin sources under ``plugins/kernels/``. The file defines::

    @register_op
    class MyOp(CustomOp):
        op_type = "MyOp"                       # the node's op_type in domain DOMAIN (= TensorRT plugin name)

        def attach_functions(self, model):     # required: give every MyOp node its overload key for its
            ...                                # current element types and (re)build its local functions in
            return model                       # place (use install_functions); returns model

        # optional overrides (defaults in CustomOp):
        def prepare_inline(self, model): ...   # a copy with MyOp nodes rewritten to standard ops before the
                                               # function bodies are inlined (default: unchanged)
        def convert_fp16(self, model): ...     # after FP16 conversion (default: attach_functions)
        def macs(self, node, shape_of): ...    # multiply-accumulates of one node (default 0)
        def fused_block(self, node, shape_of): ...  # a block inspect reports as fused, or None (default)
        def emulate(self, node, inputs, device="cpu", cache_dir=None): ...  # run the kernel from numpy

Inlining (:func:`inline_custom_ops`, TensorRT without the plugin library) and stripping
(:func:`strip_functions`, TensorRT with it) then work for the new op with no further change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Type

import numpy as np
import onnx
from onnx import FunctionProto, ModelProto, NodeProto, TensorProto, helper, inliner

from ..errors import UnsupportedError
from ..model import iter_nodes

#: the ONNX domain of every edgesqueeze custom op (the only definition)
DOMAIN = "edgesqueeze"
DOMAIN_VERSION = 1
#: the IR version that carries function overloads
OVERLOAD_IR_VERSION = 10
#: the lowest IR version each newer element type needs (TensorProto data type -> IR version)
TYPE_IR = {getattr(TensorProto, name): ir for name, ir in (
    ("FLOAT8E4M3FN", 9), ("FLOAT8E4M3FNUZ", 9), ("FLOAT8E5M2", 9), ("FLOAT8E5M2FNUZ", 9), ("UINT4", 10),
    ("INT4", 10), ("FLOAT4E2M1", 11)) if hasattr(TensorProto, name)}
#: the fused activations every op supports, in the order of the kernels' ``esq::Activation``
ACTIVATIONS = ("none", "relu", "clip", "leaky_relu", "sigmoid", "hard_sigmoid", "hard_swish")


class CustomOp:
    """One custom op of :data:`DOMAIN`: subclass it, set :attr:`op_type`, register it with :func:`register_op`."""

    op_type: str = ""
    domain: str = DOMAIN

    def attach_functions(self, model: ModelProto) -> ModelProto:
        """Give the op's nodes their overload keys and rebuild the op's local functions, in place."""
        raise NotImplementedError(f"{self.op_type} does not build local functions")

    def prepare_inline(self, model: ModelProto) -> ModelProto:
        """Before inlining: rewrite the op's nodes to standard ops where that beats the function body."""
        return model

    def convert_fp16(self, model: ModelProto) -> None:
        """After FP16 conversion: rebuild the op's functions for the new element types, in place."""
        self.attach_functions(model)

    def macs(self, node: NodeProto, shape_of: Callable[[str], list]) -> int:
        """Multiply-accumulates of one node; ``shape_of(tensor)`` gives a shape (``[]`` when unknown)."""
        return 0

    def fused_block(self, node: NodeProto, shape_of: Callable[[str], list]) -> Optional[dict]:
        """A depthwise-separable style block that the node fuses, for ``inspect``: ``{"dw_weight",
        "pw_weight", "x", "mid" (shape of the tensor kept on chip), "y"}``; None when the op fuses none."""
        return None

    def emulate(self, node: NodeProto, inputs: Sequence[np.ndarray], device: str = "cpu",
                cache_dir: Optional[Path] = None) -> np.ndarray:
        """Run the op's CUDA kernel on ``inputs`` (the node's input arrays, in order) from numpy."""
        raise UnsupportedError(f"{self.op_type} has no kernel emulation")


#: every registered op, by op_type, in registration order
OPS: Dict[str, CustomOp] = {}


def register_op(cls: Type[CustomOp]) -> Type[CustomOp]:
    """Class decorator: register one instance of ``cls`` under ``cls.op_type``."""
    if not cls.op_type or cls.op_type in OPS:
        raise ValueError(f"custom op '{cls.op_type}' has no name or is registered twice")
    OPS[cls.op_type] = cls()
    return cls


def op_of(node: NodeProto) -> Optional[CustomOp]:
    """The registered op that ``node`` is an instance of, or None."""
    return OPS.get(node.op_type) if node.domain == DOMAIN else None


def domain_nodes(graph: onnx.GraphProto) -> Iterable[NodeProto]:
    """Every node of :data:`DOMAIN` (any op), in any subgraph."""
    return (n for n in iter_nodes(graph) if n.domain == DOMAIN)


def custom_ops(model: ModelProto) -> Set[str]:
    """The op types of the model's :data:`DOMAIN` nodes (in any subgraph)."""
    return {n.op_type for n in domain_nodes(model.graph)}


def _present(model: ModelProto) -> List[CustomOp]:
    """The registered ops that occur in ``model``, in registration order."""
    ops = custom_ops(model)
    return [op for name, op in OPS.items() if name in ops]


def numel(shape) -> int:
    """Element count of ``shape``; 0 when it is unknown or has a symbolic dimension."""
    if not shape or any(not isinstance(d, int) for d in shape):
        return 0
    return int(np.prod(shape, dtype=np.int64))


def elem_types(model: ModelProto) -> Dict[str, int]:
    """Element type of every initializer and typed graph input, value info and output."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


def install_functions(model: ModelProto, op_type: str, wanted: Dict[str, FunctionProto]) -> ModelProto:
    """Replace ``model``'s local functions for the custom op ``op_type`` by ``wanted`` (overload -> function).

    Functions of other ops are kept; the :data:`DOMAIN` opset import and the IR version that overloads need
    (10) are added when any function is installed. Modifies and returns ``model``.
    """
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name == op_type)]  # other ops' stay
    del model.functions[:]
    model.functions.extend(kept + [wanted[k] for k in sorted(wanted)])
    if wanted:
        if not any(op.domain == DOMAIN for op in model.opset_import):
            model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
        model.ir_version = max(model.ir_version, OVERLOAD_IR_VERSION)
    return model


def _plain_ir(model: ModelProto) -> None:
    """Lower the IR version once no function overloads remain: 8, or what the model's element types need."""
    if any(f.overload for f in model.functions) or model.ir_version < 8:
        return
    need = max([8] + [TYPE_IR.get(elem, 8) for elem in elem_types(model).values()])
    model.ir_version = min(need, model.ir_version)


def attach_present_functions(model: ModelProto) -> None:
    """Let every registered op present in ``model`` (re)build its nodes' local functions, in place.

    Raises:
        InputError: a custom node's weights have no known element type (from the op).
    """
    for op in _present(model):
        op.attach_functions(model)


def refresh_functions(model: ModelProto) -> ModelProto:
    """Return a copy whose custom nodes' local functions are rebuilt for their current element types.

    Raises:
        InputError: a custom node's weights have no known element type (from the op).
    """
    out = ModelProto()
    out.CopyFrom(model)
    attach_present_functions(out)
    return out


def convert_fp16_functions(model: ModelProto) -> None:
    """After FP16 conversion: let every op present rebuild its functions for the new element types, in place."""
    for op in _present(model):
        op.convert_fp16(model)


def inline_custom_ops(model: ModelProto) -> ModelProto:
    """Return a copy with every custom node replaced by standard ONNX ops (TensorRT without the plugin).

    Each op first rewrites what it spells better without its function (:meth:`CustomOp.prepare_inline`); the
    remaining custom nodes are replaced by their (rebuilt) function bodies. Other domains' functions stay.
    """
    for op in _present(model):
        model = op.prepare_inline(model)
    ops = custom_ops(model)
    out = refresh_functions(model)
    if not ops:
        return out
    out = inliner.inline_selected_functions(out, [(DOMAIN, op) for op in sorted(ops)], exclude=False)
    if not custom_ops(out):
        keep = [op for op in out.opset_import if op.domain != DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(keep)
    _plain_ir(out)
    return out


def strip_functions(model: ModelProto) -> ModelProto:
    """Return a copy that keeps the custom nodes but drops the :data:`DOMAIN` local functions and overload keys.

    The variant for TensorRT with the edgesqueeze plugin library loaded: the parser can only map the node to
    the plugin. onnxruntime cannot run it.
    """
    out = ModelProto()
    out.CopyFrom(model)
    for node in domain_nodes(out.graph):
        node.overload = ""
    kept = [f for f in out.functions if f.domain != DOMAIN]
    del out.functions[:]
    out.functions.extend(kept)
    _plain_ir(out)
    return out
