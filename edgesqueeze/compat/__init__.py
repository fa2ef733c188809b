"""Make a model loadable by an older runtime: lower its ai.onnx opset and its IR version, exactly.

New exporters write opset 18+ / IR 10; JetPack 4.6 (TensorRT 8.2, onnxruntime 1.10) reads opset <= 13 and
IR <= 8, and onnx's version converter cannot go down. The per-target limits are data (``onnx_max_opset``,
``onnx_max_ir`` in ``devices/profiles.json``).

>>> import onnx
>>> from edgesqueeze.compat import downgrade_opset, make_target_compatible
>>> m13, report = downgrade_opset(onnx.load("examples/digits/digits_cnn.onnx"), 13)     # doctest: +SKIP
>>> report["rewrites"]                                                                  # doctest: +SKIP
{'Clip 13: rewritten': 1, 'Conv 11->11': 4, ...}

Every result is checked with ``onnx.checker`` (full) and, where onnxruntime can run it, proven equal to the
input on seeded random inputs (fp32, 1e-5 relative).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
from onnx import ModelProto, helper, numpy_helper

from ..errors import UnsupportedError
from ..model import iter_graphs as _graphs
from .common import FP16_RTOL, _check, _copy, _verify, onnx_version_of
from .ir import _inline_for_ir, limit_ir_version, required_ir_version
from .opset import Context, convert_graph
from .rewrites import REWRITES

__all__ = ["FP16_RTOL", "convert_file", "downgrade_opset", "limit_ir_version", "lower_to_limits",
           "make_target_compatible", "onnx_version_of", "required_ir_version"]


def _used_names(model: ModelProto) -> set:
    used = set()
    for g in _graphs(model.graph):
        for n in g.node:
            used.update(n.input)
        used.update(o.name for o in g.output)
    return used


def _tensor_info(model: ModelProto):
    """Element types, shapes and constant values by tensor name (shape inference on a copy)."""
    from ..model import infer_shapes

    try:
        inferred = infer_shapes(model)
    except Exception:  # noqa: BLE001 - a model shape inference cannot follow still converts; checks are skipped
        inferred = model
    types: Dict[str, int] = {}
    shapes: Dict[str, list] = {}
    for g in _graphs(inferred.graph):
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            t = vi.type.tensor_type
            if vi.type.HasField("tensor_type"):
                types[vi.name] = t.elem_type
                if t.HasField("shape"):
                    shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                       for d in t.shape.dim]
        for init in g.initializer:
            types[init.name] = init.data_type
            shapes[init.name] = list(init.dims)
    consts = {i.name: numpy_helper.to_array(i) for g in _graphs(model.graph) for i in g.initializer}
    for g in _graphs(model.graph):
        for n in g.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                for a in n.attribute:
                    if a.name == "value":
                        consts[n.output[0]] = numpy_helper.to_array(a.t)
                    elif a.name in ("value_int", "value_ints", "value_float", "value_floats"):
                        consts[n.output[0]] = np.asarray(helper.get_attribute_value(a))
    return types, shapes, consts


def _function_consts(f) -> Dict[str, np.ndarray]:
    """Values of a function body's Constant nodes that hold a tensor (not attribute references)."""
    out = {}
    for n in f.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value" and not a.ref_attr_name:
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def downgrade_opset(model: ModelProto, opset: int, *, verify: bool = True, rtol: float = 1e-5,
                    seed: int = 0) -> Tuple[ModelProto, dict]:
    """Return ``model`` rewritten for ai.onnx ``opset`` (lower than its own) and a JSON-ready report.

    Nodes whose schema is the same at ``opset`` (or differs only by added types the model does not use) are
    relabelled; known spelling changes are rewritten (see :mod:`edgesqueeze.compat.rewrites`); local
    functions' bodies are lowered too. The input model is not modified.

    Args:
        model: a validated ModelProto (static shapes help: some rewrites need ranks or sizes).
        opset: the target ai.onnx opset. A model already at or below it is returned unchanged (a copy).
        verify: prove the result equal to the input on onnxruntime (seeded random inputs, ``rtol``; FP16
            models at most ``FP16_RTOL``, since onnxruntime may run an FP16 op in FP32 at one opset only).

    Returns:
        ``(model, report)``; report = {"from", "to", "changed", "rewrites": {what: count}, "nodes_before",
        "nodes_after", "verification"}.

    Raises:
        UnsupportedError: a node has no exact spelling at ``opset`` (the message names the node and op).
        VerificationError: the result fails onnx.checker or differs numerically (a bug: please report it).
    """
    src = onnx_version_of(model)
    opset = int(opset)
    report = {"from": src, "to": min(src, opset), "changed": False, "rewrites": {},
              "nodes_before": len(model.graph.node), "nodes_after": len(model.graph.node), "verification": None}
    if opset < 7:
        raise UnsupportedError(f"opset {opset} is too old: edgesqueeze lowers models to opset 7 or later")
    if src <= opset:
        return _copy(model), report
    out = _copy(model)
    used_before = _used_names(out)
    types, shapes, consts = _tensor_info(model)
    ctx = Context(out, src, opset, types, shapes, consts)
    convert_graph(out.graph, ctx, REWRITES)
    for f in out.functions:
        f_src = next((o.version for o in f.opset_import if o.domain in ("", "ai.onnx")), 0)
        if f_src > opset:
            fctx = Context(out, f_src, opset, None, None, _function_consts(f))
            fctx.in_function = True
            fctx._names = {n for node in f.node for n in node.output} | set(f.input)
            fctx.used = {n for node in f.node for n in node.input} | set(f.output)
            convert_graph(f, fctx, REWRITES)
            for k, v in fctx.changes.items():
                ctx.note(f"function {f.name}: {k}")
            for o in f.opset_import:
                if o.domain in ("", "ai.onnx"):
                    o.version = opset
    out.graph.initializer.extend(ctx.new_initializers)
    used_after = _used_names(out)
    keep = [i for i in out.graph.initializer if i.name in used_after or i.name not in used_before]
    if len(keep) != len(out.graph.initializer):
        del out.graph.initializer[:]
        out.graph.initializer.extend(keep)
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    _check(out, f"opset {src} -> {opset}")
    report.update(changed=True, to=opset, rewrites=dict(sorted(ctx.changes.items())),
                  nodes_after=len(out.graph.node))
    report["verification"] = _verify(model, out, rtol, seed) if verify else {"checked": False,
                                                                           "reason": "verify off"}
    return out, report


