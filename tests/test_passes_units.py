"""Each graph pass on tiny models built in code: op counts after the pass + equality on onnxruntime."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesqueeze.errors import InputError
from edgesqueeze.model import random_feeds
from edgesqueeze.ortutil import run_model
from edgesqueeze.passes import PASSES, default_pass_names, optimize
from netzoo import NetBuilder


def ops(model):
    return Counter(n.op_type for n in model.graph.node)


def run(model, passes, rtol=1e-5, **kw):
    """Optimize with ``passes``, check on onnxruntime (relative error <= rtol), return (model, report)."""
    out, report = optimize(model, passes=passes, rtol=rtol, **kw)
    assert report["verification"]["status"] == "passed"
    for feeds in random_feeds(model, seed=3, batches=2):
        ref, act = run_model(model, feeds), run_model(out, feeds)
        assert list(ref) == list(act)
        for name in ref:
            scale = max(float(np.max(np.abs(ref[name]))), 1e-12)
            assert float(np.max(np.abs(ref[name].astype(np.float64) - act[name]))) / scale <= rtol, name
    onnx.checker.check_model(out, full_check=True)
    return out, report


# ----------------------------------------------------------------------------- fold_constants
def test_fold_constants_constantofshape_weights_and_shape_arithmetic():
    b = NetBuilder(seed=1)
    x = b.input("x", [1, 3, 8, 8])
    shape = b.weight(np.array([4, 3, 3, 3], np.int64), "wshape")
    b.inits[-1] = onnx.numpy_helper.from_array(np.array([4, 3, 3, 3], np.int64), shape)
    w = b.op("ConstantOfShape", [shape], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.05]))
    y = b.op("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    s = b.op("Shape", [y])
    first = b.op("Gather", [s, b.op("Constant", [], value=helper.make_tensor("i", TensorProto.INT64, [1], [0]))],
                 axis=0)
    new_shape = b.op("Concat", [first, b.op("Constant", [], value=helper.make_tensor(
        "m", TensorProto.INT64, [1], [-1]))], axis=0)
    last = b.op("Shape", [y], start=-1)  # only the last dim: a start/end-aware fold is needed
    flat = b.op("Reshape", [y, new_shape])
    out = b.op("Mul", [flat, b.op("Cast", [last], to=TensorProto.FLOAT)])
    model = b.model([out])
    opt, report = run(model, ["fold_constants"])
    assert ops(opt) == Counter({"Conv": 1, "Reshape": 1, "Mul": 1})
    assert report["fusions"]["fold_constants:ConstantOfShape"]["count"] == 1
    assert report["fusions"]["fold_constants:Shape"]["count"] == 2


# ----------------------------------------------------------------------------- eliminate_noops
def test_eliminate_noops_removes_identity_dropout_and_noop_reshape_transpose_cast_pad():
    b = NetBuilder(seed=2)
    x = b.input("x", [1, 4, 5, 5])
    y = b.op("Identity", [b.conv(x, 4, 4)])
    y = b.op("Dropout", [y])
    y = b.op("Reshape", [y, b.weight(np.array([1, 4, 5, 5]), "s")])
    b.inits[-1] = onnx.numpy_helper.from_array(np.array([1, 4, 5, 5], np.int64), b.inits[-1].name)
    y = b.op("Transpose", [y], perm=[0, 1, 2, 3])
    y = b.op("Cast", [y], to=TensorProto.FLOAT)
    pads = onnx.numpy_helper.from_array(np.zeros(8, np.int64), "zero_pads")
    b.inits.append(pads)
    y = b.op("Pad", [y, "zero_pads"])
    y = b.op("Relu", [y])
    out = b.op("Identity", [y])  # the graph output keeps its name
    model = b.model([out])
    opt, report = run(model, ["eliminate_noops"])
    assert ops(opt) == Counter({"Conv": 1, "Relu": 1})
    assert [o.name for o in opt.graph.output] == [out]
    kinds = {k.split(":")[1] for k in report["fusions"]}
    assert kinds == {"Identity", "Dropout", "Reshape", "Transpose", "Cast", "Pad"}


def test_eliminate_noops_keeps_real_work():
    b = NetBuilder(seed=3)
    x = b.input("x", [1, 4, 5, 5])
    y = b.op("Transpose", [x], perm=[0, 1, 3, 2])
    y = b.op("Reshape", [y, "shape"])
    b.inits.append(onnx.numpy_helper.from_array(np.array([1, 100], np.int64), "shape"))
    d, mask = b.op("Dropout", [y], n_out=2)
    model = b.model([d, mask])  # the mask is used: the Dropout must stay
    opt, _ = run(model, ["eliminate_noops"])
    assert ops(opt) == ops(model)


# ----------------------------------------------------------------------------- fold_batchnorm
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_fold_batchnorm_into_conv(bias):
    b = NetBuilder(seed=4)
    x = b.input("x", [2, 3, 9, 9])
    y = b.act(b.bn(b.conv(x, 3, 8, 3, stride=2, bias=bias), 8), "relu")
    model = b.model([y])
    opt, report = run(model, ["fold_batchnorm"])
    assert ops(opt) == Counter({"Conv": 1, "Relu": 1})
    assert report["fusions"]["fold_batchnorm:Conv+BatchNormalization"]["count"] == 1
    assert len(opt.graph.node[0].input) == 3  # a bias was created when there was none


def test_fold_batchnorm_zero_variance_uses_epsilon():
    b = NetBuilder(seed=5)
    x = b.input("x", [1, 4, 6, 6])
    y = b.bn(b.conv(x, 4, 4, 3), 4, eps=1e-3, zero_var=True)
    model = b.model([y])
    opt, _ = run(model, ["fold_batchnorm"])
    assert ops(opt) == Counter({"Conv": 1})
    assert np.all(np.isfinite(run_model(opt, random_feeds(opt)[0])[y]))


def test_fold_batchnorm_shared_weights_stay_correct_for_both_convs():
    b = NetBuilder(seed=6)
    x = b.input("x", [1, 4, 6, 6])
    w = b.weight(b.randn(4, 4, 3, 3))
    y1 = b.bn(b.conv(x, 4, 4, 3, weight=w, bias=False), 4)
    y2 = b.bn(b.conv(x, 4, 4, 3, weight=w, bias=False), 4)  # same weight, different BN
    model = b.model([y1, y2])
    opt, report = run(model, ["fold_batchnorm"])
    assert ops(opt) == Counter({"Conv": 2})
    assert report["fusions"]["fold_batchnorm:Conv+BatchNormalization"]["count"] == 2
    assert opt.graph.node[0].input[1] != opt.graph.node[1].input[1]


def test_fold_batchnorm_output_name_kept_and_unfoldable_bn_becomes_mul_add():
    b = NetBuilder(seed=7)
    x = b.input("x", [1, 4, 6, 6])
    c = b.conv(x, 4, 4, 3)
    y = b.bn(c, 4)  # c is also read by the Add below: BN cannot fold into the conv
    z = b.op("Add", [y, c])
    pre = b.bn(b.op("MaxPool", [z], kernel_shape=[2, 2]), 4)  # pre-activation BN without a producer layer
    model = b.model([z, pre])
    opt, report = run(model, ["fold_batchnorm"])
    assert "BatchNormalization" not in ops(opt)
    assert report["fusions"]["fold_batchnorm:BatchNormalization->Mul+Add"]["count"] == 2
    assert [o.name for o in opt.graph.output] == [z, pre]


def test_fold_batchnorm_into_convtranspose_gemm_and_matmul():
    b = NetBuilder(seed=8)
    x = b.input("x", [2, 4, 5, 5])
    wt = b.weight(b.randn(4, 3, 3, 3))  # group 2: C_in 4, C_out 2 * 3 = 6
    y = b.bn(b.op("ConvTranspose", [x, wt], group=2, strides=[2, 2], kernel_shape=[3, 3]), 6)
    v = b.input("v", [3, 5])
    g = b.bn(b.op("Gemm", [v, b.weight(b.randn(7, 5)), b.weight(b.randn(7, scale=0.3))], transB=1, alpha=0.5,
                  beta=2.0), 7)
    m = b.bn(b.op("MatMul", [v, b.weight(b.randn(5, 6))]), 6)
    model = b.model([y, g, m])
    opt, report = run(model, ["fold_batchnorm"])
    assert "BatchNormalization" not in ops(opt)
    assert ops(opt) == Counter({"ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "Add": 1})
    for kind in ("ConvTranspose", "Gemm", "MatMul"):
        assert report["fusions"][f"fold_batchnorm:{kind}+BatchNormalization"]["count"] == 1


def test_fold_batchnorm_legacy_opset7_attributes():
    b = NetBuilder(seed=9, opset=7)
    x = b.input("x", [1, 3, 6, 6])
    y = b.bn(b.conv(x, 3, 5, 3), 5, spatial=1)
    model = b.model([y])
    opt, _ = run(model, ["fold_batchnorm"])
    assert ops(opt) == Counter({"Conv": 1})


# ----------------------------------------------------------------------------- fold_affine
def test_fold_affine_folds_per_channel_arithmetic_into_conv():
    b = NetBuilder(seed=10)
    x = b.input("x", [1, 3, 6, 6])
    y = b.conv(x, 3, 4, 3, bias=False)
    y = b.op("Mul", [y, b.weight(b.rng.uniform(0.5, 1.5, (4, 1, 1)), "scale")])
    y = b.op("Add", [b.weight(b.rng.normal(0, 1, (1, 4, 1, 1)), "shift"), y])
    y = b.op("Sub", [y, b.weight(np.array([0.25]), "sub")])
    y = b.op("Div", [y, b.weight(np.array(2.0), "div")])
    y = b.op("Sub", [b.weight(np.array(1.0), "one"), y])  # const - conv: negated weights
    model = b.model([y])
    opt, report = run(model, ["fold_affine"])
    assert ops(opt) == Counter({"Conv": 1})
    assert sum(f["count"] for f in report["fusions"].values()) == 5


def test_fold_affine_leaves_spatial_constants_and_collapses_chains():
    b = NetBuilder(seed=11)
    x = b.input("x", [1, 4, 6, 6])
    y = b.conv(x, 4, 4, 3)
    y = b.op("Mul", [y, b.weight(b.rng.normal(0, 1, (1, 1, 6, 6)), "spatial")])  # varies over H, W: not foldable
    z = b.op("Relu", [x])  # DenseNet-style: (BN as Mul+Add) then the learned Mul, Add
    for op in ("Mul", "Add", "Mul", "Add"):
        z = b.op(op, [z, b.weight(b.rng.uniform(0.5, 1.5, (4, 1, 1)), op.lower())])
    model = b.model([y, z])
    opt, _ = run(model, ["fold_affine"])
    assert ops(opt) == Counter({"Conv": 1, "Relu": 1, "Mul": 2, "Add": 1})


# ----------------------------------------------------------------------------- fuse_horizontal
def test_fuse_horizontal_inception_branches():
    b = NetBuilder(seed=12)
    x = b.input("x", [1, 8, 7, 7])
    branches = [b.act(b.conv(x, 8, c, 1), "relu") for c in (4, 6, 2)]
    other = b.conv(x, 8, 3, 1, stride=2)  # different stride: not merged
    model = b.model([b.op("Concat", branches, axis=1), other])
    opt, report = run(model, ["fuse_horizontal"])
    assert ops(opt) == Counter({"Conv": 2, "Relu": 1, "Split": 1, "Concat": 1})
    assert report["fusions"]["horizontal:conv"]["count"] == 1


def test_fuse_horizontal_keeps_layer_activation_pairs():
    """ResNet's projection shortcut (no activation) and branch2a (Relu) read the same tensor: merging them would
    put a Split between branch2a's Conv and its Relu."""
    b = NetBuilder(seed=19)
    x = b.input("x", [1, 8, 7, 7])
    short = b.conv(x, 8, 16, 1)
    branch = b.act(b.conv(x, 8, 4, 1), "relu")
    model = b.model([short, branch])
    opt, report = run(model, ["fuse_horizontal"])
    assert ops(opt) == ops(model) and not report["fusions"]


