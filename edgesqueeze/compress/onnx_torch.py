"""Run an ONNX graph as a trainable ``torch.nn.Module`` (``torch`` extra).

``OnnxModule`` interprets the graph node by node with torch functions; the float weights of Conv / Gemm /
MatMul / PRelu / Add / Mul / BatchNormalization nodes become ``nn.Parameter`` s, every other initializer a
constant. It takes the ops of the table ``_OPS`` (listed in docs/compress.md); anything else raises
UnsupportedError naming the node, before training starts. Shapes computed at run time (Shape -> Gather /
Slice -> Concat -> Reshape, as Paddle and PyTorch exports write them) are evaluated on torch tensors, so
they follow the batch while training and stay symbolic when the module is exported again. A Reshape whose
constant target's first dim equals the model's static batch follows the batch of the input, so a batch-1
export trains on mini-batches. Custom ``edgesqueeze::`` nodes are inlined to their standard-op functions
first. onnx2torch was tried and not used: it imports torchvision at import time (its NMS / RoIAlign
converters), which this project does not depend on.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
from onnx import ModelProto, numpy_helper

from .._lazy import require
from ..errors import UnsupportedError
from ..plugins.dwsep import has_custom_nodes
from ..plugins.ops import inline_custom_ops
from ._layers import attr

TRAINABLE = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "PRelu": (1,), "Add": (0, 1), "Mul": (0, 1),
             "BatchNormalization": (1, 2)}


def _pads(node, x, kernel, strides, dilations):
    """Explicit [begin..., end...] pads; auto_pad SAME_* computed from the input's size (TF/Keras exports)."""
    rank = len(kernel)
    mode = attr(node, "auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode in ("NOTSET", "VALID"):
        return list(attr(node, "pads", [0] * (2 * rank))) if mode == "NOTSET" else [0] * (2 * rank)
    begin, end = [], []
    for i in range(rank):
        size = int(x.shape[2 + i])
        total = max((-(-size // strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
        small = total // 2
        begin.append(small if mode == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def _padded(F, x, p, rank, value=0.0):
    """``x`` padded explicitly when the pads are asymmetric; returns (x, symmetric pads for the op)."""
    if p[:rank] == p[rank:]:
        return x, p[:rank]
    return F.pad(x, [v for i in reversed(range(rank)) for v in (p[i], p[i + rank])], value=value), [0] * rank


def _conv(F, torch, n, x, w, b=None):
    rank = w.dim() - 2
    k, st = list(w.shape[2:]), list(attr(n, "strides", [1] * rank))
    dil = list(attr(n, "dilations", [1] * rank))
    x, p = _padded(F, x, _pads(n, x, k, st, dil), rank)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return fn(x, w, b, stride=st, padding=p, dilation=dil, groups=attr(n, "group", 1))


def _pool(F, torch, n, x, kind):
    k = list(attr(n, "kernel_shape"))
    rank = len(k)
    st, ceil = list(attr(n, "strides", [1] * rank)), bool(attr(n, "ceil_mode", 0))
    pads = _pads(n, x, k, st, [1] * rank)
    if kind == "max":
        x, p = _padded(F, x, pads, rank, float("-inf"))
        return {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank](x, k, st, p, ceil_mode=ceil)
    if pads[:rank] != pads[rank:]:
        raise UnsupportedError("AveragePool with asymmetric (or SAME) pads", node=n.name)
    return {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank](
        x, k, st, pads[:rank], ceil_mode=ceil, count_include_pad=bool(attr(n, "count_include_pad", 0)))


def _gemm(F, torch, n, a, b, c=None):
    """Gemm in the forms the TorchScript exporter writes back as one Gemm: ``F.linear`` for the plain case
    (alpha = beta = 1, no transA, a per-column or scalar C), ``torch.addmm`` for general alpha / beta / C.
    Without C it is a MatMul (times alpha when alpha != 1), which is what ``a @ b`` exports as."""
    alpha, beta, trans_b = attr(n, "alpha", 1.0), attr(n, "beta", 1.0), attr(n, "transB", 0)
    a = a.t() if attr(n, "transA", 0) else a
    if c is None:
        y = a @ (b.t() if trans_b else b)
        return y if alpha == 1.0 else alpha * y
    if alpha == 1.0 and beta == 1.0 and c.dim() <= 1:
        return F.linear(a, b if trans_b else b.t(), c)
    return torch.addmm(c, a, b.t() if trans_b else b, beta=beta, alpha=alpha)


def _reshape(n, x, shape, batch, computed):
    """Constant targets: ints (0 copies, the static batch follows the input). Computed targets: 0-d tensors,
    which the tracer records, so the exported graph keeps the Shape arithmetic instead of baked numbers."""
    keep = not attr(n, "allowzero", 0)
    if computed:
        dims = [shape[i] for i in range(shape.shape[0])]
        # a computed 0 ("copy this dim") is a constant in practice: the branch taken traces the same graph
        return x.reshape([x.shape[i] if keep and int(v) == 0 else v for i, v in enumerate(dims)])
    s = [int(v) for v in shape.tolist()]
    s = [x.shape[i] if v == 0 and keep else v for i, v in enumerate(s)]
    if s and s[0] == batch and x.shape[0] != batch:
        s[0] = x.shape[0]
    return x.reshape(s)


def _clip(F, torch, n, x, lo=None, hi=None):
    lo = attr(n, "min", None) if lo is None else float(lo)
    hi = attr(n, "max", None) if hi is None else float(hi)
    return torch.clamp(x, lo, hi)


def _slice(F, torch, n, x, starts=None, ends=None, axes=None, steps=None):
    if starts is None:  # opset < 10: attributes
        starts, ends, axes = attr(n, "starts"), attr(n, "ends"), attr(n, "axes", None)
    starts, ends = [int(v) for v in _ints(starts)], [int(v) for v in _ints(ends)]
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    idx = [slice(None)] * x.dim()
    for a, s0, e0, st in zip(axes, starts, ends, steps):
        if int(st) < 1:
            raise UnsupportedError("Slice with a negative step", node=n.name)
        idx[int(a)] = slice(s0, e0 if e0 < 2 ** 62 else None, int(st))
    return x[tuple(idx)]


def _prelu(F, torch, n, x, slope):
    """PRelu: ``F.prelu`` (exported back as one PRelu node) when the slope is per channel of axis 1 or a
    scalar; else the element-wise form."""
    aligned = (1,) * (x.dim() - slope.dim()) + tuple(slope.shape)
    if slope.numel() == 1 or (x.dim() >= 2 and aligned[1] == slope.numel() == x.shape[1]):
        return F.prelu(x, slope.reshape(-1))
    return torch.where(x >= 0, x, x * slope)


def _split(F, torch, n, x, split=None):
    """Split (sizes from the input since opset 13, else the attribute, else equal parts); a tuple of outputs."""
    axis = attr(n, "axis", 0)
    sizes = _ints(split) if split is not None else attr(n, "split", None)
    if sizes is None:
        sizes = [x.shape[axis] // len(n.output)] * len(n.output)
    return tuple(torch.split(x, [int(v) for v in sizes], dim=axis))


def _ints(v) -> List[int]:
    return [int(i) for i in (v.tolist() if hasattr(v, "tolist") else v)]


def _axes(n, axes):
    """Unsqueeze / Squeeze / Reduce*: axes from the attribute (old opsets) or the input (new ones)."""
    return _ints(axes) if axes is not None else attr(n, "axes", None)


def _unsqueeze(F, torch, n, x, axes=None):
    axes = sorted(a if a >= 0 else a + x.dim() + len(_axes(n, axes)) for a in _axes(n, axes))
    for a in axes:
        x = x.unsqueeze(a)
    return x


def _squeeze(F, torch, n, x, axes=None):
    axes = _axes(n, axes)
    if axes is None:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


def _gather(F, torch, n, x, idx):
    axis = attr(n, "axis", 0) % x.dim()
    flat = torch.where(idx < 0, idx + x.shape[axis], idx).reshape(-1).long()
    y = x.index_select(axis, flat)
    return y.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


def _reduce(torch, n, x, axes, fn):
    axes = _axes(n, axes)
    dims = tuple(range(x.dim())) if not axes else tuple(axes)
    return fn(x, dim=dims, keepdim=bool(attr(n, "keepdims", 1)))


def _shape(F, torch, n, x):
    s = torch._shape_as_tensor(x)   # traced as an ONNX Shape, not baked into the export
    return s[attr(n, "start", 0):attr(n, "end", None)]


def _pad(F, torch, n, x, pads=None, value=None):
    mode = attr(n, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    p = _ints(pads) if pads is not None else list(attr(n, "pads"))
    r = len(p) // 2
    flat = [v for i in reversed(range(r)) for v in (p[i], p[i + r])]
    if mode != "constant":
        return F.pad(x, flat[:2 * (x.dim() - 2)], mode={"edge": "replicate"}.get(mode, mode))
    return F.pad(x, flat, value=float(value) if value is not None else 0.0)


_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 11: "float64"}

_OPS = {
    "Conv": _conv, "Gemm": _gemm, "Reshape": None, "Clip": _clip, "Slice": _slice, "Shape": _shape,
    "Split": _split,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Gather": _gather, "Pad": _pad,
    "MaxPool": lambda F, t, n, x: _pool(F, t, n, x, "max"),
    "AveragePool": lambda F, t, n, x: _pool(F, t, n, x, "avg"),
    # 2-d through adaptive pooling: exported back as GlobalAveragePool / GlobalMaxPool, not a ReduceMean
    "GlobalAveragePool": lambda F, t, n, x: F.adaptive_avg_pool2d(x, 1) if x.dim() == 4
    else x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda F, t, n, x: F.adaptive_max_pool2d(x, 1) if x.dim() == 4
    else x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "ReduceMean": lambda F, t, n, x, a=None: _reduce(t, n, x, a, t.mean),
    "ReduceSum": lambda F, t, n, x, a=None: _reduce(t, n, x, a, t.sum),
    "MatMul": lambda F, t, n, a, b: a @ b,
    "Add": lambda F, t, n, a, b: a + b, "Sub": lambda F, t, n, a, b: a - b,
    "Mul": lambda F, t, n, a, b: a * b, "Div": lambda F, t, n, a, b: a / b,
    "Pow": lambda F, t, n, a, b: a ** b, "Sqrt": lambda F, t, n, x: t.sqrt(x),
    "Exp": lambda F, t, n, x: t.exp(x), "Log": lambda F, t, n, x: t.log(x), "Neg": lambda F, t, n, x: -x,
    "Abs": lambda F, t, n, x: x.abs(), "Erf": lambda F, t, n, x: t.erf(x),
    "Max": lambda F, t, n, *xs: _fold(t.maximum, xs), "Min": lambda F, t, n, *xs: _fold(t.minimum, xs),
    "Sum": lambda F, t, n, *xs: _fold(t.add, xs),
    "Relu": lambda F, t, n, x: F.relu(x), "Sigmoid": lambda F, t, n, x: t.sigmoid(x),
    "Tanh": lambda F, t, n, x: t.tanh(x), "Identity": lambda F, t, n, x: x,
    "Cast": lambda F, t, n, x: x.to(getattr(t, _DTYPES[attr(n, "to", 1)])),
    "Dropout": lambda F, t, n, x, *r: x,
    "LeakyRelu": lambda F, t, n, x: F.leaky_relu(x, attr(n, "alpha", 0.01)),
    "HardSigmoid": lambda F, t, n, x: t.clamp(attr(n, "alpha", 0.2) * x + attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda F, t, n, x: F.hardswish(x),
    "PRelu": _prelu,
    "Softmax": lambda F, t, n, x: t.softmax(x, attr(n, "axis", -1)),
    "Flatten": lambda F, t, n, x: x.flatten(attr(n, "axis", 1)) if attr(n, "axis", 1) else x.reshape(1, -1),
    "Transpose": lambda F, t, n, x: x.permute(*attr(n, "perm", list(reversed(range(x.dim()))))),
    "Concat": lambda F, t, n, *xs: t.cat(xs, attr(n, "axis", 0)),
    "BatchNormalization": lambda F, t, n, x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0,
                                                                      attr(n, "epsilon", 1e-5)),
}


def _fold(fn, xs):
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


def supported_ops() -> List[str]:
    """The ONNX op types :func:`onnx_module` runs (plus ``Constant``)."""
    return sorted(_OPS)


def check_convertible(model: ModelProto) -> None:
    """Raise UnsupportedError naming the first node ``OnnxModule`` cannot run (custom nodes: inline first)."""
    for n in model.graph.node:
        if n.op_type == "Cast" and attr(n, "to", 1) not in _DTYPES:
            raise UnsupportedError(f"Cast to ONNX type {attr(n, 'to', 1)}", node=n.name or n.output[0])
        if n.domain not in ("", "ai.onnx") or n.op_type not in _OPS and n.op_type != "Constant":
            raise UnsupportedError(f"{n.domain + '::' if n.domain else ''}{n.op_type} cannot be trained in torch "
                                   "here (supported: " + ", ".join(supported_ops()) + ")", node=n.name or n.output[0],
                                   hint="see docs/compress.md, 'the ONNX to torch converter'")


def _constants(model: ModelProto) -> Dict[str, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            a = n.attribute[0]
            if a.name != "value":
                raise UnsupportedError(f"Constant with '{a.name}' (only 'value' is read)", node=n.name)
            inits[n.output[0]] = numpy_helper.to_array(a.t)
    return inits


def onnx_module(model: ModelProto, taps: Sequence[str] = ()):
    """A ``torch.nn.Module`` computing ``model``; its trainable weights are named after their initializers.

    Args:
        model: the graph; custom ``edgesqueeze::`` nodes are inlined to standard ops first.
        taps: intermediate tensor names whose values each forward keeps in ``module.tapped`` (hint losses,
            the logits before a final Softmax).

    Raises:
        UnsupportedError: an op outside the supported set, or a tap the graph does not compute (checked before
            anything is built).
    """
    torch = require("torch", "training a network imported from ONNX")
    if has_custom_nodes(model):
        model = inline_custom_ops(model)
    check_convertible(model)
    known = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    for t in taps:
        if t not in known:
            raise UnsupportedError(f"the model computes no tensor '{t}'", tensor=t)
    return _module_class(torch)(model, list(taps))


def _module_class(torch):
    class OnnxModule(torch.nn.Module):
        def __init__(self, model: ModelProto, taps: List[str]):
            super().__init__()
            self.graph, self.taps, self.tapped = model.graph, taps, {}
            inits = _constants(model)
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
            self.batch = shp[0].dim_value if shp and shp[0].dim_value > 0 else -1

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
                    y = _reshape(n, args[0], args[1], self.batch, n.input[1] not in self.consts)
                else:
                    y = _OPS[n.op_type](F, torch, n, *args)
                env.update(zip(n.output, y) if isinstance(y, tuple) else ((n.output[0], y),))
            self.tapped = {t: env[t] for t in self.taps}
            outs: List = [env[o.name] for o in self.graph.output]
            return outs[0] if len(outs) == 1 else tuple(outs)

    return OnnxModule


def logits_of(model: ModelProto, output: str) -> str:
    """The tensor to distil for ``output``: the input of a final Softmax (through Identity and the
    Flatten/Reshape an opset conversion wraps around a Softmax), else ``output`` itself."""
    producer = {o: n for n in model.graph.node for o in n.output}
    name = output
    while name in producer and producer[name].op_type in ("Identity", "Reshape", "Flatten"):
        name = producer[name].input[0]
    n = producer.get(name)
    return n.input[0] if n is not None and n.op_type == "Softmax" else output
