"""Explicit QDQ models: placement as TensorRT expects, and outputs equal to a fake-quantized numpy reference."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.errors import InputError
from edgesqueeze.model import infer_shapes, model_bytes
from edgesqueeze.ortutil import run_model
from edgesqueeze.quant import calibrate, fake_quantize, plan_qdq, quantize_qdq
from edgesqueeze.data import open_data


def tiny_cnn(opset=13, seed=0):
    """x[1,3,6,6] -> Conv(3->4, 3x3) -> Relu -> Conv(4->4, 3x3, stride 2) -> Flatten -> Gemm(36->5, transB).

    Every layer is one TensorRT gains nothing from in INT8 (4 channels, a batch-1 GEMV), so the tests of the
    Q/DQ mechanics place them with ``trt_rules=False``; test_trt_rules_* checks the rule itself."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    w1[2] *= 0.05  # a quiet channel: per-channel scales must differ
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    w2 = rng.normal(0, 0.5, (4, 4, 3, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 4).astype(np.float32)
    wf = rng.normal(0, 0.3, (5, 36)).astype(np.float32)
    bf = rng.normal(0, 0.1, 5).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"),
                                                         (wf, "wf"), (bf, "bf")]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1] * 4,
                              strides=[2, 2]),
             helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    onnx.checker.check_model(m)
    return infer_shapes(m), dict(w1=w1, b1=b1, w2=w2, b2=b2, wf=wf, bf=bf)


def conv2d(x, w, b, stride=1, pad=1):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    k = w.shape[2]
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, w.shape[0], oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return (out + b[None, :, None, None]).astype(np.float32)


def per_channel_scale(w, axis):
    amax = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1).max(axis=1)
    return (amax / np.float32(127)).astype(np.float32)


def reference(x, p, amax):
    s = {k: np.float32(v / 127.0) for k, v in amax.items()}
    h = conv2d(fake_quantize(x, s["x"]), fake_quantize(p["w1"], per_channel_scale(p["w1"], 0), 0), p["b1"])
    h = np.maximum(h, 0)
    h = conv2d(fake_quantize(h, s["r1"]), fake_quantize(p["w2"], per_channel_scale(p["w2"], 0), 0), p["b2"],
               stride=2)
    f = fake_quantize(h.reshape(1, -1), s["f"])
    wf = fake_quantize(p["wf"], per_channel_scale(p["wf"], 0), 0)
    return f.astype(np.float64) @ wf.T.astype(np.float64) + p["bf"]


@pytest.fixture(scope="module")
def calibrated():
    model, params = tiny_cnn()
    reader = open_data("random", model, limit=16, seed=1)
    with pytest.warns(UserWarning, match="random"):
        amax = calibrate(model, reader, method="minmax")
    return model, params, amax


def test_qdq_outputs_match_fake_quantized_numpy_reference(calibrated):
    model, params, amax = calibrated
    qdq = quantize_qdq(model, amax, trt_rules=False)
    rng = np.random.default_rng(5)
    for _ in range(4):
        x = rng.uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
        got = run_model(qdq, {"x": x})["y"]
        want = reference(x, params, amax)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        fp32 = run_model(model, {"x": x})["y"]
        assert np.abs(got - fp32).max() > 1e-5  # it really is quantized


def test_placement_is_what_tensorrt_expects(calibrated):
    model, _, amax = calibrated
    qdq = quantize_qdq(model, amax, trt_rules=False)
    nodes = list(qdq.graph.node)
    by_out = {o: n for n in nodes for o in n.output}
    ops = [n.op_type for n in nodes]
    assert ops.count("QuantizeLinear") == 6 and ops.count("DequantizeLinear") == 6  # 3 activations + 3 weights
    relu = next(n for n in nodes if n.op_type == "Relu")
    assert by_out[relu.input[0]].op_type == "Conv"  # nothing between a Conv and its activation
    for n in nodes:
        if n.op_type in ("Conv", "Gemm"):
            assert by_out[n.input[0]].op_type == "DequantizeLinear"
            assert by_out[n.input[1]].op_type == "DequantizeLinear"
            assert n.input[2] in {t.name for t in qdq.graph.initializer}  # bias stays float
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    assert inits["w1_scale"].shape == (4,) and inits["x_scale"].shape == ()
    assert inits["w1_scale"][2] < 0.2 * inits["w1_scale"][0]  # per-channel, the quiet channel has its own scale
    assert inits["x_zero_point"].dtype == np.int8 and not inits["x_zero_point"].any()  # symmetric int8
    dq = next(n for n in nodes if n.name == "w1_DequantizeLinear")
    assert helper.get_attribute_value(dq.attribute[0]) == 0  # axis 0 = output channels


