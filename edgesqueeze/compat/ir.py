"""IR versions: what a model needs, and lowering it (inlining what an older IR cannot hold)."""
from __future__ import annotations

from typing import Tuple

from onnx import ModelProto, TensorProto, helper, inliner

from ..errors import UnsupportedError
from ..model import iter_graphs as _graphs
from ..plugins.ops import TYPE_IR, custom_ops, inline_custom_ops
from .common import _check, _copy, onnx_version_of


def required_ir_version(model: ModelProto) -> Tuple[int, str]:
    """The lowest IR version that can hold ``model`` and the feature that sets it."""
    need, why = 3, "the IR baseline"

    def bump(ir, reason):
        nonlocal need, why
        if ir > need:
            need, why = ir, reason

    opset = onnx_version_of(model)
    for row in helper.VERSION_TABLE:  # (onnx release, IR, ai.onnx opset, ml opset, ...)
        if row[2] >= opset:
            bump(row[1], f"ai.onnx opset {opset}")
            break
    if model.functions:
        bump(8, "model-local functions")
    if any(f.overload for f in model.functions) or any(n.overload for g in _graphs(model.graph) for n in g.node):
        bump(10, "function overloads")
    elems = {i.data_type for g in _graphs(model.graph) for i in g.initializer}
    elems |= {vi.type.tensor_type.elem_type for g in _graphs(model.graph)
              for vi in list(g.input) + list(g.output) + list(g.value_info)}
    for elem, ir in TYPE_IR.items():
        if elem in elems:
            bump(ir, f"{TensorProto.DataType.Name(elem)} tensors")
    return need, why


def limit_ir_version(model: ModelProto, ir: int) -> Tuple[ModelProto, dict]:
    """Return ``model`` with IR version at most ``ir`` and a report {"from", "to", "changed"}.

    Raises:
        UnsupportedError: the model needs a newer IR: function overloads need IR 10 (IR 8 cannot hold them:
            inline the custom nodes), local functions IR 8, float8 IR 9, int4 IR 10, and an opset its IR
            (e.g. opset 18 needs IR 8: lower the opset first).
    """
    ir = int(ir)
    out = _copy(model)
    report = {"from": model.ir_version, "to": min(model.ir_version, ir), "changed": False}
    if model.ir_version <= ir:
        return out, report
    need, why = required_ir_version(model)
    if need > ir:
        hint = ("inline the custom nodes (edgesqueeze convert --target does) or keep IR 10"
                if why == "function overloads" else "lower the opset first (--opset)" if "opset" in why else None)
        raise UnsupportedError(f"IR version {ir} cannot hold {why} (needs IR {need})", hint=hint)
    out.ir_version = ir
    _check(out, f"IR {model.ir_version} -> {ir}")
    report.update(to=ir, changed=True)
    return out, report


def _inline_for_ir(model: ModelProto, max_ir: int, report: dict) -> ModelProto:
    """Inline what the target's IR cannot hold: overloaded custom functions (< 10), any local function (< 8)."""
    overloads = any(f.overload for f in model.functions)
    if model.functions and (max_ir < 8 or (overloads and max_ir < 10)):
        if custom_ops(model):
            model = inline_custom_ops(model)
            report["inlined"] = "custom nodes replaced by their function bodies (standard ops)"
        if model.functions:
            model = inliner.inline_local_functions(model)
            report["inlined"] = "local functions inlined"
    return model
