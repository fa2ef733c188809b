"""Helpers shared by the compat modules: versions, copies, graph walks, the checker and the onnxruntime proof."""
from __future__ import annotations

import onnx
from onnx import ModelProto, TensorProto

from ..errors import VerificationError
from ..model import checkable, iter_nodes

#: tolerance for FP16 models: the same graph may run with different FP16/FP32 kernels at two opsets
FP16_RTOL = 1e-2


def onnx_version_of(model: ModelProto, domain: str = "") -> int:
    for op in model.opset_import:
        if op.domain in (domain, "ai.onnx" if domain == "" else domain):
            return op.version
    return 0


def _copy(model: ModelProto) -> ModelProto:
    out = ModelProto()
    out.CopyFrom(model)
    return out




def _plugin_only(model: ModelProto) -> bool:
    """True when some node's domain is neither standard nor a local function (onnxruntime cannot run it)."""
    local = {(f.domain, f.name) for f in model.functions}
    return any(n.domain not in ("", "ai.onnx") and (n.domain, n.op_type) not in local
               for n in iter_nodes(model.graph))


def _check(model: ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(checkable(model), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        if _plugin_only(model) and "No Op registered" in str(exc):
            onnx.checker.check_model(checkable(model))  # plugin-only nodes have no schema: the structural check only
            return
        text = str(exc).strip().splitlines()[0]
        raise VerificationError(f"{what}: onnx.checker rejects the result: {text}",
                                hint="a bug in edgesqueeze.compat: report it with the model") from exc


def _verify(before: ModelProto, after: ModelProto, rtol: float, seed: int, shapes=None) -> dict:
    if _plugin_only(before) or _plugin_only(after):
        return {"checked": False, "reason": "plugin-only nodes: onnxruntime cannot run the model (the same "
                                            "rewrites are proven on the variant it can run)"}
    from ..model import random_feeds
    from ..ortutil import assert_close, run_model

    half = any(i.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16) for i in before.graph.initializer)
    if half:  # onnxruntime runs some FP16 ops in FP32 (inserted Casts) at one opset and natively at another
        rtol = max(rtol, FP16_RTOL)
    try:
        feeds = random_feeds(before, seed=seed, shapes=shapes)[0]
    except Exception as exc:  # noqa: BLE001 - dynamic shapes without --input: checker only
        return {"checked": False, "reason": f"no random inputs for this model ({exc})"}
    try:
        ref = run_model(before, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types: the input itself does not run here
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return {"checked": False, "reason": f"onnxruntime cannot run the input model here ({text})"}
    try:
        act = run_model(after, feeds)
    except Exception as exc:  # noqa: BLE001
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise VerificationError(f"the converted model does not run on onnxruntime: {text}",
                                hint="a bug in edgesqueeze.compat: report it with the model") from exc
    stats = assert_close(ref, act, rtol=rtol, what="the converted model and its input")
    worst = max((s["max_rel"] for s in stats.values()), default=0.0)
    return {"checked": True, "seed": seed, "rtol": rtol, "max_rel": float(worst)}