def test_keep_leaves_layers_in_float_and_reports_why(calibrated):
    model, _, amax = calibrated
    plan = plan_qdq(model, amax, keep=["conv2"], trt_rules=False)
    assert plan.nodes == ["conv1", "fc"] and "keep" in plan.skipped["conv2"]
    qdq = quantize_qdq(model, amax, keep=["conv2"], trt_rules=False)
    conv2 = next(n for n in qdq.graph.node if n.name == "conv2")
    assert list(conv2.input) == ["r1", "w2", "b2"]
    missing = plan_qdq(model, {k: v for k, v in amax.items() if k != "f"}, trt_rules=False)
    assert "no calibrated range" in missing.skipped["fc"]
    with pytest.raises(InputError, match="nothing to quantize"):
        quantize_qdq(model, amax, keep=["conv1", "conv2", "fc"], trt_rules=False)


def test_int8_weights_opset_conversion_and_determinism(calibrated):
    model, _, amax = calibrated
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    a = quantize_qdq(model, amax, trt_rules=False)
    b = quantize_qdq(model, amax, int8_weights=True, trt_rules=False)
    assert numpy_helper.to_array(next(t for t in b.graph.initializer if t.name == "w1_quantized")).dtype == np.int8
    assert "w1" not in {t.name for t in b.graph.initializer}
    np.testing.assert_allclose(run_model(a, {"x": x})["y"], run_model(b, {"x": x})["y"], rtol=1e-6, atol=1e-6)
    assert model_bytes(quantize_qdq(model, amax, trt_rules=False)) == model_bytes(a)
    old, _ = tiny_cnn(opset=11)
    converted = quantize_qdq(old, amax, trt_rules=False)
    assert next(o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")) == 13
    assert model_bytes(model) == model_bytes(tiny_cnn()[0])  # the input model is not modified


def residual_block():
    """x -> conv_a -> relu -> conv_b -> Add(conv_b, relu) -> Add(conv_c(x), conv_d(x)) ... -> y."""
    rng = np.random.default_rng(3)
    w = {n: numpy_helper.from_array(rng.normal(0, 0.4, (4, 4, 1, 1)).astype(np.float32), n)
         for n in ("wa", "wb", "wc", "wd")}
    conv = lambda i, wn, o: helper.make_node("Conv", [i, wn], [o], name=o)  # noqa: E731
    nodes = [conv("x", "wa", "a"), helper.make_node("Relu", ["a"], ["r"], name="relu"), conv("r", "wb", "b"),
             helper.make_node("Add", ["b", "r"], ["skip"], name="add_skip"),
             conv("skip", "wc", "c"), conv("skip", "wd", "d"),
             helper.make_node("Add", ["c", "d"], ["y"], name="add_two_convs")]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])], list(w.values()))
    return infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=7))


