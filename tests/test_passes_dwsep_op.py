"""The DepthwiseSeparableConv custom op: its local function runs on onnxruntime and matches the numpy reference."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgesqueeze.errors import InputError
from edgesqueeze.ortutil import run_model
from custom_ops import make_dwsep_model, reference_dwsep

from edgesqueeze.plugins.dwsep import OP_TYPE, attach_functions, dwsep_function, has_custom_nodes, make_dwsep_node
from edgesqueeze.plugins.ops import ACTIVATIONS, DOMAIN
from edgesqueeze.plugins.ops import inline_custom_ops as inline_functions
from edgesqueeze.plugins.ops import strip_functions

PARAMS = {"none": (0.0, 0.0), "relu": (0.0, 0.0), "clip": (0.0, 6.0), "leaky_relu": (0.1, 0.0),
          "sigmoid": (0.0, 0.0), "hard_sigmoid": (0.2, 0.5), "hard_swish": (0.0, 0.0)}
GEOMETRY = dict(strides=(2, 1), pads=(1, 0, 1, 2), dilations=(1, 2))


def _weights(rng, c=8, m=12, k=(3, 3)):
    return [rng.standard_normal(s) for s in [(c, 1, *k), (c,), (m, c, 1, 1), (m,)]]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float16, 1e-2)], ids=["fp32", "fp16"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_function_matches_reference(act, dtype, rtol):
    rng = np.random.default_rng(1)
    w = _weights(rng)
    # the pointwise activation differs from the depthwise one so that a swapped pair would be caught
    pw_act = ACTIVATIONS[(ACTIVATIONS.index(act) + 3) % len(ACTIVATIONS)]
    attrs = dict(GEOMETRY, dw_activation=act, dw_alpha=PARAMS[act][0], dw_beta=PARAMS[act][1],
                 pw_activation=pw_act, pw_alpha=PARAMS[pw_act][0], pw_beta=PARAMS[pw_act][1])
    x = (rng.standard_normal((2, 8, 9, 11)) * 3).astype(dtype)
    model = make_dwsep_model(x.shape, *w, dtype=dtype, **attrs)
    onnx.checker.check_model(model, full_check=True)
    node = model.graph.node[0]
    assert (node.op_type, node.domain) == (OP_TYPE, DOMAIN)
    y = run_model(model, {"x": x})["y"]
    assert y.dtype == dtype and y.shape == (2, 12, 5, 9)
    ref = reference_dwsep(x, *[np.asarray(v, dtype) for v in w], **attrs)
    assert _rel(y, ref) <= rtol
    # the inlined variant (TensorRT without the plugin) is the same computation in standard ops
    inlined = inline_functions(model)
    assert not has_custom_nodes(inlined) and not inlined.functions
    assert all(n.domain == "" for n in inlined.graph.node)
    onnx.checker.check_model(inlined, full_check=True)
    np.testing.assert_array_equal(run_model(inlined, {"x": x})["y"], y)


def test_activation_parameters_reach_the_body():
    """clip bounds and leaky slope come from the node's attributes, not from the function."""
    rng = np.random.default_rng(2)
    w = _weights(rng)
    x = (rng.standard_normal((1, 8, 6, 6)) * 4).astype(np.float32)
    outs = []
    for lo, hi in ((0.0, 6.0), (-1.0, 1.0)):
        m = make_dwsep_model(x.shape, *w, dw_activation="clip", dw_alpha=lo, dw_beta=hi, pw_activation="clip",
                             pw_alpha=lo, pw_beta=hi)
        y = run_model(m, {"x": x})["y"]
        assert y.min() >= lo and y.max() <= hi
        outs.append(y)
    assert not np.allclose(outs[0], outs[1])


def test_opset13_hard_swish_without_hardswish_op():
    rng = np.random.default_rng(3)
    w = _weights(rng)
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32) * 4
    m = make_dwsep_model(x.shape, *w, dw_activation="hard_swish", pw_activation="hard_swish", opset=13)
    assert "HardSwish" not in {n.op_type for f in m.functions for n in f.node}
    ref = reference_dwsep(x, *w, dw_activation="hard_swish", pw_activation="hard_swish")
    assert _rel(run_model(m, {"x": x})["y"], ref) <= 1e-5


def test_one_overload_per_variant_and_strip():
    rng = np.random.default_rng(4)
    w = _weights(rng)
    m = make_dwsep_model((1, 8, 5, 5), *w, dw_activation="relu", pw_activation="none", pads=(1, 1, 1, 1))
    assert m.graph.node[0].overload == "relu.none.c8.f32"
    assert [f.overload for f in m.functions] == ["relu.none.c8.f32"]
    stripped = strip_functions(m)
    assert has_custom_nodes(stripped) and not stripped.functions
    assert stripped.graph.node[0].overload == "" and stripped.ir_version == 8
    node = stripped.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == b"" and attrs["plugin_version"] == b"1"
    assert list(attrs["pads"]) == [1, 1, 1, 1] and list(attrs["kernel_shape"]) == [3, 3]
    # the functions can be rebuilt from the weights' shapes (what the optimizer does after surgery)
    rebuilt = attach_functions(stripped)
    assert [f.overload for f in rebuilt.functions] == ["relu.none.c8.f32"]
    x = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(run_model(rebuilt, {"x": x})["y"], run_model(m, {"x": x})["y"])


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="unknown dw_activation 'gelu'"):
        make_dwsep_node(list("abcde"), ["y"], kernel_shape=(3, 3), dw_activation="gelu")
    with pytest.raises(InputError, match="5 inputs"):
        make_dwsep_node(list("abc"), ["y"], kernel_shape=(3, 3))
    node = make_dwsep_node(list("abcde"), ["y"], kernel_shape=(3, 3))
    with pytest.raises(InputError, match="channel count is unknown"):
        dwsep_function(node)
    assert dwsep_function(node, channels=4).overload == "none.none.c4.f32"
    with pytest.raises(InputError, match="inconsistent"):
        make_dwsep_model((1, 4, 5, 5), np.zeros((3, 1, 3, 3)), np.zeros(3), np.zeros((2, 3, 1, 1)), np.zeros(2))
