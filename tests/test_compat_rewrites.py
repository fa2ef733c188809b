"""edgesqueeze.compat: each opset rewrite on a tiny model, proven equal on onnxruntime, and the clear errors."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.compat import downgrade_opset, limit_ir_version, make_target_compatible
from edgesqueeze.errors import UnsupportedError
from edgesqueeze.model import random_feeds
from edgesqueeze.ortutil import run_model

F = TensorProto.FLOAT


def mk(nodes, inputs, outputs, opset, inits=(), elem=F, out_shape=None):
    """A one-graph model: inputs {name: shape}, outputs [name], initializers {name: array}."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, elem, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, elem, out_shape) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    m = onnx.shape_inference.infer_shapes(m)  # output shapes (the checker wants them)
    del m.graph.value_info[:]
    onnx.checker.check_model(m, full_check=True)
    return m


def lower(model, opset):
    """Downgrade, then check what the report says against a fresh onnxruntime run (not just the report)."""
    before = model.SerializeToString()
    out, report = downgrade_opset(model, opset)
    assert model.SerializeToString() == before  # the input is untouched
    assert out.opset_import[0].version == opset and report["to"] == opset
    assert report["verification"]["checked"] and report["verification"]["max_rel"] <= 1e-5
    feeds = random_feeds(model, seed=3)[0]
    ref, act = run_model(model, feeds), run_model(out, feeds)
    for k in ref:
        np.testing.assert_allclose(act[k], ref[k], rtol=1e-5, atol=1e-6)
    return out, report


def ops(model):
    return [n.op_type for n in model.graph.node]


def attr(model, op, name):
    node = next(n for n in model.graph.node if n.op_type == op)
    a = next((a for a in node.attribute if a.name == name), None)
    return None if a is None else helper.get_attribute_value(a)


@pytest.mark.parametrize("dst", [17, 13, 11])
def test_reduce_axes_input_becomes_attribute(dst):
    m = mk([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], {"x": [2, 3, 4]}, ["y"], 18,
           {"axes": np.array([1, -1], np.int64)})
    out, rep = lower(m, dst)
    assert attr(out, "ReduceMean", "axes") == [1, -1] and len(out.graph.node[0].input) == 1
    assert not out.graph.initializer  # the consumed axes initializer is gone


def test_reducesum_axes_below_13_and_noop_empty_axes_identity():
    m = mk([helper.make_node("ReduceSum", ["x", "axes"], ["y"])], {"x": [2, 3]}, ["y"], 13,
           {"axes": np.array([0], np.int64)})
    out, _ = lower(m, 11)
    assert attr(out, "ReduceSum", "axes") == [0]
    m = mk([helper.make_node("ReduceMax", ["x"], ["y"], noop_with_empty_axes=1)], {"x": [2, 3]}, ["y"], 18)
    out, rep = lower(m, 13)
    assert ops(out) == ["Identity"]


def test_runtime_axes_are_a_clear_error():
    m = mk([helper.make_node("Identity", ["one"], ["axes"]),
            helper.make_node("ReduceMean", ["x", "axes"], ["y"])], {"x": [2, 3]}, ["y"], 18,
           {"one": np.array([1], np.int64)}, out_shape=[2, 1])
    with pytest.raises(UnsupportedError, match="ReduceMean node 'y'.*computed at run time"):
        downgrade_opset(m, 13)


@pytest.mark.parametrize("dst,where", [(13, "input"), (11, "attribute")])
def test_split_num_outputs_becomes_sizes(dst, where):
    m = mk([helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)], {"x": [2, 7]},
           ["a", "b", "c"], 18)
    out, _ = lower(m, dst)
    node = out.graph.node[0]
    sizes = (numpy_helper.to_array(out.graph.initializer[0]).tolist() if where == "input"
             else attr(out, "Split", "split"))
    assert sizes == [3, 3, 1] and (len(node.input) == 2) == (where == "input")


