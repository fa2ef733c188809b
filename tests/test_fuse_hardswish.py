"""fuse_hardswish: written-out hard-swish (Add -> Clip -> Mul -> Div, as Paddle and PyTorch < opset 14 export it)
and written-out hard-sigmoid (torch's clamp) become HardSigmoid (+ Mul); exact up to rounding, opset kept, a wrong
rewrite is named by the verification."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.errors import VerificationError
from edgesqueeze.model import load_model, opset_version
from edgesqueeze.ortutil import make_session
from edgesqueeze.passes import PASSES, optimize, register
from edgesqueeze.passes.fuse_hardswish import fuse_hardswish
from realnets import realnet

C = 4


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _model(nodes, inits, opset=13, outputs=("y",)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 5, 5])
    w = _const("w", np.random.default_rng(0).standard_normal((C, C, 1, 1)) * 2)
    conv = helper.make_node("Conv", ["x", "w"], ["h"], name="conv")
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph([conv, *nodes], "g", [x], outs, [w, *inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _clip(inp, out, lo=0.0, hi=6.0, opset=13):
    if opset < 11:
        return helper.make_node("Clip", [inp], [out], name="clip", min=lo, max=hi), []
    return helper.make_node("Clip", [inp, "lo", "hi"], [out], name="clip"), [_const("lo", lo), _const("hi", hi)]


def _hardswish(variant, opset=13):
    """h * Clip(h + 3, 0, 6) / 6 in one of the ways exporters write it."""
    clip, bounds = _clip("a", "c", opset=opset)
    add = helper.make_node("Add", ["three", "h"] if variant == "const_first" else ["h", "three"], ["a"], name="add")
    inits = [_const("three", 3.0), _const("six", 6.0), _const("sixth", 1 / 6), *bounds]
    if variant == "divide_first":
        tail = [helper.make_node("Div", ["c", "six"], ["d"], name="div"),
                helper.make_node("Mul", ["h", "d"], ["y"], name="mul")]
    else:
        scale = (helper.make_node("Mul", ["m", "sixth"], ["y"], name="div") if variant == "mul_sixth"
                 else helper.make_node("Div", ["m", "six"], ["y"], name="div"))
        tail = [helper.make_node("Mul", ["c", "h"], ["m"], name="mul"), scale]
    return _model([add, clip, *tail], inits, opset=opset)


def _run(model, x):
    return make_session(model).run(None, {"x": x})[0]


def _ops(model):
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("variant,opset", [("mul_then_div", 13), ("const_first", 13), ("divide_first", 13),
                                           ("mul_sixth", 13), ("mul_then_div", 10)])
def test_written_hardswish_becomes_hardsigmoid_mul(variant, opset):
    model = _hardswish(variant, opset)
    x = np.random.default_rng(1).uniform(-4, 4, (1, C, 5, 5)).astype(np.float32)
    out, rep = optimize(model, passes=["fuse_hardswish", "cleanup"])
    assert _ops(out) == ["Conv", "HardSigmoid", "Mul"], _ops(out)
    assert rep["fusions"]["hardswish"]["count"] == 1
    assert opset_version(out) == opset and out.graph.output[0].name == "y"
    hs = [n for n in out.graph.node if n.op_type == "HardSigmoid"][0]
    assert helper.get_attribute_value(hs.attribute[0]) == pytest.approx(1 / 6)
    ref, got = _run(model, x), _run(out, x)
    assert np.abs(ref).max() > 1 and np.allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["clip_to_5", "sum_is_an_output", "other_tensor_multiplied", "three_of_rank_5"])
def test_lookalikes_are_left_alone(case):
    """Near misses stay, among them a constant that could broadcast x to another shape (rank 5 against 4)."""
    clip, bounds = _clip("a", "c", hi=5.0 if case == "clip_to_5" else 6.0)
    other = "x" if case == "other_tensor_multiplied" else "h"
    nodes = [helper.make_node("Add", ["h", "three"], ["a"], name="add"), clip,
             helper.make_node("Mul", [other, "c"], ["m"], name="mul"),
             helper.make_node("Div", ["m", "six"], ["y"], name="div")]
    outputs = ("y", "a") if case == "sum_is_an_output" else ("y",)
    three = np.full((1, 1, 1, 1, 1), 3.0) if case == "three_of_rank_5" else 3.0
    model = _model(nodes, [_const("three", three), _const("six", 6.0), *bounds], outputs=outputs)
    out, rep = optimize(model, passes=["fuse_hardswish", "cleanup"])
    assert "hardswish" not in rep["fusions"] and "HardSigmoid" not in _ops(out)


def test_clamp_written_hardsigmoid_becomes_one_node():
    """torch exports HardSigmoid(alpha, beta) of the ONNX->torch converter as Mul -> Add -> Clip(0, 1)."""
    clip, bounds = _clip("b", "y", 0.0, 1.0)
    nodes = [helper.make_node("Mul", ["alpha", "h"], ["s"], name="mul"),
             helper.make_node("Add", ["s", "beta"], ["b"], name="add"), clip]
    model = _model(nodes, [_const("alpha", 0.2), _const("beta", 0.5), *bounds])
    x = np.random.default_rng(2).uniform(-4, 4, (1, C, 5, 5)).astype(np.float32)
    out, rep = optimize(model, passes=["fuse_hardswish", "cleanup"])
    assert _ops(out) == ["Conv", "HardSigmoid"] and rep["fusions"]["hardsigmoid"]["count"] == 1
    attrs = {a.name: a.f for a in out.graph.node[1].attribute}
    assert attrs == pytest.approx({"alpha": 0.2, "beta": 0.5})
    assert np.allclose(_run(out, x), _run(model, x), rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def ppocr_cls():
    return load_model(realnet("ppocr_cls"), {"x": [1, 3, 48, 192]}, opset=13, pin=True)


def test_ppocr_cls_hardswish_fused_and_verified(ppocr_cls):
    """PP-OCR's MobileNetV3 classifier: 18 hard-swishes, 72 elementwise nodes -> 36, verified by the optimizer."""
    out, rep = optimize(ppocr_cls)
    assert rep["fusions"]["hardswish"]["count"] == 18
    assert rep["verification"]["status"] == "passed"
    ops = _ops(out)
    assert "Div" not in ops and ops.count("Clip") == 0 and ops.count("HardSigmoid") == 27
    assert opset_version(out) == 13


