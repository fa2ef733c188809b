"""Streaming calibration: tensors observed, memory-budget passes, result cache, NaN reporting, calibrators."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.data import ArrayReader, open_data
from edgesqueeze.errors import InputError
from edgesqueeze.model import infer_shapes
from edgesqueeze.quant import calibrate
from edgesqueeze.quant.calibrators import mse_amax, percentile_amax
from edgesqueeze.quant.collect import activation_tensors, collect_statistics, plan_groups
from edgesqueeze.quant.histogram import TensorHistogram


def mlp():
    """x[1,16] -> MatMul -> Add(bias) -> Relu -> MatMul -> Log (NaN/-Inf where its input is <= 0) ; a Shape branch."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (16, 32)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.5, (32, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([2.0], np.float32), "two")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
             helper.make_node("Log", ["y"], ["logy"], name="log"),
             helper.make_node("Mul", ["two", "two"], ["four"], name="const_mul"),  # constant, not an activation
             helper.make_node("Shape", ["x"], ["shape"], name="shape")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]),
                           helper.make_tensor_value_info("logy", TensorProto.FLOAT, [1, 8]),
                           helper.make_tensor_value_info("four", TensorProto.FLOAT, [1]),
                           helper.make_tensor_value_info("shape", TensorProto.INT64, [2])], inits)
    return infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


def reader_of(n, seed=0):
    model = mlp()
    x = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    inputs = {"x": {"shape": [1, 16], "dtype": np.dtype(np.float32), "batch": 1}}
    return model, ArrayReader(inputs, {"x": x}, None, source=f"mem{n}-{seed}", digest=f"{n}-{seed}"), x


def test_activation_tensors_are_the_float_activations_in_graph_order():
    assert activation_tensors(mlp()) == ["x", "h", "hb", "r", "y", "logy"]


def test_the_model_is_left_as_it_was():
    from edgesqueeze.model import model_bytes

    model, reader, _ = reader_of(3)
    before = model_bytes(model)
    collect_statistics(model, reader, memory_budget_mb=1e-4)
    assert model_bytes(model) == before


def test_minmax_is_exact_and_memory_budget_splits_passes_without_changing_results():
    model, reader, x = reader_of(30)
    with pytest.warns(UserWarning, match="NaN/Inf"):
        one = calibrate(model, reader, method="minmax")
    assert one["x"] == pytest.approx(float(np.abs(x).max()))
    groups = plan_groups(model, activation_tensors(model), 1, memory_budget_mb=1e-4)  # ~100 bytes per pass
    assert len(groups) > 3 and sum(groups, []) == activation_tensors(model)
    with pytest.warns(UserWarning):
        many = calibrate(model, reader, method="entropy", memory_budget_mb=1e-4)
    with pytest.warns(UserWarning):
        single = calibrate(model, reader, method="entropy")
    assert many == single


def test_nonfinite_activations_are_reported_and_left_out():
    model, reader, _ = reader_of(20)
    details = {}
    with pytest.warns(UserWarning, match="'logy'"):
        amax = calibrate(model, reader, method="percentile", details=details)
    assert details["nonfinite"]["logy"] > 0 and np.isfinite(amax["logy"])
    assert list(details["nonfinite"]) == ["logy"]


def test_memory_does_not_grow_with_the_number_of_samples():
    def peak(n):
        model, reader, _ = reader_of(n)
        collect_statistics(model, reader)  # warm-up: session and numpy caches
        tracemalloc.start()
        collect_statistics(model, reader)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(20), peak(400)
    assert large < small * 1.5 + 64 * 1024