def test_squeeze_unsqueeze_axes_input_becomes_attribute():
    m = mk([helper.make_node("Unsqueeze", ["x", "a"], ["u"]), helper.make_node("Squeeze", ["u", "a"], ["y"])],
           {"x": [2, 3]}, ["y"], 13, {"a": np.array([0], np.int64)})
    out, _ = lower(m, 11)
    assert attr(out, "Unsqueeze", "axes") == [0] and attr(out, "Squeeze", "axes") == [0]


def test_pad_axes_to_full_pads_and_inputs_to_attributes():
    m = mk([helper.make_node("Pad", ["x", "p", "v", "ax"], ["y"])], {"x": [2, 3]}, ["y"], 18,
           {"p": np.array([1, 2], np.int64), "v": np.array(0.5, np.float32), "ax": np.array([-1], np.int64)})
    out13, _ = lower(m, 13)
    assert numpy_helper.to_array(next(i for i in out13.graph.initializer if "pads" in i.name)).tolist() == [0, 1, 0, 2]
    out9, _ = lower(m, 9)
    assert attr(out9, "Pad", "pads") == [0, 1, 0, 2] and attr(out9, "Pad", "value") == 0.5


def test_pad_wrap_is_unsupported_before_19():
    m = mk([helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap")], {"x": [2, 3]}, ["y"], 19,
           {"p": np.array([0, 1, 0, 1], np.int64)})
    with pytest.raises(UnsupportedError, match="wrap"):
        downgrade_opset(m, 18)


def test_clip_inputs_become_attributes():
    m = mk([helper.make_node("Clip", ["x", "", "hi"], ["y"])], {"x": [4]}, ["y"], 13,
           {"hi": np.array(0.25, np.float32)})
    out, _ = lower(m, 9)
    assert attr(out, "Clip", "max") == 0.25 and attr(out, "Clip", "min") is None


def test_resize_new_attributes_and_empty_inputs():
    m = mk([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", antialias=0,
                             keep_aspect_ratio_policy="stretch")], {"x": [1, 1, 2, 3]}, ["y"], 19,
           {"s": np.array([1, 1, 2, 2], np.float32)})
    out, _ = lower(m, 13)
    assert attr(out, "Resize", "antialias") is None
    out, _ = lower(m, 11)
    assert len(out.graph.node[0].input) == 3 and all(out.graph.node[0].input)
    m.graph.node[0].attribute.extend([helper.make_attribute("coordinate_transformation_mode",
                                                            "half_pixel_symmetric")])
    with pytest.raises(UnsupportedError, match="half_pixel_symmetric"):
        downgrade_opset(m, 18)


@pytest.mark.parametrize("axis,expect", [(-1, ["Softmax"]), (1, ["Transpose", "Softmax", "Transpose"])])
def test_softmax_axis_semantics(axis, expect):
    m = mk([helper.make_node("Softmax", ["x"], ["y"], axis=axis)], {"x": [2, 3, 4]}, ["y"], 13)
    out, _ = lower(m, 11)
    assert ops(out) == expect and attr(out, "Softmax", "axis") == 2


def test_constant_value_floats_dropout_gemm():
    m = mk([helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
            helper.make_node("Add", ["x", "c"], ["a"]),
            helper.make_node("Dropout", ["a"], ["d", "mask"]),
            helper.make_node("Gemm", ["d", "w"], ["y"])],
           {"x": [2, 3]}, ["y"], 13, {"w": np.ones((3, 2), np.float32)})
    out, rep = lower(m, 9)
    assert ops(out) == ["Constant", "Add", "Identity", "Gemm"]
    assert len(out.graph.node[3].input) == 3  # Gemm-9 needs C: a zero scalar
    assert attr(out, "Constant", "value").dims == [3]


def test_dropout_mask_in_use_is_unsupported():
    m = mk([helper.make_node("Dropout", ["x"], ["d", "mask"]), helper.make_node("Cast", ["mask"], ["m"], to=F),
            helper.make_node("Add", ["d", "m"], ["y"])], {"x": [2]}, ["y"], 13)
    with pytest.raises(UnsupportedError, match="mask"):
        downgrade_opset(m, 11)


