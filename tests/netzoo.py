"""Small networks built with onnx helpers: the optimizer's test models and the benchmark's MobileNetV2.

:class:`NetBuilder` appends layers (Conv, BatchNorm, activations, Gemm, ...) with seeded random weights;
:func:`mobilenet_v2` builds the full MobileNetV2 (Sandler et al. 2018) in inference form: Conv -> BN -> ReLU6
blocks, inverted residuals with depthwise 3x3 convolutions, as a PyTorch/ONNX export would produce it.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper


class NetBuilder:
    """Append-only ONNX graph builder with seeded random weights (float32 unless ``dtype`` says otherwise)."""

    def __init__(self, seed: int = 0, dtype=np.float32, opset: int = 17):
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.opset = opset
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[TensorProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        """A fresh tensor/node name."""
        self._n += 1
        return f"{base}{self._n}"

    def weight(self, values, base: str = "w") -> str:
        """Add an initializer; returns its name."""
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(values).astype(self.dtype), name))
        return name

    def randn(self, *shape, scale: Optional[float] = None) -> np.ndarray:
        """Seeded normal values, He-scaled by fan-in unless ``scale`` is given."""
        if scale is None:
            scale = np.sqrt(2.0 / max(int(np.prod(shape[1:])) if len(shape) > 1 else 1, 1))
        return self.rng.normal(0.0, scale, shape)

    def input(self, name: str, shape: Sequence[int]) -> str:
        """Declare a graph input."""
        elem = helper.np_dtype_to_tensor_dtype(self.dtype)
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, name: Optional[str] = None, **attrs):
        """Append a node; returns its output name (or list when ``n_out`` > 1)."""
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name or self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, stride: int = 1, pad: Optional[int] = None,
             group: int = 1, bias: bool = True, dilation: int = 1, weight: Optional[str] = None) -> str:
        """Conv2d with random weights (or the shared ``weight``)."""
        pad = (k // 2) * dilation if pad is None else pad
        w = weight or self.weight(self.randn(c_out, c_in // group, k, k))
        ins = [x, w] + ([self.weight(self.randn(c_out, scale=0.1), "b")] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group,
                       dilations=[dilation, dilation])

    def bn(self, x: str, c: int, eps: float = 1e-5, zero_var: bool = False, **attrs) -> str:
        """BatchNormalization with random statistics (``zero_var``: every variance 0, only epsilon left)."""
        var = np.zeros(c) if zero_var else self.rng.uniform(0.5, 1.5, c)
        ins = [x, self.weight(self.rng.uniform(0.5, 1.5, c), "gamma"), self.weight(self.rng.normal(0, 0.1, c), "beta"),
               self.weight(self.rng.normal(0, 0.1, c), "mean"), self.weight(var, "var")]
        return self.op("BatchNormalization", ins, epsilon=eps, **attrs)

    def act(self, x: str, kind: str) -> str:
        """An activation by edgesqueeze name: relu, relu6, clip, leaky_relu, sigmoid, hard_sigmoid, hard_swish."""
        if kind == "relu":
            return self.op("Relu", [x])
        if kind in ("relu6", "clip"):
            return self.op("Clip", [x, self.weight(np.array(0.0), "lo"), self.weight(np.array(6.0), "hi")])
        if kind == "leaky_relu":
            return self.op("LeakyRelu", [x], alpha=0.1)
        if kind == "sigmoid":
            return self.op("Sigmoid", [x])
        if kind == "hard_sigmoid":
            return self.op("HardSigmoid", [x], alpha=0.2, beta=0.5)
        if kind == "hard_swish":
            return self.op("HardSwish", [x])
        if kind == "none":
            return x
        raise ValueError(kind)

    def model(self, outputs: Sequence[str], name: str = "net") -> ModelProto:
        """Finish: a checked model whose outputs are ``outputs`` (shapes inferred)."""
        graph = helper.make_graph(self.nodes, name, self.inputs,
                                  [onnx.ValueInfoProto(name=o) for o in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="edgesqueeze-zoo")
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        inferred = {vi.name: vi for vi in model.graph.value_info}
        for out in model.graph.output:  # outputs get their inferred shapes
            if out.name in inferred:
                out.CopyFrom(inferred[out.name])
        kept = [vi for vi in model.graph.value_info if vi.name not in set(outputs)]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
        onnx.checker.check_model(model, full_check=True)
        return model


_MBV2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                  (6, 320, 1, 1)]  # (expansion t, channels c, repeats n, first stride s)


def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def mobilenet_v2(width: float = 1.0, input_size: int = 224, num_classes: int = 1000, batch: int = 1,
                 seed: int = 0, opset: int = 13) -> ModelProto:
    """MobileNetV2 with seeded random weights, in the form a framework export has (Conv, BN, Clip(0, 6)).

    Input ``"input"`` ``[batch, 3, input_size, input_size]``, output ``"logits"`` ``[batch, num_classes]``.
    """
    b = NetBuilder(seed=seed, opset=opset)
    x = b.input("input", [batch, 3, input_size, input_size])
    c_in = _divisible(32 * width)
    x = b.act(b.bn(b.conv(x, 3, c_in, 3, stride=2, bias=False), c_in), "relu6")
    for t, c, n, s in _MBV2_SETTINGS:
        c_out = _divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c_in * t
            y = x
            if t != 1:
                y = b.act(b.bn(b.conv(y, c_in, hidden, 1, bias=False), hidden), "relu6")
            y = b.act(b.bn(b.conv(y, hidden, hidden, 3, stride=stride, group=hidden, bias=False), hidden), "relu6")
            y = b.bn(b.conv(y, hidden, c_out, 1, bias=False), c_out)
            x = b.op("Add", [x, y]) if stride == 1 and c_in == c_out else y
            c_in = c_out
    last = _divisible(1280 * max(1.0, width))
    x = b.act(b.bn(b.conv(x, c_in, last, 1, bias=False), last), "relu6")
    x = b.op("GlobalAveragePool", [x])
    x = b.op("Flatten", [x], axis=1)
    fc_w = b.weight(b.randn(num_classes, last))
    fc_b = b.weight(b.randn(num_classes, scale=0.01), "b")
    b.op("Gemm", [x, fc_w, fc_b], transB=1)
    b.nodes[-1].output[0] = "logits"
    return b.model(["logits"], name="mobilenet_v2")
