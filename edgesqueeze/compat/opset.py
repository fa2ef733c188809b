"""Lower a model's ai.onnx opset where that is exact (onnx's version converter cannot go down).

Each ai.onnx node is looked up at the model's opset and at the target opset. When both resolve to the same
schema version nothing changes. Otherwise the op's rewrite (``rewrites.py``) spells the node the older way
(an input that used to be an attribute, a newer attribute that must be at its default, ...), and then every
node is checked against the older schema generically: attributes the older schema lacks must be at their
default and are dropped, inputs and outputs must fit, and the tensor types (from shape inference) must be
allowed. Anything that cannot be expressed exactly raises :class:`UnsupportedError` naming the node and op.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    defs,
    helper,
    numpy_helper,
)

from ..errors import UnsupportedError
from ..model import iter_graphs

#: attributes whose schema has no default but whose absence means a known value (drop when equal)
IMPLIED_DEFAULTS = {"dilations": "ones", "axes": None, "end": None, "start": 0}


def first_version(op: str) -> Optional[int]:
    """The opset in which ai.onnx ``op`` first appeared (None when it is not a standard op)."""
    versions = [s.since_version for s in defs.get_all_schemas_with_history() if s.name == op and s.domain == ""]
    return min(versions) if versions else None


def schema(op: str, opset: int):
    """The ai.onnx schema of ``op`` in effect at ``opset``, or None when the op does not exist there."""
    try:
        return defs.get_schema(op, opset, "")
    except defs.SchemaError:
        return None


def node_label(node: NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


class Context:
    """What rewrites need: the versions, tensor types/ranks, constants, and a place for new initializers."""

    def __init__(self, model: ModelProto, src: int, dst: int, types: Optional[Dict[str, int]],
                 shapes: Optional[Dict[str, list]], consts: Dict[str, np.ndarray]):
        self.model, self.src, self.dst = model, src, dst
        self.types, self.shapes, self.consts = types, shapes, consts
        self.new_initializers: List[TensorProto] = []
        self.changes: Dict[str, int] = {}
        self._names = {i.name for i in model.graph.initializer} | {n for node in model.graph.node for n in node.output}
        self._counter = 0
        self.in_function = False
        self.pending: List[NodeProto] = []
        self.used = set()
        for g in iter_graphs(model.graph):
            self.used.update(n for node in g.node for n in node.input)
            self.used.update(o.name for o in g.output)

    # -- questions -----------------------------------------------------------------------------------
    def const(self, node: NodeProto, index: int, what: str) -> Optional[np.ndarray]:
        """The constant value of input ``index`` (None when absent); raises when it is computed at run time."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            raise self.unsupported(node, f"its {what} input '{name}' is computed at run time; opset {self.dst} "
                                         f"needs it as a constant attribute")
        return self.consts[name]

    def rank(self, node: NodeProto, name: str) -> int:
        shape = (self.shapes or {}).get(name)
        if shape is None:
            raise self.unsupported(node, f"the rank of '{name}' is unknown (needed to rewrite it)")
        return len(shape)

    def dims(self, node: NodeProto, name: str) -> list:
        shape = (self.shapes or {}).get(name)
        if shape is None:
            raise self.unsupported(node, f"the shape of '{name}' is unknown (needed to rewrite it)")
        return shape

    def elem_type(self, name: str) -> Optional[int]:
        return (self.types or {}).get(name)

    # -- edits ---------------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        while True:
            self._counter += 1
            name = f"{base}_compat{self._counter}"
            if name not in self._names:
                self._names.add(name)
                return name

    def add_const(self, base: str, array: np.ndarray) -> str:
        """A new constant tensor: an initializer in a graph, a Constant node in a function body."""
        name = self.fresh(base)
        tensor = numpy_helper.from_array(np.asarray(array), name)
        if self.in_function:
            self.pending.append(helper.make_node("Constant", [], [name], value=tensor, name=name))
        else:
            self.new_initializers.append(tensor)
        self.consts[name] = np.asarray(array)
        return name

    def note(self, what: str) -> None:
        self.changes[what] = self.changes.get(what, 0) + 1

    def unsupported(self, node: NodeProto, why: str) -> UnsupportedError:
        return UnsupportedError(f"{node.op_type} node '{node_label(node)}' cannot be lowered from opset {self.src} "
                                f"to {self.dst}: {why}", node=node_label(node),
                                hint=f"re-export the model with opset_version={self.dst} (the exporter then spells "
                                     f"it in older ops), or pick a target whose TensorRT reads a newer opset")




