"""Which layers would fall back from DLA to the GPU: a prediction from DLA's documented limits.

Rules from the TensorRT Developer Guide, "Working with DLA > DLA Supported Layers and Restrictions" (TensorRT 8.5
to 10.x): DLA runs INT8 and FP16 only; static shapes only (a profile's min = opt = max); batch size up to 4096;
non-batch dims up to 8192 (C, H, W); convolution/deconvolution: 2-D, kernel 1-32, padding 0-31 (and less than
the kernel), stride 1-8, dilation 1-32, groups up to 8192, output maps up to 8192; pooling: max/average, window
1-8, padding 0-7, stride 1-16; activations ReLU, Sigmoid, TanH, clipped ReLU, leaky ReLU; element-wise
sum/sub/prod/max/min/div/pow and comparisons with same-shape or per-channel broadcast; concatenation along the
channel axis only; resize nearest (integer scales 1-32) or bilinear; softmax along channels (Orin). Every other
layer runs on the GPU when GPU fallback is allowed (``--allowGPUFallback``), else the build fails.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import onnx
from onnx import numpy_helper

from .devices import get_profile

_ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "PRelu"}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Max", "Min", "Div", "Pow", "Equal", "Greater", "Less"}
_FREE = {"Identity", "Dropout", "BatchNormalization", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
         "LRN", "Slice", "Abs", "Sin", "Cos", "QuantizeLinear", "DequantizeLinear", "Gemm", "MatMul", "Resize",
         "Upsample", "Softmax", "ReduceMax", "Concat"} | _ACTIVATIONS | _ELEMENTWISE


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _conv(node, shapes) -> Optional[str]:
    k = list(_attr(node, "kernel_shape", []) or [])
    if not k:
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        k = list(w[2:]) if w else []
    if len(k) != 2:
        return f"{len(k)}-D kernel (DLA: 2-D only)"
    checks = [("kernel", k, 1, 32), ("padding", _attr(node, "pads", [0]) or [0], 0, 31),
              ("stride", _attr(node, "strides", [1]) or [1], 1, 8),
              ("dilation", _attr(node, "dilations", [1]) or [1], 1, 32)]
    for what, vals, lo, hi in checks:
        bad = [v for v in vals if not lo <= v <= hi]
        if bad:
            return f"{what} {bad[0]} outside DLA's {lo}-{hi}"
    if max(_attr(node, "pads", [0]) or [0]) >= min(k):
        return "padding not smaller than the kernel"
    if (_attr(node, "group", 1) or 1) > 8192:
        return "more than 8192 groups"
    out = shapes.get(node.output[0])
    if out and len(out) > 1 and isinstance(out[1], int) and out[1] > 8192:
        return f"{out[1]} output maps (DLA: up to 8192)"
    if node.op_type == "ConvTranspose" and (_attr(node, "group", 1) != 1 or max(_attr(node, "pads", [0]) or [0])):
        return "deconvolution with groups or padding (DLA: groups 1, padding 0)"
    return None


def _pool(node, shapes) -> Optional[str]:
    if node.op_type.startswith("Global"):
        dims = shapes.get(node.input[0]) or []
        k = [d for d in dims[2:] if isinstance(d, int)]
    else:
        k = list(_attr(node, "kernel_shape", []) or [])
    for what, vals, lo, hi in (("window", k, 1, 8), ("padding", _attr(node, "pads", [0]) or [0], 0, 7),
                               ("stride", _attr(node, "strides", [1]) or [1], 1, 16)):
        bad = [v for v in vals if not lo <= v <= hi]
        if bad:
            return f"pooling {what} {bad[0]} outside DLA's {lo}-{hi}"
    return None


def _concat(node, shapes) -> Optional[str]:
    rank = len(shapes.get(node.output[0]) or [0, 0, 0, 0])
    axis = _attr(node, "axis", 1)
    return None if axis % rank == 1 else f"concatenation along axis {axis} (DLA: channel axis only)"


def _softmax(node, shapes) -> Optional[str]:
    rank = len(shapes.get(node.output[0]) or [0, 0, 0, 0])
    return None if _attr(node, "axis", -1) % rank == 1 else "softmax not along the channel axis"


def _resize(node, shapes) -> Optional[str]:
    mode = _attr(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return None if mode in ("nearest", "linear") else f"resize mode {mode} (DLA: nearest or bilinear)"


_CHECKS: Dict[str, Callable] = {"Conv": _conv, "ConvTranspose": _conv, "MaxPool": _pool, "AveragePool": _pool,
                                "GlobalAveragePool": _pool, "GlobalMaxPool": _pool, "Concat": _concat,
                                "Softmax": _softmax, "Resize": _resize}


def _shapes(model: onnx.ModelProto) -> Dict[str, list]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                        for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        out[init.name] = list(numpy_helper.to_array(init).shape)
    return out


def dla_report(model: onnx.ModelProto, target: str, precision: str = "fp16") -> dict:
    """Predict per layer whether TensorRT would place it on DLA or fall back to the GPU.

    Args:
        model: the ONNX model.
        target: a device profile name (its ``dla_cores`` say whether there is a DLA at all).
        precision: the build precision (DLA runs int8 and fp16 only).

    Returns:
        ``{"target", "dla_cores", "precision", "blocking": [reason], "layers": [{"name", "op", "engine",
        "reason"}], "on_dla", "on_gpu"}``; ``blocking`` lists what keeps the whole network off DLA.
    """
    prof = get_profile(target)
    shapes = _shapes(model)
    blocking: List[str] = []
    if not prof.dla_cores:
        blocking.append(f"{prof.name} has no DLA")
    if precision not in ("int8", "fp16"):
        blocking.append(f"precision {precision}: DLA runs INT8 and FP16 only")
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = shapes.get(inp.name) or []
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            blocking.append(f"input {inp.name} has dynamic dims {dims}: DLA needs static shapes (min = opt = max)")
        elif dims and dims[0] > 4096:
            blocking.append(f"input {inp.name}: batch {dims[0]} (DLA: up to 4096)")
        elif any(d > 8192 for d in dims[1:]):
            blocking.append(f"input {inp.name}: a dimension over 8192 {dims}")
    layers = []
    for i, node in enumerate(model.graph.node):
        if node.op_type in _CHECKS:
            reason = _CHECKS[node.op_type](node, shapes)
        elif node.op_type in _FREE:
            reason = None
        else:
            reason = f"{node.op_type} is not a DLA layer"
        layers.append({"name": node.name or f"{node.op_type}_{i}", "op": node.op_type,
                       "engine": "GPU" if reason or blocking else "DLA", "reason": reason or ""})
    on_dla = sum(1 for x in layers if x["engine"] == "DLA")
    return {"target": prof.name, "dla_cores": prof.dla_cores, "precision": precision, "blocking": blocking,
            "layers": layers, "on_dla": on_dla, "on_gpu": len(layers) - on_dla}


def format_dla_report(r: dict) -> str:
    """The text ``inspect --dla`` prints: what blocks DLA, the layers that fall back and why, the counts."""
    lines = [f"DLA on {r['target']} ({r['dla_cores']} core(s)), {r['precision']}: {r['on_dla']} layer(s) on DLA, "
             f"{r['on_gpu']} on the GPU (predicted from TensorRT's documented DLA limits)"]
    lines += [f"  whole network on the GPU: {b}" for b in r["blocking"]]
    lines += [f"  GPU fallback: {x['name']} ({x['op']}): {x['reason']}" for x in r["layers"] if x["reason"]]
    return "\n".join(lines)