def test_reshape_allowzero():
    m = mk([helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)], {"x": [2, 3]}, ["y"], 14,
           {"s": np.array([3, 2], np.int64)})
    out, _ = lower(m, 13)
    assert attr(out, "Reshape", "allowzero") is None
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([0, 3], np.int64), "s"))
    with pytest.raises(UnsupportedError, match="allowzero"):
        downgrade_opset(m, 13)


def test_batchnorm_training_mode_dropped_at_default():
    c = 3
    inits = {"s": np.ones(c, np.float32), "b": np.zeros(c, np.float32), "m": np.full(c, 0.1, np.float32),
             "v": np.full(c, 2.0, np.float32)}
    m = mk([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=0)],
           {"x": [1, c, 2, 2]}, ["y"], 15, inits)
    out, rep = lower(m, 9)
    assert attr(out, "BatchNormalization", "training_mode") is None
    m.graph.node[0].attribute[0].i = 1
    with pytest.raises(UnsupportedError, match="training_mode"):
        downgrade_opset(m, 13)


def test_negative_axis_made_positive_below_11_and_slice_attributes():
    m = mk([helper.make_node("Concat", ["x", "x"], ["c"], axis=-1),
            helper.make_node("Slice", ["c", "st", "en", "ax"], ["y"])],
           {"x": [2, 3]}, ["y"], 13, {"st": np.array([1], np.int64), "en": np.array([5], np.int64),
                                      "ax": np.array([1], np.int64)})
    out, _ = lower(m, 9)
    assert attr(out, "Concat", "axis") == 1 and attr(out, "Slice", "starts") == [1]


def test_quantize_linear_per_tensor_lowers_per_channel_does_not():
    inits = {"s": np.array(0.05, np.float32), "z": np.array(0, np.int8)}
    m = mk([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], {"x": [2, 3]}, ["y"], 19, inits)
    lower(m, 13)
    lower(m, 10)
    inits["s"] = np.array([0.05, 0.1], np.float32)
    inits["z"] = np.zeros(2, np.int8)
    m = mk([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=0),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)], {"x": [2, 3]}, ["y"], 13, inits)
    with pytest.raises(UnsupportedError, match="per-channel"):
        downgrade_opset(m, 10)


@pytest.mark.parametrize("op,since,dst,extra", [
    ("LayerNormalization", 17, 16, {}),
    ("GroupNormalization", 21, 17, {"num_groups": 1}),
])
def test_normalizations_below_their_first_opset_are_clear_errors(op, since, dst, extra):
    m = mk([helper.make_node(op, ["x", "s", "b"], ["y"], name="norm0", **extra)], {"x": [1, 4, 3]}, ["y"], since,
           {"s": np.ones(4 if op == "GroupNormalization" else 3, np.float32),
            "b": np.zeros(4 if op == "GroupNormalization" else 3, np.float32)}, out_shape=[1, 4, 3])
    with pytest.raises(UnsupportedError) as err:
        downgrade_opset(m, dst)
    text = str(err.value)
    assert f"{op} node 'norm0'" in text and "first appears in opset" in text and err.value.exit_code == 4


def test_newer_types_are_rejected():
    m = mk([helper.make_node("Relu", ["x"], ["y"])], {"x": [4]}, ["y"], 14, elem=TensorProto.INT8)
    with pytest.raises(UnsupportedError, match="int8"):
        downgrade_opset(m, 13)


def test_shape_start_end_only_at_defaults():
    m = mk([helper.make_node("Shape", ["x"], ["s"], start=0), helper.make_node("Cast", ["s"], ["y"], to=F)],
           {"x": [2, 3]}, ["y"], 15)
    out, _ = downgrade_opset(m, 13)
    assert attr(out, "Shape", "start") is None
    m.graph.node[0].attribute[0].i = 1
    with pytest.raises(UnsupportedError, match="start=1"):
        downgrade_opset(m, 13)


