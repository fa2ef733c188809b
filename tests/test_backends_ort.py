"""The runner interface on onnxruntime and the no-op runner: lifecycle, validation, profiling, re-batching."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.backends import NoopRunner, OrtRunner, get_runner
from edgesqueeze.backends.ort import parse_ort_profile, with_batch
from edgesqueeze.errors import InputError, InternalError, UnsupportedError
from edgesqueeze.model import infer_shapes
from edgesqueeze.ortutil import run_model


def mlp(batch=1, baked=True):
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((2 * 3 * 3, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    shape = numpy_helper.from_array(np.array([batch if baked else -1, 18], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"], name="flatten"),
             helper.make_node("MatMul", ["flat", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["h2"], name="bias1"),
             helper.make_node("Relu", ["h2"], ["y"], name="relu1")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])], [w1, b1, shape])
    return infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))


def feed(batch=1, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((batch, 2, 3, 3)).astype(np.float32)}


def test_infer_matches_a_plain_session_and_lifecycle():
    m = mlp()
    runner = get_runner("ort", m, threads=1)
    with pytest.raises(InternalError, match="activate"):
        runner.infer(feed())
    with runner:
        assert runner.is_active and runner.activate_s is not None
        got = runner.infer(feed())
        with pytest.raises(InternalError, match="already active"):
            runner.activate()
    assert not runner.is_active
    runner.deactivate()  # twice is fine
    ref = run_model(m, feed())
    np.testing.assert_array_equal(got["y"], ref["y"])
    d = runner.describe()
    assert d["name"] == "ort" and d["precision"] == "fp32" and d["threads"] == 1


@pytest.mark.parametrize("feeds, match", [
    ({}, "missing input"),
    ({"x": np.zeros((1, 2, 3, 3), np.float32), "z": np.zeros(1, np.float32)}, "no input of this name"),
    ({"x": np.zeros((1, 2, 3, 3), np.float64)}, "dtype float64"),
    ({"x": np.zeros((2, 2, 3, 3), np.float32)}, "shape 2x2x3x3 does not match the model's 1x2x3x3"),
    ({"x": np.zeros((1, 18), np.float32)}, "shape 1x18"),
    ({"x": [[1.0]]}, "numpy array"),
])
def test_input_validation_names_the_tensor(feeds, match):
    with OrtRunner(mlp()) as r:
        with pytest.raises(InputError, match=match):
            r.infer(feeds)
    with pytest.raises(InputError, match="dict"):
        with OrtRunner(mlp()) as r:
            r.infer([1, 2])


def test_optimization_levels_agree_and_bad_options():
    outs = []
    for level in ("disable", "basic", "extended", "all"):
        with OrtRunner(mlp(), optimization=level, threads=1) as r:
            outs.append(r.infer(feed(seed=3))["y"])
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="optimization level"):
        OrtRunner(mlp(), optimization="max")
    with pytest.raises(InputError, match="threads"):
        OrtRunner(mlp(), threads=0)
    with pytest.raises(InputError, match="unknown backend"):
        get_runner("tflite", mlp())


def test_per_layer_profile():
    with OrtRunner(mlp(), profile_layers=True, threads=1) as r:
        for _ in range(5):
            r.infer(feed())
        prof = r.layer_profile()
    names = {p["name"] for p in prof}
    assert {"fc1", "bias1", "relu1"} <= names
    fc1 = next(p for p in prof if p["name"] == "fc1")
    assert fc1["op"] == "MatMul" and fc1["count"] == 5 and fc1["mean_us"] > 0
    assert sum(p["percent"] for p in prof) == pytest.approx(100.0)
    with OrtRunner(mlp()) as r, pytest.raises(UnsupportedError, match="profile_layers"):
        r.layer_profile()


def test_parse_ort_profile_rejects_garbage(tmp_path):
    p = tmp_path / "prof.json"
    p.write_text("not json")
    with pytest.raises(InputError, match="onnxruntime profile"):
        parse_ort_profile(p)


def test_for_batch_rewrites_a_baked_reshape_and_proves_it():
    single = OrtRunner(mlp(batch=1), threads=1)
    four = single.for_batch(4)
    assert four is not single and four.input_metadata()["x"]["shape"] == [4, 2, 3, 3]
    x = feed(batch=4, seed=7)
    with four, single:
        got = four.infer(x)["y"]
        ref = np.concatenate([single.infer({"x": x["x"][i:i + 1]})["y"] for i in range(4)])
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert single.for_batch(1) is single
    dyn = mlp(batch=1, baked=False)
    dyn.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert OrtRunner(dyn).for_batch(8).input_metadata()["x"]["shape"][0] == "N"


def test_for_batch_refuses_a_model_that_changes_meaning():
    # Transpose then Reshape to [1, 6]: rewriting the Reshape to [2, 6] runs, but mixes the two samples
    shape = numpy_helper.from_array(np.array([1, 6], np.int64), "shape")
    g = helper.make_graph([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
                           helper.make_node("Reshape", ["t", "shape"], ["y"])], "mix",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])], [shape])
    m = infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    with pytest.raises(UnsupportedError, match="cannot run at batch 2.*disagree"):
        OrtRunner(m).for_batch(2)
    scalar = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])], "g", [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [])]), ir_version=8,
        opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedError, match="no batch dimension"):
        with_batch(scalar, 2)


def test_load_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(InputError):
        OrtRunner(bad)
    m = mlp()
    m.graph.node[1].op_type = "NoSuchOp"
    with pytest.raises(UnsupportedError, match="onnxruntime cannot load") as e:
        OrtRunner(m).activate()
    assert "\n" not in e.value.one_line() and "onnxruntime_src" not in e.value.one_line()


def test_noop_runner():
    with NoopRunner(outputs={"y": np.ones(2)}) as r:
        assert r.infer({"x": np.zeros(1, np.float32)})["y"].sum() == 2
        with pytest.raises(InputError):
            r.infer({"x": np.zeros(2, np.float32)})
    assert NoopRunner().for_batch(4).input_metadata()["x"]["shape"] == [4]
    with pytest.raises(InputError):
        NoopRunner(delay_ms=-1)
