"""load_model / save_model: validation, clear errors, atomic writes, inputs never modified."""
import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.errors import InputError
from edgesqueeze.model import (graph_inputs, load_model, model_hash, opset_version, parse_input_shapes,
                               random_feeds, save_model)
from edgesqueeze.ortutil import run_model


def _tiny(dynamic=False, path=None):
    dim0 = "N" if dynamic else 1
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim0, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv0", pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "tiny", [x], [y], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    if path:
        onnx.save(m, str(path))
    return m


def _digest(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def test_loads_and_infers_shapes(tmp_path):
    p = tmp_path / "m.onnx"
    _tiny(path=p)
    m = load_model(p)
    assert [i.name for i in graph_inputs(m)] == ["x"]
    y = [o for o in m.graph.output][0]
    assert [d.dim_value for d in y.type.tensor_type.shape.dim] == [1, 2, 4, 4]


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file") as e:
        load_model(tmp_path / "nope.onnx")
    assert e.value.exit_code == 3 and "nope.onnx" in e.value.one_line()


def test_truncated_file_is_clear_error_and_untouched(tmp_path):
    p = tmp_path / "m.onnx"
    _tiny(path=p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    before = _digest(p)
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_model(p)
    assert _digest(p) == before


def test_text_file_renamed_onnx(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("This is a text file, not a model.\nSecond line.\n")
    with pytest.raises(InputError, match="not an ONNX model"):
        load_model(p)


def test_empty_file(tmp_path):
    p = tmp_path / "e.onnx"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_model(p)


def test_dynamic_dimension_needs_shape(tmp_path):
    p = tmp_path / "dyn.onnx"
    _tiny(dynamic=True, path=p)
    with pytest.raises(InputError, match="dynamic dimension 'N'") as e:
        load_model(p)
    assert e.value.tensor == "x" and "--input x:1x3x4x4" in e.value.one_line()
    m = load_model(p, parse_input_shapes(["x:2x3x4x4"]))
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 4, 4]
    out = m.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in out] == [2, 2, 4, 4]
    m2 = load_model(p, parse_input_shapes("5x3x4x4"))
    assert m2.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 5


def test_bad_shapes_are_clear(tmp_path):
    p = tmp_path / "dyn.onnx"
    _tiny(dynamic=True, path=p)
    with pytest.raises(InputError, match="no graph input named 'images'"):
        load_model(p, parse_input_shapes("images:1x3x4x4"))
    with pytest.raises(InputError, match="rank"):
        load_model(p, parse_input_shapes("x:1x3x4"))
    with pytest.raises(InputError, match="conflicts"):
        load_model(p, parse_input_shapes("x:1x5x4x4"))
    with pytest.raises(InputError, match="bad shape"):
        parse_input_shapes("x:1xAx4")


def test_graph_without_outputs(tmp_path):
    m = _tiny()
    del m.graph.output[:]
    p = tmp_path / "noout.onnx"
    onnx.save(m, str(p))
    with pytest.raises(InputError, match="no outputs"):
        load_model(p)


def test_checker_failure_names_node(tmp_path):
    m = _tiny()
    m.graph.node[0].input[1] = "undefined_weight"
    p = tmp_path / "bad.onnx"
    onnx.save(m, str(p))
    with pytest.raises(InputError, match="checker"):
        load_model(p)


def test_external_data_resolved_and_missing_named(tmp_path):
    m = _tiny()
    ref = numpy_helper.to_array(m.graph.initializer[0])
    p = tmp_path / "ext.onnx"
    onnx.save_model(m, str(p), save_as_external_data=True, location="ext.weights", size_threshold=0)
    loaded = load_model(p)
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), ref)
    os.remove(tmp_path / "ext.weights")
    with pytest.raises(InputError, match="external data file 'ext.weights' is missing") as e:
        load_model(p)
    assert e.value.tensor == "w"


def test_opset_conversion_of_light_model(light_models_dir):
    m = load_model(light_models_dir / "light_squeezenet.onnx", opset=13)
    assert opset_version(m) == 13


def test_save_is_atomic_and_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "m.onnx"
    _tiny(path=src)
    before = _digest(src)
    m = load_model(src)
    with pytest.raises(InputError, match="overwrite the input"):
        save_model(m, src, inputs=[src])
    assert _digest(src) == before
    out = save_model(m, tmp_path / "sub" / "out.onnx", inputs=[src])
    assert out.exists() and not [f for f in os.listdir(out.parent) if f.endswith(".tmp")]
    assert model_hash(out) == model_hash(m)
    # deterministic bytes
    save_model(m, tmp_path / "out2.onnx")
    assert _digest(tmp_path / "out2.onnx") == _digest(out)


def test_random_feeds_are_seeded_and_run(tmp_path):
    m = _tiny()
    a = random_feeds(m, seed=3)[0]
    b = random_feeds(m, seed=3)[0]
    assert np.array_equal(a["x"], b["x"])
    out = run_model(m, a)
    assert out["y"].shape == (1, 2, 4, 4)


def test_every_light_model_loads(light_models_dir):
    for f in sorted(light_models_dir.glob("*.onnx")):
        m = load_model(f)
        assert m.graph.output and graph_inputs(m)


def test_large_truncated_model_is_not_called_text(tmp_path):
    # the first kilobytes of a real model are mostly printable names: the error must still say "truncated"
    src = Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits_cnn.onnx"
    p = tmp_path / "cut.onnx"
    p.write_bytes(src.read_bytes()[:100000])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_model(p)