def test_fuse_horizontal_qkv_matmul_and_gemm_keep_output_names():
    b = NetBuilder(seed=13)
    x = b.input("x", [4, 16])
    q, k, v = (b.op("MatMul", [x, b.weight(b.randn(16, 16))]) for _ in range(3))
    g1 = b.op("Gemm", [x, b.weight(b.randn(5, 16)), b.weight(b.randn(5, scale=0.1))], transB=1, beta=0.5)
    g2 = b.op("Gemm", [x, b.weight(b.randn(3, 16))], transB=1)
    model = b.model([q, k, v, g1, g2])
    opt, report = run(model, ["fuse_horizontal"])
    assert ops(opt) == Counter({"MatMul": 1, "Gemm": 1, "Split": 2})
    assert [o.name for o in opt.graph.output] == [q, k, v, g1, g2]
    assert report["fusions"]["horizontal:matmul"]["count"] == 1
    assert report["fusions"]["horizontal:gemm"]["count"] == 1


def test_fuse_horizontal_padded_only_when_exact():
    b = NetBuilder(seed=14)
    x = b.input("x", [1, 4, 6, 6])
    a = b.conv(x, 4, 3, 1, pad=0)
    c = b.conv(x, 4, 5, 3, pad=1)  # same output grid as the 1x1: zero-padding the 1x1 is exact
    d = b.conv(x, 4, 2, 3, pad=0)  # a 4x4 grid: stays apart
    model = b.model([a, c, d])
    plain, _ = run(model, ["fuse_horizontal"])
    assert ops(plain)["Conv"] == 3
    opt, report = run(model, ["fuse_horizontal_padded"])
    assert ops(opt) == Counter({"Conv": 2, "Split": 1})
    assert report["fusions"]["horizontal:padded_conv"]["nodes"][0][:2] == [n.name for n in model.graph.node[:2]]