def _attr_default(sch, name: str):
    a = sch.attributes.get(name)
    if a is not None and a.default_value.type != AttributeProto.UNDEFINED:
        return helper.get_attribute_value(a.default_value)
    return IMPLIED_DEFAULTS.get(name, "<no default>")


def _is_default(attr: AttributeProto, default) -> bool:
    value = helper.get_attribute_value(attr)
    if default == "ones":
        return isinstance(value, list) and all(v == 1 for v in value)
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(default, bytes):
        default = default.decode()
    return value == default


def _allowed(sch, formal) -> Optional[set]:
    ts = formal.type_str
    for c in sch.type_constraints:
        if c.type_param_str == ts:
            return set(c.allowed_type_strs)
    return {ts} if ts.startswith("tensor(") or ts.startswith("seq(") else None


_TYPE_NAMES = {TensorProto.FLOAT: "float", TensorProto.UINT8: "uint8", TensorProto.INT8: "int8",
               TensorProto.UINT16: "uint16", TensorProto.INT16: "int16", TensorProto.INT32: "int32",
               TensorProto.INT64: "int64", TensorProto.STRING: "string", TensorProto.BOOL: "bool",
               TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "double", TensorProto.UINT32: "uint32",
               TensorProto.UINT64: "uint64", TensorProto.BFLOAT16: "bfloat16"}


def check_against(node: NodeProto, ctx: Context, hi, lo) -> None:
    """Make ``node`` valid for the older schema ``lo`` in place (drop default-valued newer attributes, trailing
    empty inputs) or raise UnsupportedError."""
    keep = []
    for attr in node.attribute:
        if attr.name in lo.attributes:
            keep.append(attr)
            continue
        default = _attr_default(hi, attr.name) if hi is not None else "<no default>"
        if default != "<no default>" and _is_default(attr, default):
            ctx.note(f"{node.op_type}: dropped {attr.name} (default value)")
            continue
        raise ctx.unsupported(node, f"attribute {attr.name}={helper.get_attribute_value(attr)!r} has no "
                                    f"equivalent before opset {hi.since_version if hi else '?'}")
    if len(keep) != len(node.attribute):
        del node.attribute[:]
        node.attribute.extend(keep)
    formals = list(lo.inputs)
    variadic = bool(formals) and formals[-1].option == defs.OpSchema.FormalParameterOption.Variadic
    inputs = list(node.input)
    while inputs and not inputs[-1]:
        inputs.pop()
    if not variadic and len(inputs) > len(formals):
        raise ctx.unsupported(node, f"it has {len(inputs)} inputs; opset {ctx.dst} takes at most {len(formals)}")
    for i, f in enumerate(formals):
        if f.option == defs.OpSchema.FormalParameterOption.Single and (i >= len(inputs) or not inputs[i]):
            raise ctx.unsupported(node, f"its input {f.name} is missing; opset {ctx.dst} requires it")
    if len(inputs) != len(node.input):
        del node.input[:]
        node.input.extend(inputs)
    outs = list(node.output)
    while outs and not outs[-1]:
        outs.pop()
    ovariadic = bool(lo.outputs) and lo.outputs[-1].option == defs.OpSchema.FormalParameterOption.Variadic
    if not ovariadic and len(outs) > len(lo.outputs):
        raise ctx.unsupported(node, f"it has {len(outs)} outputs; opset {ctx.dst} has {len(lo.outputs)}")
    if ctx.types is None:
        return
    for names, formals_ in ((node.input, lo.inputs), (node.output, lo.outputs)):
        for i, name in enumerate(names):
            if not name or not formals_:
                continue
            formal = formals_[min(i, len(formals_) - 1)]
            allowed = _allowed(lo, formal)
            elem = ctx.types.get(name)
            if allowed is None or elem is None or elem not in _TYPE_NAMES:
                if elem is not None and elem not in _TYPE_NAMES and allowed is not None:
                    raise ctx.unsupported(node, f"'{name}' has element type {helper.tensor_dtype_to_string(elem)}, "
                                                f"which opset {ctx.dst} does not have")
                continue
            if f"tensor({_TYPE_NAMES[elem]})" not in allowed:
                raise ctx.unsupported(node, f"'{name}' is {_TYPE_NAMES[elem]}, which {node.op_type} accepts only "
                                            f"from opset {hi.since_version if hi else '?'}")