def lower_to_limits(model: ModelProto, max_opset: Optional[int], max_ir: Optional[int], *, verify: bool = True,
                    rtol: float = 1e-5, seed: int = 0, shapes=None) -> Tuple[ModelProto, dict]:
    """Return ``model`` within ai.onnx ``max_opset`` and IR ``max_ir`` (None = no limit) and a report.

    Local functions the IR cannot hold are inlined first (custom nodes become standard ops), then the opset is
    lowered (:func:`downgrade_opset`) and the IR version limited (:func:`limit_ir_version`); the result is proven
    equal to the input on onnxruntime when it can run both.

    Raises:
        UnsupportedError: no exact spelling within the limits (names the node and op).
    """
    report: dict = {"max_opset": max_opset, "max_ir": max_ir, "changed": False,
                    "opset": {"from": onnx_version_of(model), "to": onnx_version_of(model)},
                    "ir": {"from": model.ir_version, "to": model.ir_version}}
    src = model
    if max_ir is not None:
        model = _inline_for_ir(model, max_ir, report)
    if max_opset is not None and onnx_version_of(model) > max_opset:
        model, report["opset"] = downgrade_opset(model, max_opset, verify=False)
        report["opset"].pop("verification", None)  # the whole result is verified below
    if max_ir is not None and model.ir_version > max_ir:
        model, rep = limit_ir_version(model, max_ir)
    report["opset"].update({"from": onnx_version_of(src), "to": onnx_version_of(model)})
    report["ir"] = {"from": src.ir_version, "to": model.ir_version}
    report["changed"] = model is not src
    if report["changed"] and verify:
        report["verification"] = _verify(src, model, rtol, seed, shapes)
    elif not report["changed"]:
        model = _copy(model)
    return model, report


def make_target_compatible(model: ModelProto, profile, *, verify: bool = True, rtol: float = 1e-5,
                           seed: int = 0) -> Tuple[ModelProto, dict]:
    """Return ``model`` lowered to what ``profile`` (a DeviceProfile or its name) loads, and a report.

    Does nothing (returns a copy) for a profile without ONNX limits (``onnx_max_opset``/``onnx_max_ir`` null).
    Custom nodes whose function overloads the target's IR cannot hold are inlined first (a plain model for the
    device's onnxruntime; TensorRT gets its explicit plugin/inlined variants from the bundle).

    Raises:
        UnsupportedError: no exact spelling at the target's opset/IR (names the node and op, and the target).
    """
    from ..devices import get_profile

    profile = get_profile(profile)
    max_opset, max_ir = profile.onnx_max_opset, profile.onnx_max_ir
    if max_opset is None and max_ir is None:
        model, report = lower_to_limits(model, None, None)
        report.update(target=profile.name, reason=f"{profile.name} has no ONNX opset/IR limit")
        return model, report
    try:
        model, report = lower_to_limits(model, max_opset, max_ir, verify=verify, rtol=rtol, seed=seed)
    except UnsupportedError as exc:
        exc.message = (f"{profile.name} (TensorRT {profile.tensorrt}, max opset {max_opset}, IR {max_ir}): "
                       f"{exc.message}")
        exc.args = (exc.message,)
        raise
    report["target"] = profile.name
    return model, report


def convert_file(model_path, output, *, opset: Optional[int] = None, target: Optional[str] = None,
                 ir: Optional[int] = None, input_shapes=None, static: bool = False) -> dict:
    """``edgesqueeze convert``: write ``model_path`` lowered to ``opset``/``ir`` (or ``target``'s limits).

    Explicit ``opset``/``ir`` win over the target's limits. The input file is never modified. Symbolic input
    dims are kept (``input_shapes`` give the verification's shapes) unless ``static`` pins them.

    Returns:
        The report (input, output, target, opset/IR before and after, rewrites, verification).

    Raises:
        InputError: no ``opset`` or ``target`` given, bad file. UnsupportedError: no exact spelling.
    """
    from ..errors import InputError
    from ..model import load_model, parse_input_shapes, save_model

    if opset is None and target is None and ir is None:
        raise InputError("nothing to convert to: give --opset N, --target T or --ir N",
                         hint="edgesqueeze devices lists the targets; tx2 = opset 13, IR 8")
    max_opset, max_ir, name = opset, ir, None
    if target is not None:
        from ..devices import get_profile

        profile = get_profile(target)
        name = profile.name
        max_opset = opset if opset is not None else profile.onnx_max_opset
        max_ir = ir if ir is not None else profile.onnx_max_ir
    shapes = parse_input_shapes(input_shapes)
    model = load_model(model_path, shapes, pin=static)
    try:
        out, report = lower_to_limits(model, max_opset, max_ir, shapes=shapes)
    except UnsupportedError as exc:
        exc.path = str(model_path)
        if name:
            exc.message = f"for {name} (max opset {max_opset}, IR {max_ir}): {exc.message}"
        raise
    save_model(out, output, inputs=(model_path,))
    report.update(input=str(model_path), output=str(output), target=name)
    return report