# ----------------------------------------------------------------------------- fuse_depthwise_separable
def _dwsep_block(act1, act2, *, stride=1, dilation=1, bias=True, bn=True, dtype=np.float32, seed=15):
    b = NetBuilder(seed=seed, dtype=dtype)
    x = b.input("x", [1, 8, 9, 9])
    y = b.conv(x, 8, 8, 3, stride=stride, group=8, bias=bias, dilation=dilation)
    y = b.act(b.bn(y, 8) if bn else y, act1)
    y = b.conv(y, 8, 12, 1, bias=bias)
    y = b.act(b.bn(y, 12) if bn else y, act2)
    return b.model([y])


@pytest.mark.parametrize("act1,act2", [("relu6", "none"), ("relu", "relu"), ("leaky_relu", "sigmoid"),
                                       ("hard_swish", "hard_sigmoid"), ("none", "relu6")])
def test_fuse_depthwise_separable(act1, act2):
    model = _dwsep_block(act1, act2, stride=2, dilation=1)
    opt, report = run(model, ["fold_batchnorm", "fuse_depthwise_separable"], rtol=1e-5)
    assert [(n.domain, n.op_type) for n in opt.graph.node] == [("edgesqueeze", "DepthwiseSeparableConv")]
    assert len(opt.functions) == 1 and opt.functions[0].overload == opt.graph.node[0].overload
    attrs = {a.name: helper.get_attribute_value(a) for a in opt.graph.node[0].attribute}
    names = {"relu6": b"clip"}
    assert attrs["dw_activation"] == names.get(act1, act1.encode())
    assert attrs["pw_activation"] == names.get(act2, act2.encode())
    assert list(attrs["strides"]) == [2, 2] and list(attrs["pads"]) == [1, 1, 1, 1]
    assert sum(f["count"] for k, f in report["fusions"].items() if k.startswith("depthwise_separable")) == 1