_INDEX_OPS = ("Gather", "GatherElements", "Scatter", "ScatterElements")


def _nonnegative_axes(node: NodeProto, ctx: Context) -> None:
    """Before opset 11 axes could not be negative (nor Gather-style indices): make them explicit."""
    for attr in node.attribute:
        if attr.name not in ("axis", "axes"):
            continue
        values = list(attr.ints) if attr.name == "axes" else [attr.i]
        if all(v >= 0 for v in values):
            continue
        ref = node.output[0] if node.op_type == "Unsqueeze" else node.input[0]
        shape = (ctx.shapes or {}).get(ref)
        if shape is None:
            raise ctx.unsupported(node, f"negative {attr.name} needs opset 11 (the rank of '{ref}' is unknown)")
        r = len(shape)
        if attr.name == "axes":
            del attr.ints[:]
            attr.ints.extend(v % r for v in values)
        else:
            attr.i = values[0] % r
        ctx.note(f"{node.op_type}: negative {attr.name} made positive")
    if node.op_type in _INDEX_OPS:
        idx = ctx.consts.get(node.input[1]) if len(node.input) > 1 else None
        if idx is None or (np.asarray(idx) < 0).any():
            raise ctx.unsupported(node, "negative (or run-time) indices are defined only from opset 11")


def convert_graph(graph: GraphProto, ctx: Context, rewrites) -> None:
    """Rewrite every ai.onnx node of ``graph`` (and its subgraphs) for ``ctx.dst`` in place."""
    out: List[NodeProto] = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                convert_graph(attr.g, ctx, rewrites)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    convert_graph(g, ctx, rewrites)
        if node.domain not in ("", "ai.onnx"):
            out.append(node)
            continue
        hi, lo = schema(node.op_type, ctx.src), schema(node.op_type, ctx.dst)
        if hi is None:
            raise UnsupportedError(f"{node.op_type} node '{node_label(node)}' is not a standard op at opset {ctx.src}",
                                   node=node_label(node))
        if lo is not None and lo.since_version == hi.since_version:
            out.append(node)
            continue
        rewrite = rewrites.get(node.op_type)
        notes_before = sum(ctx.changes.values())
        new_nodes = rewrite(node, ctx, hi, lo) if rewrite else None
        rewritten = new_nodes is not None
        if ctx.pending:
            new_nodes, ctx.pending = ctx.pending + list(new_nodes or [node]), []
        if new_nodes is None:
            if lo is None:
                first = first_version(node.op_type)
                raise ctx.unsupported(node, f"{node.op_type} first appears in opset {first}")
            new_nodes = [node]
        for n in new_nodes:
            if n.domain not in ("", "ai.onnx"):
                continue
            n_hi = hi if n.op_type == node.op_type else schema(n.op_type, ctx.src)
            n_lo = lo if n.op_type == node.op_type else schema(n.op_type, ctx.dst)
            if n_lo is None:
                raise ctx.unsupported(node, f"its rewrite needs {n.op_type}, absent at opset {ctx.dst}")
            check_against(n, ctx, n_hi, n_lo)
            if ctx.dst < 11 <= ctx.src:
                _nonnegative_axes(n, ctx)
        if not rewritten or sum(ctx.changes.values()) == notes_before:
            ctx.note(f"{node.op_type} {hi.since_version}->{lo.since_version if lo else '-'}: same spelling")
        out.extend(new_nodes)
    del graph.node[:]
    graph.node.extend(out)