def test_wrong_hardswish_rewrite_is_named(ppocr_cls):
    """A rewrite with beta 0.45 instead of 0.5 (a gate 5 % off everywhere) fails verification, named."""
    def broken(graph, ctx):
        graph = fuse_hardswish(graph, ctx)
        for n in graph.nodes:
            if n.op == "HardSigmoid" and abs(n.attrs["alpha"] - 1 / 6) < 1e-9:
                n.attrs["beta"] = 0.45
        return graph

    register("test_broken_hardswish", default=False, description="fuse_hardswish with a wrong beta")(broken)
    try:
        passes = ["fold_constants", "eliminate_noops", "fold_batchnorm", "fold_affine", "test_broken_hardswish",
                  "cleanup"]
        with pytest.raises(VerificationError, match="pass 'test_broken_hardswish' broke equivalence"):
            optimize(ppocr_cls, passes=passes)
    finally:
        PASSES.pop("test_broken_hardswish", None)


def test_recovered_export_is_fused_back():
    """The converter writes HardSigmoid as clamp(alpha * x + beta): after the optimizer, one HardSigmoid again."""
    torch = pytest.importorskip("torch")
    from edgesqueeze.compress.onnx_torch import onnx_module
    from edgesqueeze.export import export_torch

    model = _hardswish("mul_then_div")
    fused, _ = optimize(model, passes=["fuse_hardswish", "cleanup"])
    assert "HardSigmoid" in _ops(fused)
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_torch(onnx_module(fused), torch.zeros(1, C, 5, 5), path, input_names=["x"], output_names=["y"],
                     legacy=True, opset=13)
        exported = onnx.load(str(path))
    assert "HardSigmoid" not in _ops(exported)
    again, rep = optimize(exported)
    assert _ops(again).count("HardSigmoid") == 1 and rep["verification"]["status"] == "passed"