def test_fuse_depthwise_separable_folds_bn_itself_and_handles_no_bias_dilation_fp16():
    model = _dwsep_block("relu6", "none", bias=False, dilation=2)
    opt, _ = run(model, ["fuse_depthwise_separable"])  # asked by name, BN still present
    assert [n.op_type for n in opt.graph.node] == ["DepthwiseSeparableConv"]
    half = _dwsep_block("relu", "none", dtype=np.float16, bn=False)
    opt16, _ = run(half, ["fuse_depthwise_separable"], rtol=1e-2)
    assert opt16.graph.node[0].overload.endswith(".f16")


def test_fuse_depthwise_separable_only_for_gpu_targets_and_exact_patterns():
    assert "fuse_depthwise_separable" not in default_pass_names()
    assert "fuse_depthwise_separable" not in default_pass_names("cpu")
    assert "fuse_depthwise_separable" in default_pass_names("orin-nano")
    model = _dwsep_block("relu", "relu")
    cpu, _ = optimize(model)
    assert not any(n.domain == "edgesqueeze" for n in cpu.graph.node)
    gpu, _ = optimize(model, target="xavier-nx")
    assert any(n.domain == "edgesqueeze" for n in gpu.graph.node)
    # a pointwise conv with stride 2 is not a pointwise conv of the pattern
    b = NetBuilder(seed=16)
    x = b.input("x", [1, 8, 9, 9])
    y = b.conv(b.conv(x, 8, 8, 3, group=8), 8, 4, 1, stride=2)
    opt, _ = run(b.model([y]), ["fuse_depthwise_separable"])
    assert ops(opt) == Counter({"Conv": 2})


def test_fuse_depthwise_separable_keeps_intermediate_graph_outputs():
    b = NetBuilder(seed=17)
    x = b.input("x", [1, 8, 9, 9])
    mid = b.act(b.conv(x, 8, 8, 3, group=8), "relu")
    y = b.conv(mid, 8, 4, 1)
    opt, _ = run(b.model([y, mid]), ["fuse_depthwise_separable"])
    assert ops(opt) == Counter({"Conv": 2, "Relu": 1})


# ----------------------------------------------------------------------------- fuse_conv_activation
def test_fuse_conv_activation_is_report_only():
    b = NetBuilder(seed=18)
    x = b.input("x", [1, 3, 6, 6])
    y = b.act(b.bn(b.conv(x, 3, 4, 3), 4), "relu6")
    z = b.conv(x, 3, 4, 3)
    swish = b.op("Mul", [z, b.op("Sigmoid", [z])])
    model = b.model([y, swish])
    opt, report = run(model, ["fuse_conv_activation"])
    assert ops(opt) == ops(model)
    assert report["fusions"]["conv_activation:Conv+BatchNormalization+Clip"]["count"] == 1
    assert report["fusions"]["conv_activation:Conv+Swish"]["count"] == 1


def test_every_pass_is_registered_with_opsets_and_description():
    for p in PASSES.values():
        assert p.description and p.opsets[0] <= p.opsets[1]
    with pytest.raises(InputError, match="unknown pass 'nope'"):
        optimize(_dwsep_block("relu", "relu"), passes=["nope"])