def test_residual_input_of_an_add_after_a_conv_is_quantized():
    model = residual_block()
    with pytest.warns(UserWarning):
        amax = calibrate(model, open_data("random", model, limit=8), method="minmax")
    plan = plan_qdq(model, amax, trt_rules=False)
    assert plan.residual == {"add_skip": 1, "add_two_convs": 1}
    qdq = quantize_qdq(model, amax, trt_rules=False)
    by_out = {o: n for n in qdq.graph.node for o in n.output}
    add = next(n for n in qdq.graph.node if n.name == "add_skip")
    assert by_out[add.input[0]].op_type == "Conv"              # the fused Conv's output stays as it is
    assert by_out[add.input[1]].name == "r_DequantizeLinear"   # the residual shares the Relu output's Q/DQ
    two = next(n for n in qdq.graph.node if n.name == "add_two_convs")
    assert by_out[two.input[0]].op_type == "Conv" and by_out[two.input[1]].op_type == "DequantizeLinear"
    assert "add_skip" not in plan_qdq(model, amax, keep=["add_skip"], trt_rules=False).residual
    x = {"x": np.random.default_rng(4).uniform(-1, 1, (1, 4, 3, 3)).astype(np.float32)}
    ref, got = run_model(model, x)["y"], run_model(qdq, x)["y"]
    assert 0 < np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_weights_computed_at_run_time_are_named(light_models_dir):
    from edgesqueeze.model import graph_inputs, load_model

    model = load_model(light_models_dir / "light_squeezenet.onnx")
    first = graph_inputs(model)[0].name
    plan = plan_qdq(model, {first: 1.0})
    from edgesqueeze.quant import quantizable_nodes

    first_conv = quantizable_nodes(model)[0]
    assert "computed at run time" in plan.skipped[first_conv] and "fold constants" in plan.skipped[first_conv]


def test_trt_rules_leave_gemv_and_small_channel_layers_out_of_int8(calibrated):
    """Model Optimizer's TensorRT rules: a batch-1 GEMV and a Conv with too few channels for an INT8 kernel get no
    Q/DQ (TensorRT runs them no faster in INT8), the reason is in the plan; when that would leave no layer in
    INT8, every layer is quantized."""
    model, _, amax = calibrated
    from edgesqueeze.quant.trt_int8 import slow_in_int8

    why = {model.graph.node[i].name: r for i, r in slow_in_int8(model).items()}
    assert "GEMV" in why["fc"] and "3 -> 4 channels" in why["conv1"] and "4 -> 4 channels" in why["conv2"]
    assert plan_qdq(model, amax).nodes == ["conv1", "conv2", "fc"]  # only small layers: all INT8, as asked
    plan = plan_qdq(model, amax, keep=["conv2"])
    assert plan.nodes == ["conv1", "fc"] and plan.skipped == {"conv2": "kept in higher precision (--keep)"}


def _fc_net(batch, n=32, conv=(16, 3)):
    """x[batch,3,8,8] -> Conv(3->oc, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> MatMul(oc->n)."""
    oc, ic = conv
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (oc, ic, 3, 3)).astype(np.float32), "wc"),
             numpy_helper.from_array(rng.normal(0, 0.3, (oc, n)).astype(np.float32), "wm")]
    nodes = [helper.make_node("Conv", ["x", "wc"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "wm"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, ic, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n])], inits)
    return infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=7))


@pytest.mark.parametrize("batch, fc_int8", [(1, False), ("N", False), (8, True)])
def test_trt_rules_judge_the_gemv_by_its_rows(batch, fc_int8):
    # a symbolic batch counts as 1 (the batch every stage assumes); a first Conv reading the graph input with
    # 16 output channels has INT8 kernels (Model Optimizer: OC % 8 == 0 and a graph input)
    model = _fc_net(batch)
    amax = {"x": 1.0, "f": 1.0}
    plan = plan_qdq(model, amax)
    assert "conv" in plan.nodes and ("fc" in plan.nodes) == fc_int8
    assert fc_int8 or "GEMV" in plan.skipped["fc"]
    assert plan_qdq(model, amax, trt_rules=False).nodes == ["conv", "fc"]


def test_trt_rules_name_what_model_optimizer_leaves_out():
    from edgesqueeze.quant.trt_int8 import slow_in_int8

    def slow(model):
        return {model.graph.node[i].name: why for i, why in slow_in_int8(model).items()}

    assert set(slow(_fc_net(8, n=8))) == {"fc"}  # N = 8 < 16: a small GEMM
    why = slow(_fc_net(8, conv=(10, 3)))  # 3 -> 10 channels, neither a multiple of 8 (MTCNN P-Net)
    assert "3 -> 10 channels" in why["conv"] and "K=10" in why["fc"]