def test_result_cache_is_keyed_by_model_data_and_method(tmp_path):
    model, reader, _ = reader_of(10)
    details = {}
    with pytest.warns(UserWarning):
        first = calibrate(model, reader, method="mse", cache_dir=tmp_path, details=details)
    assert details["cached"] is False and len(list(tmp_path.glob("*.json"))) == 1
    again = {}
    assert calibrate(model, reader, method="mse", cache_dir=tmp_path, details=again) == first
    assert again["cached"] is True and list(first) == activation_tensors(model)  # graph order kept
    with pytest.warns(UserWarning):
        calibrate(model, reader, method="percentile", percentile=99.9, cache_dir=tmp_path)
    _, other_data, _ = reader_of(10, seed=1)
    with pytest.warns(UserWarning):
        calibrate(model, other_data, method="mse", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_calibrator_values_on_known_distributions():
    rng = np.random.default_rng(1)
    h = TensorHistogram()
    h.update(rng.uniform(-4, 4, 400_000).astype(np.float32))
    assert percentile_amax(h, 50.0) == pytest.approx(2.0, abs=0.01)
    assert percentile_amax(h, 100.0) == pytest.approx(h.amax)
    g = TensorHistogram()
    g.update(rng.normal(size=400_000).astype(np.float32))
    # the squared-error optimum of a Gaussian at 8 bits clips near 3.9 sigma (ACIQ), below max |x| (~4.9)
    assert 3.5 < mse_amax(g) < 4.3 < g.amax
    with pytest.raises(InputError):
        percentile_amax(g, 0.0)


def test_bad_requests():
    model, reader, _ = reader_of(4)
    with pytest.raises(InputError, match="unknown calibration method"):
        calibrate(model, reader, method="kl")
    with pytest.raises(InputError, match="no tensor named"):
        collect_statistics(model, reader, tensors=["nope"])
    with pytest.warns(UserWarning, match="random"):
        calibrate(mlp(), open_data("random", mlp(), limit=2), method="minmax", tensors=["x", "r"])


def _reshape_model(mix: bool, allowzero: int = 0):
    """x[1,16] -> MatMul -> Reshape(const [1, 4, 8]) -> Relu -> (mix: ReduceSum over axis 0) -> Flatten."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (16, 32)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 4, 8], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
             helper.make_node("Reshape", ["h", "shape"], ["r"], name="reshape", allowzero=allowzero),
             helper.make_node("Relu", ["r"], ["a"], name="relu")]
    last = "a"
    if mix:  # a no-op at batch 1 that sums the samples of a stacked run
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
        nodes.append(helper.make_node("ReduceSum", ["a", "axes"], ["s"], name="mix", keepdims=1))
        last = "s"
    nodes.append(helper.make_node("Flatten", [last], ["y"], name="flat"))
    g = helper.make_graph(nodes, "reshape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], inits)
    model = infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    x = np.random.default_rng(4).normal(size=(21, 16)).astype(np.float32)  # 21: the last stacked run is short
    inputs = {"x": {"shape": [1, 16], "dtype": np.dtype(np.float32), "batch": 1}}
    return model, ArrayReader(inputs, {"x": x}, None, source="mem", digest=f"mix{mix}")


@pytest.mark.parametrize("mix,allowzero", [(False, 0), (False, 1), (True, 0)])
def test_stacked_runs_give_the_statistics_of_single_runs(mix, allowzero, monkeypatch):
    from edgesqueeze.model import model_bytes
    from edgesqueeze.quant import collect

    model, reader = _reshape_model(mix, allowzero)
    before = model_bytes(model)
    single = collect_statistics(model, reader, calib_batch=1)
    checks = []
    real = collect._first_stacked_run
    monkeypatch.setattr(collect, "_first_stacked_run", lambda *a: checks.append(real(*a)) or checks[-1])
    stacked = collect_statistics(model, reader, calib_batch=8)  # baked Reshape [1, 4, 8]: rewritten; mix: fallback
    assert len(checks) == 1 and (checks[0] is None) == mix
    assert model_bytes(model) == before
    assert list(stacked) == list(single)
    for name, s in single.items():
        t = stacked[name]
        assert (t.count, t.range) == (s.count, s.range), name
        assert t.min == pytest.approx(s.min, rel=1e-5) and t.max == pytest.approx(s.max, rel=1e-5), name
        assert np.abs(t.hist - s.hist).sum() <= 2, name  # last-bit rounding of a batched MatMul at a bin edge
    if mix:  # the sum over a stacked run would be far larger than any single sample's value
        assert stacked["s"].max == pytest.approx(single["s"].max, rel=1e-5)


def test_calibration_batch_follows_the_memory_budget(monkeypatch):
    from edgesqueeze.quant import collect
    from edgesqueeze.quant.collect import MAX_CALIB_BATCH, calibration_batch

    model = mlp()
    names = activation_tensors(model)
    assert calibration_batch(model, names, 1, 512.0) == MAX_CALIB_BATCH  # 512 bytes per feed
    per_feed = sum(4 * n for n in (16, 32, 32, 32, 8, 8)) / 2 ** 20
    assert calibration_batch(model, names, 1, 3.5 * per_feed) == 3
    monkeypatch.setattr(collect, "STACK_BYTES", 2.5 * per_feed * 2 ** 20)  # big activations: few feeds per run
    assert calibration_batch(model, names, 1, 512.0) == 2
    assert calibration_batch(model, names, 1, 1e-6) == 1
    _, reader, _ = reader_of(4)
    with pytest.raises(InputError, match="calibration batch"):
        collect_statistics(model, reader, calib_batch=0)


@pytest.mark.parametrize("name", ["light_squeezenet.onnx", "light_shufflenet.onnx", "light_bvlc_alexnet.onnx"])
def test_zoo_models_stack_and_agree_with_single_runs(name, light_models_dir, monkeypatch):
    """Real Model-Zoo graphs (Reshape/Flatten heads, channel shuffles): stacked runs pass the check and give the
    ranges of one-sample runs."""
    from edgesqueeze.model import load_model
    from edgesqueeze.quant import collect

    model = load_model(light_models_dir / name, opset=13)
    reader = open_data("random", model, limit=4)
    checks = []
    real = collect._first_stacked_run
    monkeypatch.setattr(collect, "_first_stacked_run", lambda *a: checks.append(real(*a)) or checks[-1])
    with pytest.warns(UserWarning, match="random"):
        stacked = calibrate(model, reader, method="entropy", calib_batch=2)
    with pytest.warns(UserWarning, match="random"):
        single = calibrate(model, reader, method="entropy", calib_batch=1)
    assert checks and all(c is not None for c in checks)
    assert stacked.keys() == single.keys()
    for k in single:
        assert stacked[k] == pytest.approx(single[k], rel=1e-3), k


def test_feeds_of_different_shapes_are_never_stacked_together():
    from edgesqueeze.quant.collect import _batches

    feeds = [{"x": np.zeros((1, 3), np.float32)}] * 3 + [{"x": np.zeros((1, 4), np.float32)}] * 2 + \
        [{"x": np.zeros((2, 4), np.float32)}, {"x": np.zeros((1, 4), np.float64)}]
    groups = [[(f["x"].shape, f["x"].dtype.name) for f in c] for c in _batches(feeds, 2)]
    assert groups == [[((1, 3), "float32")] * 2, [((1, 3), "float32")], [((1, 4), "float32")] * 2,
                      [((2, 4), "float32")], [((1, 4), "float64")]]
