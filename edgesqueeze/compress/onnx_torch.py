"""Run an ONNX graph as a trainable ``torch.nn.Module`` (``torch`` extra).

``OnnxModule`` interprets the graph node by node with torch functions; the float weights of Conv / Gemm /
MatMul / PRelu / Add / Mul nodes become ``nn.Parameter`` s, every other initializer a constant. It takes the
common CNN ops (the table ``_OPS``); anything else raises UnsupportedError naming the node, before training
starts. A Reshape whose target's first dim equals the model's static batch follows the batch of the input, so
a batch-1 export trains on mini-batches. onnx2torch was tried and not used: it imports torchvision at import
time (its NMS / RoIAlign converters), which this project does not depend on.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
from onnx import ModelProto, numpy_helper

from .._lazy import require
from ..errors import UnsupportedError
from ._layers import attr

TRAINABLE = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "PRelu": (1,), "Add": (0, 1), "Mul": (0, 1)}


def _pads(node, rank):
    p = list(attr(node, "pads", [0] * (2 * rank)))
    if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise UnsupportedError("auto_pad SAME is not supported here", node=node.name)
    return p


def _conv(F, torch, n, x, w, b=None):
    rank = w.dim() - 2
    p = _pads(n, rank)
    if p[:rank] != p[rank:]:
        x = F.pad(x, [v for i in reversed(range(rank)) for v in (p[i], p[i + rank])])
        p = [0] * (2 * rank)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return fn(x, w, b, stride=list(attr(n, "strides", [1] * rank)), padding=p[:rank],
              dilation=list(attr(n, "dilations", [1] * rank)), groups=attr(n, "group", 1))


def _pool(F, torch, n, x, kind):
    k = list(attr(n, "kernel_shape"))
    rank = len(k)
    p = _pads(n, rank)
    if p[:rank] != p[rank:]:
        raise UnsupportedError("asymmetric pooling pads", node=n.name)
    st, ceil = list(attr(n, "strides", k)), bool(attr(n, "ceil_mode", 0))
    if kind == "max":
        return {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank](x, k, st, p[:rank], ceil_mode=ceil)
    return {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank](
        x, k, st, p[:rank], ceil_mode=ceil, count_include_pad=bool(attr(n, "count_include_pad", 0)))


def _gemm(F, torch, n, a, b, c=None):
    a = a.t() if attr(n, "transA", 0) else a
    b = b.t() if attr(n, "transB", 0) else b
    y = attr(n, "alpha", 1.0) * (a @ b)
    return y if c is None else y + attr(n, "beta", 1.0) * c


def _reshape(F, torch, n, x, shape, batch):
    s = [int(v) for v in shape.tolist()]
    s = [x.shape[i] if v == 0 and not attr(n, "allowzero", 0) else v for i, v in enumerate(s)]
    if s and s[0] == batch and x.shape[0] != batch:
        s[0] = x.shape[0]
    return x.reshape(s)


def _clip(F, torch, n, x, lo=None, hi=None):
    lo = attr(n, "min", None) if lo is None else float(lo)
    hi = attr(n, "max", None) if hi is None else float(hi)
    return torch.clamp(x, lo, hi)


def _slice(F, torch, n, x, starts, ends, axes=None, steps=None):
    axes = axes.tolist() if axes is not None else list(range(len(starts)))
    steps = steps.tolist() if steps is not None else [1] * len(starts)
    idx = [slice(None)] * x.dim()
    for a, s0, e0, st in zip(axes, starts.tolist(), ends.tolist(), steps):
        idx[a] = slice(int(s0), min(int(e0), x.shape[a]) if e0 > 0 else int(e0), int(st))
    return x[tuple(idx)]


_OPS = {
    "Conv": _conv, "Gemm": _gemm, "Reshape": None, "Clip": _clip, "Slice": _slice,
    "MaxPool": lambda F, t, n, x: _pool(F, t, n, x, "max"),
    "AveragePool": lambda F, t, n, x: _pool(F, t, n, x, "avg"),
    "GlobalAveragePool": lambda F, t, n, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda F, t, n, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "MatMul": lambda F, t, n, a, b: a @ b,
    "Add": lambda F, t, n, a, b: a + b, "Sub": lambda F, t, n, a, b: a - b,
    "Mul": lambda F, t, n, a, b: a * b, "Div": lambda F, t, n, a, b: a / b,
    "Relu": lambda F, t, n, x: F.relu(x), "Sigmoid": lambda F, t, n, x: t.sigmoid(x),
    "Tanh": lambda F, t, n, x: t.tanh(x), "Identity": lambda F, t, n, x: x,
    "Shape": lambda F, t, n, x: t.tensor(list(x.shape), dtype=t.int64),
    "Cast": lambda F, t, n, x: x.to({1: t.float32, 6: t.int32, 7: t.int64, 9: t.bool}[attr(n, "to", 1)]),
    "Dropout": lambda F, t, n, x, *r: x,
    "LeakyRelu": lambda F, t, n, x: F.leaky_relu(x, attr(n, "alpha", 0.01)),
    "HardSigmoid": lambda F, t, n, x: t.clamp(attr(n, "alpha", 0.2) * x + attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda F, t, n, x: F.hardswish(x),
    "PRelu": lambda F, t, n, x, s: t.where(x >= 0, x, x * s),
    "Softmax": lambda F, t, n, x: t.softmax(x, attr(n, "axis", -1)),
    "Flatten": lambda F, t, n, x: x.flatten(attr(n, "axis", 1)) if attr(n, "axis", 1) else x.reshape(1, -1),
    "Transpose": lambda F, t, n, x: x.permute(*attr(n, "perm", list(reversed(range(x.dim()))))),
    "Concat": lambda F, t, n, *xs: t.cat(xs, attr(n, "axis", 0)),
    "BatchNormalization": lambda F, t, n, x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0,
                                                                      attr(n, "epsilon", 1e-5)),
}


def check_convertible(model: ModelProto) -> None:
    """Raise UnsupportedError naming the first node ``OnnxModule`` cannot run."""
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in _OPS and n.op_type != "Constant":
            raise UnsupportedError(f"{n.domain + '::' if n.domain else ''}{n.op_type} cannot be trained in torch "
                                   "here (supported: " + ", ".join(sorted(_OPS)) + ")", node=n.name or n.output[0])


def onnx_module(model: ModelProto):
    """A ``torch.nn.Module`` computing ``model``; its trainable weights are named after their initializers.

    Raises:
        UnsupportedError: an op outside the supported set (checked before anything is built).
    """
    torch = require("torch", "training a network imported from ONNX")
    check_convertible(model)

    class OnnxModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.graph = model.graph
            inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
            for n in model.graph.node:
                if n.op_type == "Constant":
                    inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            train = {n.input[i] for n in model.graph.node for i in TRAINABLE.get(n.op_type, ())
                     if i < len(n.input) and n.input[i] in inits and inits[n.input[i]].dtype == np.float32
                     and inits[n.input[i]].ndim >= 1}
            self.names: Dict[str, str] = {}
            self.params = torch.nn.ParameterDict()
            self.consts: Dict[str, object] = {}
            for name, arr in inits.items():
                if name in train:
                    key = f"p{len(self.names)}"
                    self.names[key] = name
                    self.params[key] = torch.nn.Parameter(torch.tensor(np.array(arr)))
                else:
                    self.consts[name] = torch.tensor(np.array(arr))
            self.inputs = [i.name for i in model.graph.input if i.name not in inits]
            shp = model.graph.input[0].type.tensor_type.shape.dim
            self.batch = shp[0].dim_value if shp and shp[0].dim_value else -1

        def forward(self, *xs):
            F = torch.nn.functional
            env = dict(self.consts)
            env.update({self.names[k]: p for k, p in self.params.items()})
            env.update(zip(self.inputs, xs))
            for n in self.graph.node:
                if n.op_type == "Constant":
                    continue
                args = [env[i] if i else None for i in n.input]
                while args and args[-1] is None:
                    args.pop()
                if n.op_type == "Reshape":
                    y = _reshape(F, torch, n, args[0], args[1], self.batch)
                else:
                    y = _OPS[n.op_type](F, torch, n, *args)
                env[n.output[0]] = y
            outs: List = [env[o.name] for o in self.graph.output]
            return outs[0] if len(outs) == 1 else tuple(outs)

    return OnnxModule()