def test_already_low_enough_is_a_copy():
    m = mk([helper.make_node("Relu", ["x"], ["y"])], {"x": [4]}, ["y"], 13)
    out, rep = downgrade_opset(m, 17)
    assert not rep["changed"] and out.SerializeToString() == m.SerializeToString() and out is not m


def test_limit_ir_version_rules():
    m = mk([helper.make_node("Relu", ["x"], ["y"])], {"x": [4]}, ["y"], 18)
    out, rep = limit_ir_version(m, 8)
    assert out.ir_version == 8 and rep["changed"]
    with pytest.raises(UnsupportedError, match="opset 18"):
        limit_ir_version(m, 7)  # opset 18 needs IR 8


def test_dwsep_functions_lowered_or_inlined():
    from custom_ops import make_dwsep_model

    r = np.random.default_rng(0)
    m = make_dwsep_model((1, 8, 6, 6), r.standard_normal((8, 1, 3, 3)).astype(np.float32),
                         r.standard_normal(8).astype(np.float32), r.standard_normal((16, 8, 1, 1)).astype(np.float32),
                         r.standard_normal(16).astype(np.float32), pads=(1, 1, 1, 1), dw_activation="clip",
                         dw_alpha=0.0, dw_beta=6.0, pw_activation="relu")
    assert any(f.overload for f in m.functions)
    out, rep = downgrade_opset(m, 13)  # the function body is lowered, the overload kept
    assert out.functions[0].opset_import[0].version == 13 and rep["verification"]["checked"]
    with pytest.raises(UnsupportedError, match="function overloads"):
        limit_ir_version(m, 8)
    out, rep = make_target_compatible(m, "tx2")  # IR 8 cannot hold overloads: a plain model for onnxruntime
    assert not out.functions and out.ir_version == 8 and out.opset_import[0].version == 13
    assert {n.domain for n in out.graph.node} == {""} and rep["verification"]["max_rel"] <= 1e-5
    same, rep = make_target_compatible(m, "cpu")
    assert not rep["changed"] and same.SerializeToString() == m.SerializeToString()


@pytest.mark.parametrize("op,since,attrs,first", [
    ("HardSwish", 14, {}, "HardSigmoid"), ("Mish", 18, {}, "Softplus"),
    ("Gelu", 20, {}, "Div"), ("Gelu", 20, {"approximate": "tanh"}, "Mul"),
])
def test_newer_activations_become_their_definitions(op, since, attrs, first):
    m = mk([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": [3, 5]}, ["y"], since)
    out, rep = lower(m, 13)
    assert op not in ops(out) and ops(out)[0] == first


def test_function_body_rewrite_uses_constant_nodes():
    """A rewrite that needs a new constant inside a local function emits a Constant node (no initializers)."""
    body = [helper.make_node("Gelu", ["X"], ["Y"])]
    f = helper.make_function("edgesqueeze", "G", ["X"], ["Y"], body, [helper.make_opsetid("", 20)])
    g = helper.make_graph([helper.make_node("G", ["x"], ["y"], domain="edgesqueeze")], "g",
                          [helper.make_tensor_value_info("x", F, [2, 3])],
                          [helper.make_tensor_value_info("y", F, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("edgesqueeze", 1)],
                          functions=[f])
    m.ir_version = 10
    out, rep = lower(m, 17)
    assert not out.graph.initializer and "Constant" in [n.op_type for n in out.functions[0].node]
    assert out.functions[0].opset_import[0].version == 17


def test_slice_negative_axes_input_made_positive_for_opset_10():
    m = mk([helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])], {"x": [2, 6]}, ["y"], 13,
           {"st": np.array([1], np.int64), "en": np.array([4], np.int64), "ax": np.array([-1], np.int64)})
    out, _ = lower(m, 10)
    axes = next(i for i in out.graph.initializer if i.name == out.graph.node[0].input[3])
    assert numpy_helper.to_array(axes).tolist() == [1]
