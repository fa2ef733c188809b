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


def _tiny(dynamic=False, path=None, channels=2):
    dim0 = "N" if dynamic else 1
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim0, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((channels, 3, 3, 3)).astype(np.float32), "w")
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


def test_dynamic_dimension_is_kept_and_pinned_on_request(tmp_path):
    p = tmp_path / "dyn.onnx"
    _tiny(dynamic=True, path=p)
    kept = load_model(p, parse_input_shapes(["x:2x3x4x4"]))  # --input alone: shapes for checks, model unchanged
    assert kept.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert random_feeds(kept)[0]["x"].shape == (1, 3, 4, 4)  # batch-like leading dim: 1
    assert random_feeds(kept, shapes=parse_input_shapes(["x:2x3x4x4"]))[0]["x"].shape == (2, 3, 4, 4)
    m = load_model(p, parse_input_shapes(["x:2x3x4x4"]), pin=True)
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 4, 4]
    out = m.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in out] == [2, 2, 4, 4]
    m2 = load_model(p, parse_input_shapes("5x3x4x4"), pin=True)
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


# ----------------------------------------------------------------------------- fast paths (file bytes reused)
def _proto_path_load(path):
    """What load_model returned before it reused the file's bytes: check + infer from the parsed proto."""
    from edgesqueeze.model import _check, infer_shapes

    m = onnx.load(str(path))
    _check(m, Path(path))  # no data: the proto path
    return infer_shapes(m)


def _light_and_digits(light_models_dir):
    digits = Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits_cnn.onnx"
    return sorted(light_models_dir.glob("*.onnx")) + [digits]


def test_bytes_path_gives_the_proto_path_model(light_models_dir, tmp_path):
    from edgesqueeze.model import model_bytes

    p = tmp_path / "tiny.onnx"  # output without a shape: exercises the checker's infer-and-retry
    _tiny(path=p)
    for f in _light_and_digits(light_models_dir) + [p]:
        assert model_bytes(load_model(f)) == model_bytes(_proto_path_load(f)), f.name


def test_same_shape_given_keeps_bytes_path_and_result(tmp_path):
    from edgesqueeze.model import model_bytes

    p = tmp_path / "m.onnx"
    _tiny(path=p)
    assert model_bytes(load_model(p, parse_input_shapes("x:1x3x4x4"))) == model_bytes(load_model(p))


def test_checker_without_bytes_support_falls_back(tmp_path, monkeypatch):
    from edgesqueeze.model import model_bytes

    p = tmp_path / "m.onnx"
    _tiny(path=p)
    want = model_bytes(load_model(p))
    real = onnx.checker.check_model
    seen = []

    def old_checker(model, full_check=False, **kw):
        seen.append(type(model))
        if isinstance(model, bytes):
            raise AttributeError("'bytes' object has no attribute 'SerializeToString'")
        return real(model, full_check=full_check, **kw)

    monkeypatch.setattr(onnx.checker, "check_model", old_checker)
    assert model_bytes(load_model(p)) == want
    assert bytes in seen and onnx.ModelProto in seen


def test_checker_error_is_the_same_on_both_paths(tmp_path):
    from edgesqueeze.model import _check

    m = _tiny()
    m.graph.node[0].input[1] = "undefined_weight"
    p = tmp_path / "bad.onnx"
    onnx.save(m, str(p))
    with pytest.raises(InputError) as fast:
        load_model(p)
    with pytest.raises(InputError) as slow:
        _check(onnx.load(str(p)), p)
    assert fast.value.one_line() == slow.value.one_line()
    assert "the ONNX checker rejects the model" in fast.value.one_line() and fast.value.exit_code == 3


def test_failed_inference_returns_the_model_unchanged(tmp_path, monkeypatch):
    from edgesqueeze.model import model_bytes

    p = _tiny_static_output(tmp_path)

    def broken(*a, **kw):
        raise RuntimeError("inference failed")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    assert model_bytes(load_model(p)) == model_bytes(onnx.load(str(p)))


def _tiny_static_output(tmp_path, channels=2):
    m = _tiny(channels=channels)
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 4, 4]))
    p = tmp_path / "static.onnx"
    onnx.save(m, str(p))
    return p


def test_save_bytes_are_the_serialised_model_and_2gb_switch_holds(tmp_path, monkeypatch):
    import edgesqueeze.model as em

    m = load_model(_tiny_static_output(tmp_path, channels=16))  # weights > 1 KB: onnx moves them out
    out = save_model(m, tmp_path / "a.onnx")
    assert out.read_bytes() == m.SerializeToString(deterministic=True)
    assert not (tmp_path / "a.onnx.data").exists()
    size = m.ByteSize()
    # the limit between the weights' bytes and the full size: serialised, then found too big -> external data
    monkeypatch.setattr(em, "_TWO_GB", size - 1)
    assert em._tensor_payload(m) <= size - 1
    kept = onnx.ModelProto.FromString(out.read_bytes())
    save_model(kept, tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx.data").exists()  # the weights out of the model it writes with external data
    assert kept.SerializeToString(deterministic=True) == out.read_bytes()  # and the caller's model keeps its own
    # the limit below the weights' bytes: external data without serialising first
    monkeypatch.setattr(em, "_TWO_GB", 10)
    save_model(onnx.ModelProto.FromString(out.read_bytes()), tmp_path / "c.onnx")
    assert (tmp_path / "c.onnx.data").exists()
    monkeypatch.setattr(em, "_TWO_GB", size)  # exactly at the limit: one file, like ByteSize() <= limit
    save_model(m, tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx.data").exists() and (tmp_path / "d.onnx").read_bytes() == out.read_bytes()
    for name in ("b.onnx", "c.onnx"):
        back = onnx.load(str(tmp_path / name))
        assert np.array_equal(numpy_helper.to_array(back.graph.initializer[0]),
                              numpy_helper.to_array(m.graph.initializer[0]))
