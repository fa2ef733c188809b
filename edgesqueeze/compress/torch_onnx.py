"""Move simple sequential networks between torch and ONNX without the torch exporter.

``sequential_to_onnx`` writes Linear / Conv2d / ReLU / Flatten / MaxPool2d chains as plain Gemm / Conv / Relu /
Flatten / MaxPool nodes (deterministic bytes, opset 13); ``onnx_to_sequential`` imports such a chain back (the
"import from ONNX where simple" path of the training-based compressors), including the Reshape-as-flatten and
Clip(0, 6) that exporters emit.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from .._lazy import require
from ..errors import UnsupportedError
from ._layers import attr


def sequential_to_onnx(module, input_shape: Sequence[int], *, input_name: str = "input",
                       output_name: str = "logits") -> ModelProto:
    """ONNX model (opset 13) of a ``torch.nn.Sequential`` of Linear, Conv2d, ReLU, ReLU6, Flatten, MaxPool2d,
    Dropout, Identity.

    Raises:
        UnsupportedError: another layer type, or a Conv2d with padding modes other than zeros.
    """
    torch = require("torch", "ONNX export of a pruned network")
    nodes, inits, x, k = [], [], input_name, 0

    def add(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr.detach().cpu().numpy(), np.float32), name))
        return name

    layers = [m for m in module.modules() if not isinstance(m, torch.nn.Sequential)]
    for i, m in enumerate(layers):
        y = f"t{i}"
        if isinstance(m, torch.nn.Linear):
            ins = [x, add(f"{i}.weight", m.weight)] + ([add(f"{i}.bias", m.bias)] if m.bias is not None else [])
            nodes.append(helper.make_node("Gemm", ins, [y], name=f"linear_{i}", transB=1))
        elif isinstance(m, torch.nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise UnsupportedError(f"Conv2d layer {i}: padding {m.padding!r} / mode {m.padding_mode}")
            ins = [x, add(f"{i}.weight", m.weight)] + ([add(f"{i}.bias", m.bias)] if m.bias is not None else [])
            ph, pw = m.padding
            nodes.append(helper.make_node("Conv", ins, [y], name=f"conv_{i}", kernel_shape=list(m.kernel_size),
                                          strides=list(m.stride), pads=[ph, pw, ph, pw],
                                          dilations=list(m.dilation), group=m.groups))
        elif isinstance(m, torch.nn.ReLU):
            nodes.append(helper.make_node("Relu", [x], [y], name=f"relu_{i}"))
        elif isinstance(m, torch.nn.ReLU6):
            lo = add(f"{i}.min", torch.tensor(0.0))
            hi = add(f"{i}.max", torch.tensor(6.0))
            nodes.append(helper.make_node("Clip", [x, lo, hi], [y], name=f"relu6_{i}"))
        elif isinstance(m, torch.nn.Flatten):
            nodes.append(helper.make_node("Flatten", [x], [y], name=f"flatten_{i}", axis=1))
        elif isinstance(m, torch.nn.MaxPool2d):
            ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            st = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
            nodes.append(helper.make_node("MaxPool", [x], [y], name=f"maxpool_{i}", kernel_shape=list(ks),
                                          strides=list(st)))
        elif isinstance(m, (torch.nn.Dropout, torch.nn.Identity)):
            continue
        else:
            raise UnsupportedError(f"layer {i} ({type(m).__name__}) cannot be written as ONNX here")
        x, k = y, k + 1
    if not nodes:
        raise UnsupportedError("the module has no layers")
    nodes[-1].output[0] = output_name
    graph = helper.make_graph(nodes, "sequential", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                                                  list(input_shape))],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgesqueeze")
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def onnx_to_sequential(model: ModelProto):
    """Import a single-input chain of Conv / Gemm / MatMul(+Add) / Relu / Clip / Flatten / Reshape / MaxPool as a
    ``torch.nn.Sequential`` with the same weights.

    Raises:
        UnsupportedError: the graph is not such a chain (branches, other ops, grouped/dilated convs, ...).
    """
    torch = require("torch", "training a network imported from ONNX")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers, x = [], None
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedError("only single-input chains can be imported into torch")
    x = inputs[0]
    nodes = list(model.graph.node)
    i = 0
    while i < len(nodes):
        n = nodes[i]
        label = n.name or n.output[0]
        if not n.input or n.input[0] != x:
            raise UnsupportedError("the graph is not a simple chain", node=label)
        if n.op_type == "Conv" and n.input[1] in inits:
            w = inits[n.input[1]]
            pads = list(attr(n, "pads", [0] * 4))
            if pads[:2] != pads[2:] or attr(n, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise UnsupportedError("asymmetric or automatic padding", node=label)
            conv = torch.nn.Conv2d(w.shape[1] * attr(n, "group", 1), w.shape[0], tuple(w.shape[2:]),
                                   stride=tuple(attr(n, "strides", [1, 1])), padding=tuple(pads[:2]),
                                   dilation=tuple(attr(n, "dilations", [1, 1])), groups=attr(n, "group", 1),
                                   bias=len(n.input) > 2)
            conv.weight.data = torch.tensor(w)
            if len(n.input) > 2:
                conv.bias.data = torch.tensor(inits[n.input[2]])
            layers.append(conv)
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in inits:
            w = inits[n.input[1]]
            if n.op_type == "Gemm" and (attr(n, "transA", 0) or attr(n, "alpha", 1.0) != 1.0
                                        or attr(n, "beta", 1.0) != 1.0):
                raise UnsupportedError("Gemm with transA/alpha/beta", node=label)
            wt = w if (n.op_type == "Gemm" and attr(n, "transB", 0)) else w.T
            bias = inits.get(n.input[2]) if len(n.input) > 2 else None
            if n.op_type == "MatMul" and i + 1 < len(nodes) and nodes[i + 1].op_type == "Add" \
                    and nodes[i + 1].input[0] == n.output[0] and nodes[i + 1].input[1] in inits:
                bias = inits[nodes[i + 1].input[1]]
                n = nodes[i + 1]
                i += 1
            lin = torch.nn.Linear(wt.shape[1], wt.shape[0], bias=bias is not None)
            lin.weight.data = torch.tensor(np.ascontiguousarray(wt))
            if bias is not None:
                lin.bias.data = torch.tensor(bias.reshape(-1))
            layers.append(lin)
        elif n.op_type == "Relu":
            layers.append(torch.nn.ReLU())
        elif n.op_type == "Clip" and len(n.input) == 3 and float(inits.get(n.input[1], -1)) == 0.0 \
                and float(inits.get(n.input[2], -1)) == 6.0:
            layers.append(torch.nn.ReLU6())
        elif n.op_type == "Flatten" and attr(n, "axis", 1) == 1:
            layers.append(torch.nn.Flatten())
        elif n.op_type == "Reshape" and n.input[1] in inits and inits[n.input[1]].size == 2:
            layers.append(torch.nn.Flatten())
        elif n.op_type == "MaxPool" and not any(attr(n, "pads", [0])) and not attr(n, "ceil_mode", 0) \
                and all(d == 1 for d in attr(n, "dilations", [1])):
            layers.append(torch.nn.MaxPool2d(tuple(attr(n, "kernel_shape")),
                                             tuple(attr(n, "strides", attr(n, "kernel_shape")))))
        else:
            raise UnsupportedError(f"{n.op_type} cannot be imported into torch here", node=label)
        x = n.output[0]
        i += 1
    return torch.nn.Sequential(*layers)
