"""Depthwise-separable fusion: depthwise Conv -> [BN] -> [act] -> 1x1 Conv -> [BN] -> [act] becomes one
``edgesqueeze::DepthwiseSeparableConv`` node (see :mod:`edgesqueeze.plugins.dwsep`).

The node carries an ONNX local function that spells the block out in standard ops, so onnxruntime (and
TensorRT without the edgesqueeze plugin) runs it unchanged; TensorRT with the plugin library runs one CUDA
kernel pair without writing the depthwise output to memory. On by default for GPU targets only.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from ..plugins.dwsep import OP_TYPE, make_dwsep_node
from ..plugins.ops import DOMAIN
from ._graph import attr_list, const, const_info, new_const, sole_consumer, take_over_outputs
from .fold_batchnorm import bn_scale_shift
from .registry import register

_FLT_MAX = 3.4028234663852886e38


def _activation(node: Optional[gs.Node]) -> Optional[Tuple[str, float, float]]:
    """(name, alpha, beta) of a supported activation node, else None."""
    if node is None:
        return None
    if node.op == "Relu":
        return "relu", 0.0, 0.0
    if node.op == "Sigmoid":
        return "sigmoid", 0.0, 0.0
    if node.op == "HardSwish":
        return "hard_swish", 0.0, 0.0
    if node.op == "LeakyRelu":
        return "leaky_relu", float(node.attrs.get("alpha", 0.01)), 0.0
    if node.op == "HardSigmoid":
        return "hard_sigmoid", float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    if node.op == "Clip":
        if len(node.inputs) > 1:  # opset >= 11: min/max are optional inputs
            bounds = []
            for i, default in ((1, -_FLT_MAX), (2, _FLT_MAX)):
                if len(node.inputs) > i and node.inputs[i].name:
                    v = const(node.inputs[i])
                    if v is None or v.size != 1:
                        return None
                    bounds.append(float(v.reshape(-1)[0]))
                else:
                    bounds.append(default)
            return "clip", bounds[0], bounds[1]
        return "clip", float(node.attrs.get("min", -_FLT_MAX)), float(node.attrs.get("max", _FLT_MAX))
    return None


def _is_depthwise(node: gs.Node) -> bool:
    w = const_info(node.inputs[1]) if node.op == "Conv" and len(node.inputs) > 1 else None
    if w is None or w.ndim != 4 or w.shape[1] != 1 or w.dtype not in (np.float32, np.float16):
        return False
    return int(node.attrs.get("group", 1)) == w.shape[0] > 1 and node.attrs.get("auto_pad", "NOTSET") in (
        "NOTSET", b"NOTSET")


def _is_pointwise(node: Optional[gs.Node], channels: int) -> bool:
    if node is None or node.op != "Conv" or len(node.inputs) < 2:
        return False
    w = const_info(node.inputs[1])
    return (w is not None and w.ndim == 4 and w.shape[1:] == (channels, 1, 1)
            and int(node.attrs.get("group", 1)) == 1 and attr_list(node, "strides", (1, 1)) == [1, 1]
            and not any(attr_list(node, "pads", (0, 0, 0, 0))) and attr_list(node, "dilations", (1, 1)) == [1, 1]
            and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET", "VALID", b"VALID"))


def _stage(graph, conv: gs.Node):
    """Follow conv -> [BN] -> [activation]; returns (nodes, weights, bias, activation, last node)."""
    w = const(conv.inputs[1]).astype(np.float64)
    c_out = w.shape[0]
    b = const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2].name else np.zeros(c_out)
    if b is None:
        return None
    b = np.asarray(b, np.float64).reshape(-1)
    nodes, last = [conv], conv
    nxt = sole_consumer(graph, conv.outputs[0])
    if nxt is not None and nxt.op == "BatchNormalization":
        ss = bn_scale_shift(nxt)
        if ss is not None and ss[0].size == c_out:
            w = w * ss[0].reshape(-1, 1, 1, 1)
            b = b * ss[0] + ss[1]
            nodes.append(nxt)
            last = nxt
            nxt = sole_consumer(graph, nxt.outputs[0])
    act = _activation(nxt)
    if act is not None and len(nxt.outputs) == 1:
        nodes.append(nxt)
        last = nxt
    else:
        act = ("none", 0.0, 0.0)
    return nodes, w, b, act, last


@register("fuse_depthwise_separable", opsets=(13, 10 ** 6), default=False, gpu_only=True,
          description="depthwise Conv [+BN][+act] + 1x1 Conv [+BN][+act] -> edgesqueeze::DepthwiseSeparableConv "
                      "(GPU targets)")
def fuse_depthwise_separable(graph, ctx):
    """Fuse depthwise-separable blocks into one custom node with a local function."""
    for dw in [n for n in graph.nodes if _is_depthwise(n)]:
        if not dw.outputs or len(dw.inputs[0].shape or ()) != 4:
            continue
        first = _stage(graph, dw)
        if first is None:
            continue
        nodes1, w_dw, b_dw, act1, last1 = first
        pw = sole_consumer(graph, last1.outputs[0])
        if not _is_pointwise(pw, w_dw.shape[0]):
            continue
        second = _stage(graph, pw)
        if second is None:
            continue
        nodes2, w_pw, b_pw, act2, last2 = second
        dtype = const(dw.inputs[1]).dtype
        base = dw.name or "dwsep"
        proto = make_dwsep_node(
            ["x", "a", "b", "c", "d"], ["y"], kernel_shape=list(w_dw.shape[2:]),
            strides=attr_list(dw, "strides", (1, 1)), pads=attr_list(dw, "pads", (0, 0, 0, 0)),
            dilations=attr_list(dw, "dilations", (1, 1)), dw_activation=act1[0], dw_alpha=act1[1],
            dw_beta=act1[2], pw_activation=act2[0], pw_alpha=act2[1], pw_beta=act2[2])
        attrs = {a.name: _plain(helper.get_attribute_value(a)) for a in proto.attribute}
        inputs = [dw.inputs[0]] + [new_const(ctx, f"{base}_{tag}", v.astype(dtype)) for tag, v in
                                   (("w_dw", w_dw), ("b_dw", b_dw), ("w_pw", w_pw), ("b_pw", b_pw))]
        fused = gs.Node(OP_TYPE, ctx.unique(f"{base}_dwsep"), attrs=attrs, inputs=inputs, outputs=[], domain=DOMAIN)
        graph.nodes.append(fused)
        take_over_outputs(fused, last2)
        for n in nodes1 + nodes2:
            n.inputs.clear()
            n.outputs.clear()
        ctx.record("depthwise_separable:" + "+".join(n.op for n in nodes1 + nodes2), nodes1 + nodes2)
    return graph


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [int(v) for v in value]
    return value
