"""The local TensorRT runner hands the parser a file when it can: a model loaded from an ``.onnx`` path is parsed
with ``parse_from_file`` (TensorRT reads its external data next to it, so models over 2 GB build), a small
in-memory model from its bytes, a big in-memory one from a temporary copy saved with external data. TensorRT is
not installed here: a fake ``tensorrt`` module records the parser calls (the real API: TensorRT's
python/src/parsers/pyOnnx.cpp, ``parse(model, path=None)`` and ``parse_from_file(model)``, both returning bool)."""
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgesqueeze.model as model_mod
from edgesqueeze.backends.trt import TrtRunner
from edgesqueeze.errors import UnsupportedError
from edgesqueeze.model import model_bytes, model_hash


def _model(batch=1):
    w = numpy_helper.from_array(np.arange(64 * 32, dtype=np.float32).reshape(64, 32) / 100, "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _fake_tensorrt(calls, ok=True):
    """A ``tensorrt`` module with just what ``TrtRunner._engine_bytes`` touches; the parser records each call
    (and, for a file, what the file holds at that moment, its external data resolved relative to it)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"

    class OnnxParser:
        num_errors = 0 if ok else 2

        def __init__(self, network, logger):
            pass

        def parse(self, model, path=None):
            calls.append(("parse", bytes(model), path))
            return ok

        def parse_from_file(self, model):
            external = any(t.data_location == TensorProto.EXTERNAL
                           for t in onnx.load(model, load_external_data=False).graph.initializer)
            loaded = onnx.load(model)  # reads external data next to the file, as TensorRT does
            calls.append(("parse_from_file", model, loaded, external))
            return ok

        def get_error(self, i):
            return ["In node 0 (importMatMul): UNSUPPORTED_NODE", "second error"][i]

    class Config:
        def __getattr__(self, name):
            return lambda *a, **k: types.SimpleNamespace(serialize=lambda: b"timing")

    class Builder:
        platform_has_fast_fp16 = platform_has_fast_int8 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return types.SimpleNamespace(num_inputs=0)

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            return b"engine"

    enum = types.SimpleNamespace
    trt.OnnxParser, trt.Builder = OnnxParser, Builder
    trt.NetworkDefinitionCreationFlag = enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    trt.MemoryPoolType = enum(WORKSPACE=0)
    trt.BuilderFlag = enum(FP16=0, INT8=1, SPARSE_WEIGHTS=2, GPU_FALLBACK=3, TF32=4)
    return trt


def _build(runner, monkeypatch, calls, ok=True):
    trt = _fake_tensorrt(calls, ok)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    runner._trt, runner._gpu, runner._logger = trt, ("Fake GPU", (8, 7)), None
    return runner._engine_bytes()


def test_a_model_file_is_parsed_from_its_path(tmp_path, monkeypatch):
    path = tmp_path / "net.onnx"
    onnx.save(_model(), str(path), save_as_external_data=True,
              location="net.weights", size_threshold=0)
    calls = []
    assert _build(TrtRunner(path, precision="fp32", cache_dir=False), monkeypatch, calls) == b"engine"
    assert [c[0] for c in calls] == ["parse_from_file"]
    assert calls[0][1] == str(path.resolve()) and calls[0][3]
    np.testing.assert_array_equal(numpy_helper.to_array(calls[0][2].graph.initializer[0]),
                                  numpy_helper.to_array(_model().graph.initializer[0]))


def test_a_small_in_memory_model_is_parsed_from_its_bytes(tmp_path, monkeypatch):
    model, calls = _model(), []
    _build(TrtRunner(model, precision="fp32", cache_dir=False), monkeypatch, calls)
    assert calls == [("parse", model_bytes(model), None)]


def test_a_rebatched_file_model_is_parsed_from_its_new_bytes(tmp_path, monkeypatch):
    """``for_batch`` changes the model: the file no longer describes it."""
    path = tmp_path / "net.onnx"
    onnx.save(_model(), str(path))
    clone = TrtRunner(path, precision="fp32", cache_dir=False).for_batch(4)
    calls = []
    _build(clone, monkeypatch, calls)
    assert [c[0] for c in calls] == ["parse"]
    assert onnx.load_from_string(calls[0][1]).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4


def test_a_big_in_memory_model_is_parsed_from_a_temporary_copy(tmp_path, monkeypatch):
    """Over one protobuf's limit (lowered here: a 2 GB model does not fit this machine's tests): saved with
    external data to a temporary folder, parsed from the file, the folder gone after the build; the engine
    cache key hashes the same bytes piece by piece."""
    model, calls = _model(), []
    small_hash = model_hash(model)
    monkeypatch.setattr(model_mod, "_TWO_GB", 1024)
    assert model_hash(model) == small_hash
    runner = TrtRunner(model, precision="fp32", cache_dir=tmp_path / "cache")
    _build(runner, monkeypatch, calls)
    (kind, file, loaded, external), = calls
    assert kind == "parse_from_file" and external and not Path(file).parent.exists()
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]),
                                  numpy_helper.to_array(model.graph.initializer[0]))
    assert runner.engine_path.read_bytes() == b"engine"


@pytest.mark.parametrize("from_file", [True, False])
def test_parser_errors_are_named(tmp_path, monkeypatch, from_file):
    path = tmp_path / "net.onnx"
    onnx.save(_model(), str(path))
    runner = TrtRunner(path if from_file else _model(), precision="fp32", cache_dir=False)
    with pytest.raises(UnsupportedError, match="rejects the model: In node 0 .importMatMul.: UNSUPPORTED_NODE; "
                                               "second error"):
        _build(runner, monkeypatch, [], ok=False)
