"""The custom-op registry: a throwaway op registered here is inlined, stripped, converted to FP16 and inspected
by the shared code with no change outside its own definition."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.bundle.variants import inlined_variant, stripped_variant
from edgesqueeze.errors import UnsupportedError
from edgesqueeze.inspect import inspect_model
from edgesqueeze.model import infer_shapes
from edgesqueeze.ortutil import run_model
from edgesqueeze.plugins.ops import (DOMAIN, OPS, CustomOp, custom_ops, domain_nodes, elem_types, install_functions,
                                     numel, op_of, register_op)
from edgesqueeze.quant.fp16 import convert_fp16

OPSET = 17


class _Scale(CustomOp):
    """``Y = X * S`` with a weight ``S``: the overload names the weight's element type, like the real ops."""

    op_type = "TestScale"

    def attach_functions(self, model):
        types = elem_types(model)
        wanted = {}
        for node in domain_nodes(model.graph):
            if node.op_type != self.op_type:
                continue
            node.overload = "f16" if types[node.input[1]] == TensorProto.FLOAT16 else "f32"
            fn = helper.make_function(DOMAIN, self.op_type, ["X", "S"], ["Y"],
                                      [helper.make_node("Mul", ["X", "S"], ["Y"])], [helper.make_opsetid("", OPSET)])
            fn.overload = node.overload
            wanted[node.overload] = fn
        return install_functions(model, self.op_type, wanted)

    def macs(self, node, shape_of):
        return numel(shape_of(node.output[0]))


@pytest.fixture
def scale_op():
    register_op(_Scale)
    yield OPS[_Scale.op_type]
    del OPS[_Scale.op_type]


def _model() -> onnx.ModelProto:
    node = helper.make_node(_Scale.op_type, ["x", "s"], ["y"], name="scale", domain=DOMAIN)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.array([1.0, 2.0, -3.0], np.float32), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 10
    OPS[_Scale.op_type].attach_functions(model)
    return model


X = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
WANT = X["x"] * np.array([1.0, 2.0, -3.0], np.float32)


def test_registered_op_is_looked_up(scale_op):
    model = _model()
    assert op_of(model.graph.node[0]) is scale_op and custom_ops(model) == {"TestScale"}
    assert model.graph.node[0].overload == "f32" and model.ir_version == 10
    np.testing.assert_allclose(run_model(model, X)["y"], WANT)
    with pytest.raises(UnsupportedError):
        scale_op.emulate(model.graph.node[0], [X["x"], np.ones(3, np.float32)])


def test_registered_op_inlines_and_strips(scale_op):
    model = _model()
    inl = inlined_variant(model)
    assert [n.op_type for n in inl.graph.node] == ["Mul"] and not inl.functions
    assert all(o.domain != DOMAIN for o in inl.opset_import) and inl.ir_version == 8
    np.testing.assert_allclose(run_model(inl, X)["y"], WANT)
    st = stripped_variant(model)
    assert custom_ops(st) == {"TestScale"} and not st.functions and not st.graph.node[0].overload


def test_registered_op_gets_fp16_functions(scale_op):
    half = convert_fp16(_model())
    assert half.graph.node[[n.op_type for n in half.graph.node].index("TestScale")].overload == "f16"
    assert [f.overload for f in half.functions] == ["f16"]
    np.testing.assert_allclose(run_model(half, X)["y"], WANT, rtol=1e-3)


def test_registered_op_is_inspected(scale_op):
    layers = inspect_model(infer_shapes(_model()))["layers"]
    assert [(layer["op"], layer["macs"]) for layer in layers] == [("TestScale", 6)]
    assert layers[0]["flops"] == 2 * 6 + 6  # a MAC op: products plus the epilogue


def test_register_twice_is_refused(scale_op):
    with pytest.raises(ValueError):
        register_op(_Scale)


@pytest.mark.parametrize("which", ["dwsep", "2:4", "csr"])
def test_builtin_ops_emulate_through_the_registry(which, harness_dir):
    """op_of(node).emulate runs the op's kernel (CPU harness) with the node's own attributes."""
    from custom_ops import make_dwsep_model, make_sparse_conv_model

    rng = np.random.default_rng(3)
    if which == "dwsep":
        model = make_dwsep_model((1, 4, 5, 5), rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(4),
                                 rng.standard_normal((6, 4, 1, 1)), rng.standard_normal(6), pads=(1, 1, 1, 1),
                                 dw_activation="relu", pw_activation="clip", pw_alpha=-1.0, pw_beta=1.0)
    else:
        w = rng.standard_normal((6, 8, 3, 3))
        w.reshape(6, 2, 4, 3, 3)[:, :, :2] = 0.0  # 2:4 along the input channels
        model = make_sparse_conv_model((1, 8, 5, 5), w, rng.standard_normal(6), sparse_format=which,
                                       pads=(1, 1, 1, 1), activation="relu")
    node = model.graph.node[0]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = rng.standard_normal((1, channels, 5, 5)).astype(np.float32)
    got = op_of(node).emulate(node, [x] + [inits[i] for i in node.input[1:]], cache_dir=harness_dir)
    np.testing.assert_allclose(got, run_model(model, {"x": x})["y"], rtol=1e-4, atol=1e-4)
