"""The ONNX -> torch interpreter behind ``recover``: real networks match onnxruntime, computed shapes follow the
batch and stay symbolic in the re-export, unsupported ops are named."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.errors import UnsupportedError
from edgesqueeze.ortutil import make_session

torch = pytest.importorskip("torch")
from edgesqueeze.compress.onnx_torch import logits_of, onnx_module  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


def _close(model, feed, atol=1e-4):
    ref = make_session(model).run(None, feed)
    got = onnx_module(model)(*[torch.tensor(v) for v in feed.values()])
    got = got if isinstance(got, tuple) else (got,)
    for r, g in zip(ref, got):
        assert np.abs(r - g.detach().numpy()).max() <= atol * max(1.0, np.abs(r).max())


@pytest.mark.parametrize("name", ["ppocr_cls", "mtcnn_onet", "mtcnn_pnet"])
def test_real_networks_match_onnxruntime(name):
    import realdata
    from realnets import realnet
    model = onnx.load(str(realnet(name)))
    shape = (3, 48, 48, 3) if name == "mtcnn_onet" else (2, 24, 30, 3) if name == "mtcnn_pnet" else (3, 3, 48, 192)
    x = realdata.net_inputs(name, shape[0], shape=shape) if name != "mtcnn_pnet" else \
        np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    _close(model, {model.graph.input[0].name: x})


def test_digits_cnn_matches_onnxruntime():
    model = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    x = np.load(DIGITS / "val.npz")["input"][:1]
    _close(model, {model.graph.input[0].name: x})


def _computed_reshape_model():
    """y = reshape(x, concat(shape(x)[0:1], [-1])) @ w: the Paddle flatten of ppocr_cls."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((48, 2)).astype(np.float32), "w")
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b0"], axis=0),
             helper.make_node("Unsqueeze", ["b0", "ax0"], ["b"]),
             helper.make_node("Concat", ["b", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["flat"], name="flatten"),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
             helper.make_node("Identity", ["prob"], ["y"])]
    inits = [w, numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "ax0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_computed_shape_follows_batch_and_stays_symbolic_on_export(tmp_path):
    from edgesqueeze.export import export_torch
    model = _computed_reshape_model()
    onnx.checker.check_model(model)
    x = np.random.default_rng(1).standard_normal((5, 3, 4, 4)).astype(np.float32)
    _close(model, {"x": x})
    assert logits_of(model, "y") == "logits"
    module = onnx_module(model, taps=["logits"])
    module(torch.tensor(x))
    assert tuple(module.tapped["logits"].shape) == (5, 2)
    export_torch(module, torch.tensor(x[:1]), tmp_path / "m.onnx", input_names=["x"], output_names=["y"],
                 legacy=True, dynamic_axes={"x": {0: "N"}})
    again = make_session(onnx.load(str(tmp_path / "m.onnx"))).run(None, {"x": x})[0]
    assert again.shape == (5, 2)
    np.testing.assert_allclose(again, make_session(model).run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_unsupported_op_names_the_node_and_exits_4(tmp_path):
    model = _computed_reshape_model()
    model.graph.node[-1].op_type = "Hardmax"
    model.graph.node[-1].name = "hm7"
    with pytest.raises(UnsupportedError, match="Hardmax") as err:
        onnx_module(model)
    assert "hm7" in str(err.value)
    onnx.save(model, tmp_path / "s.onnx")
    onnx.save(_computed_reshape_model(), tmp_path / "t.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 4, 4), np.float32))
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "recover", str(tmp_path / "s.onnx"), "--teacher",
                        str(tmp_path / "t.onnx"), "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "o.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == UnsupportedError.exit_code, r.stderr
    assert "hm7" in r.stderr and "Hardmax" in r.stderr


def test_custom_nodes_are_inlined_before_training():
    from edgesqueeze.passes.optimizer import optimize
    rng = np.random.default_rng(0)
    dw = numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "dw")
    pw = numpy_helper.from_array(rng.standard_normal((16, 8, 1, 1)).astype(np.float32), "pw")
    nodes = [helper.make_node("Conv", ["x", "dw"], ["a"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "pw"], ["c"]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], [dw, pw])
    fused, _ = optimize(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), target="orin-nano")
    assert any(n.domain not in ("", "ai.onnx") for n in fused.graph.node)
    x = rng.standard_normal((1, 8, 8, 8)).astype(np.float32)
    _close(fused, {"x": x})


def test_split_with_several_outputs():
    """The optimizer's horizontal fusion writes MatMul -> Split (sizes as an input): every output is bound."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32), "w")
    sizes = numpy_helper.from_array(np.array([2, 3], np.int64), "sizes")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Split", ["h", "sizes"], ["a", "b"], axis=1),
             helper.make_node("Relu", ["b"], ["c"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 2]),
                           helper.make_tensor_value_info("c", TensorProto.FLOAT, [3, 3])], [w, sizes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    _close(m, {"x": np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)})


def _gemm_model(trans_a, trans_b, alpha, beta, c_shape, m=3, k=4, n=5):
    rng = np.random.default_rng(0)
    a_shape = (k, m) if trans_a else (m, k)
    b = numpy_helper.from_array(rng.normal(size=(n, k) if trans_b else (k, n)).astype(np.float32), "b")
    inits, ins = [b], ["x", "b"]
    if c_shape is not None:
        inits.append(numpy_helper.from_array(rng.normal(size=c_shape).astype(np.float32), "c"))
        ins.append("c")
    node = helper.make_node("Gemm", ins, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(a_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _export_back(model, x, path):
    """The converter's module exported as ``recover`` / ``train`` export it (TorchScript exporter)."""
    from edgesqueeze.export import export_torch
    name = model.graph.input[0].name
    export_torch(onnx_module(model), torch.tensor(x), path, input_names=[name],
                 output_names=[o.name for o in model.graph.output], legacy=True)
    return onnx.load(str(path))


def _ones_mul(model):
    """Mul nodes by an initializer / Constant equal to 1 (the old Gemm re-export wrote Mul(1.0))."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    return [n.name for n in model.graph.node if n.op_type == "Mul"
            and any(i in consts and consts[i].size == 1 and float(consts[i]) == 1.0 for i in n.input)]


@pytest.mark.parametrize("trans_a,trans_b,alpha,beta,c_shape,gemms", [
    (0, 1, 1.0, 1.0, (5,), 1), (0, 0, 1.0, 1.0, (5,), 1), (0, 1, 1.0, 1.0, (), 1),
    (0, 1, 1.0, 1.0, (3, 5), 1), (0, 0, 1.0, 1.0, (1, 5), 1), (1, 1, 1.0, 1.0, (5,), 1),
    (0, 1, 2.0, 0.5, (5,), 1), (1, 0, 0.5, 3.0, (3, 5), 1), (0, 1, 1.0, 1.0, None, 0), (0, 0, 2.0, 1.0, None, 0)])
def test_gemm_round_trips_as_one_gemm(tmp_path, trans_a, trans_b, alpha, beta, c_shape, gemms):
    """Every Gemm form matches onnxruntime; with a C it exports back as one Gemm (no MatMul + Mul(1.0) + Add),
    without one as the MatMul torch writes for it."""
    model = _gemm_model(trans_a, trans_b, alpha, beta, c_shape)
    x = np.random.default_rng(1).normal(size=(4, 3) if trans_a else (3, 4)).astype(np.float32)
    _close(model, {"x": x}, atol=1e-6)
    back = _export_back(model, x, tmp_path / "g.onnx")
    ops = [n.op_type for n in back.graph.node]
    assert ops.count("Gemm") == gemms and not _ones_mul(back), ops
    if c_shape is not None:
        assert "MatMul" not in ops and "Add" not in ops, ops
    np.testing.assert_allclose(make_session(back).run(None, {"x": x})[0], make_session(model).run(None, {"x": x})[0],
                               rtol=1e-6, atol=1e-6)


def test_digits_cnn_gemms_survive_the_round_trip(tmp_path):
    """The digits CNN's two Gemms (Linear layers) come back as two Gemms, outputs within float32 rounding."""
    model = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    x = np.load(DIGITS / "val.npz")["input"][:1]
    back = _export_back(model, x, tmp_path / "d.onnx")
    count = lambda m, op: sum(n.op_type == op for n in m.graph.node)  # noqa: E731
    assert count(back, "Gemm") == count(model, "Gemm") == 2
    assert not _ones_mul(back) and count(back, "MatMul") == 0
    name = model.graph.input[0].name
    ref = make_session(model).run(None, {name: x})[0]
    np.testing.assert_allclose(make_session(back).run(None, {name: x})[0], ref, rtol=1e-5,
                               atol=1e-5 * np.abs(ref).max())
