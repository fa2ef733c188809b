"""optimize(): report, determinism, input untouched, verification and bisection to the guilty pass."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgesqueeze.errors import InputError, VerificationError
from edgesqueeze.model import model_bytes
from edgesqueeze.passes import PASSES, optimize, register
from edgesqueeze.passes._graph import const, new_const
from netzoo import NetBuilder, mobilenet_v2


def _net(seed=0):
    b = NetBuilder(seed=seed)
    x = b.input("x", [1, 3, 12, 12])
    y = b.act(b.bn(b.conv(x, 3, 8, 3), 8), "relu")
    branches = [b.act(b.conv(y, 8, c, 1), "relu") for c in (4, 4, 6)]
    y = b.op("Identity", [b.op("Concat", branches, axis=1)])
    return b.model([y])


def test_report_and_input_untouched():
    model = _net()
    before = model_bytes(model)
    out, report = optimize(model)
    assert model_bytes(model) == before
    assert set(report) >= {"passes", "fusions", "ops_before", "ops_after", "nodes_before", "nodes_after",
                           "verification"}
    assert report["nodes_before"] == len(model.graph.node) and report["nodes_after"] == len(out.graph.node)
    assert report["ops_before"]["BatchNormalization"] == 1 and "BatchNormalization" not in report["ops_after"]
    assert report["fusions"]["horizontal:conv"]["count"] == 1
    assert report["verification"]["status"] == "passed" and report["verification"]["max_rel"] <= 1e-4
    assert [p["name"] for p in report["passes"]][0] == "fold_constants"
    import json

    json.dumps(report)  # JSON-ready


def test_same_input_same_options_give_identical_bytes():
    model = mobilenet_v2(width=0.35, input_size=64, num_classes=10)
    a, ra = optimize(model, target="orin-nano", verify=False)
    b, rb = optimize(model, target="orin-nano", verify=False)
    assert model_bytes(a) == model_bytes(b)
    assert ra["fusions"] == rb["fusions"]
    c, _ = optimize(onnx.load_from_string(model_bytes(model)), target="orin-nano", verify=False)
    assert model_bytes(c) == model_bytes(a)


def test_mobilenet_v2_gpu_target_fuses_every_depthwise_block():
    model = mobilenet_v2(width=0.5, input_size=96, num_classes=16)
    out, report = optimize(model, target="orin-nano")
    fused = sum(f["count"] for k, f in report["fusions"].items() if k.startswith("depthwise_separable"))
    assert fused == 17 == report["ops_after"]["edgesqueeze::DepthwiseSeparableConv"]
    assert report["verification"]["status"] == "passed"
    assert "BatchNormalization" not in report["ops_after"]


def test_bisection_names_the_pass_that_broke_equivalence():
    @register("test_only_broken_scale", default=False, description="doubles the first conv's weights (a bug)")
    def broken(graph, ctx):
        conv = next(n for n in graph.nodes if n.op == "Conv")
        conv.inputs[1] = new_const(ctx, "doubled", const(conv.inputs[1]) * 2)
        return graph

    try:
        with pytest.raises(VerificationError, match="pass 'test_only_broken_scale' broke equivalence"):
            optimize(_net(), passes=["fold_constants", "fold_batchnorm", "test_only_broken_scale",
                                     "fuse_horizontal", "cleanup"])
        out, report = optimize(_net(), passes=["test_only_broken_scale"], verify=False)
        assert report["verification"]["status"] == "skipped"
    finally:
        PASSES.pop("test_only_broken_scale")


def test_pass_selection_skip_and_opset_range():
    model = _net()
    _, report = optimize(model, passes=["fold_batchnorm", "fuse_horizontal"], skip=["fuse_horizontal"])
    assert [p["name"] for p in report["passes"]] == ["fold_batchnorm"]
    with pytest.raises(InputError, match="unknown pass 'fold_everything'"):
        optimize(model, skip=["fold_everything"])
    old = NetBuilder(seed=1, opset=11)
    x = old.input("x", [1, 4, 6, 6])
    y = old.conv(old.conv(x, 4, 4, 3, group=4), 4, 4, 1)
    _, report = optimize(old.model([y]), target="orin-nano")
    assert report["skipped_passes"][0]["name"] == "fuse_depthwise_separable"
    assert "opsets 13.." in report["skipped_passes"][0]["reason"]


def test_tolerance_is_enforced():
    model = _net(seed=3)
    out, report = optimize(model, rtol=1e-4)
    worst = report["verification"]["max_rel"]
    assert 0 < worst < 1e-4  # folding changes rounding, so the check measures something
    with pytest.raises(VerificationError):
        optimize(model, rtol=worst / 10, noise_factor=0)  # rtol alone: the measured rounding noise is ~worst


def test_fp16_model_optimizes_with_fp16_tolerance():
    b = NetBuilder(seed=4, dtype=np.float16)
    x = b.input("x", [1, 8, 8, 8])
    y = b.act(b.bn(b.conv(x, 8, 8, 3, group=8), 8), "relu6")
    y = b.act(b.bn(b.conv(y, 8, 16, 1), 16), "relu")
    out, report = optimize(b.model([y]), target="orin-nano", rtol=1e-2)
    assert report["ops_after"] == {"edgesqueeze::DepthwiseSeparableConv": 1}
    assert report["verification"]["max_rel"] <= 1e-2


def test_optimizing_an_optimized_model_is_stable():
    model = mobilenet_v2(width=0.35, input_size=64, num_classes=10)
    once, r1 = optimize(model, target="orin-nano")
    twice, r2 = optimize(once, target="orin-nano")
    assert r2["ops_after"] == r1["ops_after"]
    assert r2["verification"]["status"] == "passed"
    assert [f.overload for f in twice.functions] == [f.overload for f in once.functions]


def test_other_custom_ops_keep_their_functions_and_overloads():
    """A model that already carries another edgesqueeze op (SparseConv, from compress) survives optimize."""
    from custom_ops import make_sparse_conv_model

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
    w = w * (np.arange(8)[None, :, None, None] % 4 >= 2)  # 2 of every 4 input channels are zero: 2:4 sparse
    model = make_sparse_conv_model((1, 8, 6, 6), w, rng.normal(size=8), sparse_format="2:4",
                                   pads=(1, 1, 1, 1), activation="relu")
    out, report = optimize(model, target="orin-nano")
    assert report["verification"]["status"] == "passed"
    assert [(n.op_type, n.overload) for n in out.graph.node] == [(n.op_type, n.overload) for n in model.graph.node]
    assert [f.overload for f in out.functions] == [f.overload for f in model.functions]
