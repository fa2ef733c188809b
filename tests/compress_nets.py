"""Small networks built in code for the compression tests (seeded weights, opset 13)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.k = 0

    def w(self, name, shape, scale=0.3):
        arr = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op, inputs, **attrs):
        self.k += 1
        out = f"{op.lower()}{self.k}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.k}", **attrs))
        return out

    def conv(self, x, cin, cout, k=3, group=1, bias=True, bn=False, relu=True, stride=1):
        n = f"c{self.k + 1}"
        ins = [x, self.w(n + ".w", (cout, cin // group, k, k))]
        if bias:
            ins.append(self.w(n + ".b", (cout,), 0.1))
        y = self.node("Conv", ins, kernel_shape=[k, k], pads=[k // 2] * 4, group=group, strides=[stride] * 2)
        if bn:
            y = self.node("BatchNormalization", [y, self.w(n + ".g", (cout,), 1.0), self.w(n + ".be", (cout,), 0.1),
                                                 self.w(n + ".m", (cout,), 0.1),
                                                 self.const(n + ".v", self.rng.uniform(0.5, 1.5, cout)
                                                            .astype(np.float32))])
        if relu:
            y = self.node("Relu", [y])
        return y

    def model(self, inputs, outputs):
        g = helper.make_graph(self.nodes, "net", inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return onnx.shape_inference.infer_shapes(m)


def residual_net(seed=0, bn=False):
    """Conv stem, a residual block (Add), a Concat of two branches, a depthwise conv, a per-channel Mul,
    global pooling, Flatten and a Gemm classifier. Input "x" [1,3,8,8], output "y" [1,10]."""
    b = _Builder(seed)
    s = b.conv("x", 3, 8, bn=bn)
    r = b.conv(s, 8, 8, bn=bn)
    r = b.conv(r, 8, 8, bn=bn, relu=False)
    a = b.node("Relu", [b.node("Add", [s, r])])
    c1 = b.conv(a, 8, 16)
    c2 = b.conv(a, 8, 8, k=1)
    cat = b.node("Concat", [c1, c2], axis=1)
    dw = b.conv(cat, 24, 24, group=24)
    m = b.node("Mul", [dw, b.w("scale", (24, 1, 1), 1.0)])
    pw = b.conv(m, 24, 12, k=1)
    f = b.node("Flatten", [b.node("GlobalAveragePool", [pw])], axis=1)
    b.node("Gemm", [f, b.w("fc.w", (10, 12)), b.w("fc.b", (10,), 0.1)], transB=1)
    b.nodes[-1].output[0] = "y"
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])


def flatten_net(seed=0):
    """Conv -> Relu -> Flatten (spatial 4x4) -> Gemm -> Relu -> MatMul + Add. Input [2,4,4,4] -> [2,5]."""
    b = _Builder(seed)
    c = b.conv("x", 4, 8)
    f = b.node("Flatten", [c], axis=1)
    h = b.node("Relu", [b.node("Gemm", [f, b.w("fc1.w", (128, 16)), b.w("fc1.b", (16,), 0.1)])])
    b.node("Add", [b.node("MatMul", [h, b.w("fc2.w", (16, 5))]), b.w("fc2.b", (5,), 0.1)])
    b.nodes[-1].output[0] = "y"
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 4, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])


def mlp(sizes=(64, 32, 16, 10), seed=0, batch=4):
    """Gemm/Relu MLP ("x" [batch, sizes[0]] -> "y" [batch, sizes[-1]])."""
    b = _Builder(seed)
    x = "x"
    for i, (a, c) in enumerate(zip(sizes[:-1], sizes[1:])):
        x = b.node("Gemm", [x, b.w(f"fc{i}.w", (c, a)), b.w(f"fc{i}.b", (c,), 0.1)], transB=1)
        if i < len(sizes) - 2:
            x = b.node("Relu", [x])
    b.nodes[-1].output[0] = "y"
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, sizes[-1]])])


def conv_net(seed=0, cin=8):
    """Conv 3x3 (cin->16) -> Relu -> Conv 1x1 (16->16) -> Conv 3x3 (16->8, stride 2) -> Flatten -> Gemm."""
    b = _Builder(seed)
    c = b.conv("x", cin, 16)
    c = b.conv(c, 16, 16, k=1)
    c = b.conv(c, 16, 8, relu=False, stride=2)
    f = b.node("Flatten", [c], axis=1)
    b.node("Gemm", [f, b.w("fc.w", (128, 10)), b.w("fc.b", (10,), 0.1)])
    b.nodes[-1].output[0] = "y"
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 8, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
