"""Dynamic dimensions kept everywhere (issue 13 item 1): a dynamic-shape detector goes through optimize,
quantize and build with no --input; every output keeps its symbolic dims and matches the original at two
different shapes. Also the rules for the concrete shapes of checks, and the one error when there are none."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from realnets import realnet

REPO = Path(__file__).resolve().parents[1]
SHAPES = [(1, 3, 320, 320), (2, 3, 256, 416)]


def _es(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("EDGESQUEEZE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "edgesqueeze", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=cwd)


def _dims(values):
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


def _io_dims(path):
    m = onnx.load(str(path), load_external_data=False)
    return _dims(m.graph.input), _dims(m.graph.output)


def _letterbox(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    r = size / max(h, w)
    nh, nw = round(h * r), round(w * r)
    out = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    return out.transpose(2, 0, 1).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-learn's two sample photos and their mirror images, letterboxed RGB/255 at 320x320."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    x = np.stack([_letterbox(i, 320) for i in images] + [_letterbox(np.ascontiguousarray(i[:, ::-1]), 320)
                                                        for i in images])
    path = tmp_path_factory.mktemp("photos") / "photos.npz"
    np.savez(path, images=x)
    return path, x


def _inputs(shape, photos_x):
    if shape[1:] == photos_x.shape[1:]:
        return photos_x[:shape[0]]
    return np.random.default_rng(1).random(shape, dtype=np.float32)


def _sqnr_db(ref, got):
    noise = float(((ref - got) ** 2).sum())
    return np.inf if noise == 0 else 10 * np.log10(float((ref ** 2).sum()) / noise)


def _matches(original, candidate, photos_x, *, int8=False, name="images", shapes=SHAPES):
    import onnxruntime as ort

    a, b = ort.InferenceSession(str(original)), ort.InferenceSession(str(candidate))
    for shape in shapes:
        x = _inputs(shape, photos_x)
        ref, got = a.run(None, {name: x})[0], b.run(None, {name: x})[0]
        assert got.shape == ref.shape, shape
        if int8:
            assert _sqnr_db(ref, got) > 18, (shape, _sqnr_db(ref, got))
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_detector_optimize_quantize_build_keep_dynamic_dims(tmp_path, photos):
    """The issue's "done when": no --input anywhere; every output keeps batch/height/width and runs at two shapes."""
    src = realnet("yolov8n_320")
    calib, x = photos
    dims = _io_dims(src)
    assert dims[0] == [["batch", 3, "height", "width"]]

    r = _es("optimize", src, "-o", tmp_path / "opt.onnx")
    assert r.returncode == 0, r.stderr
    assert "checks run at images:1x3x320x320" in r.stderr and "imgsz" in r.stderr
    readme = (REPO / "README.md").read_text()
    assert r.stderr.splitlines()[0] in readme  # the README's example is this run's real output
    assert _io_dims(tmp_path / "opt.onnx") == dims
    _matches(src, tmp_path / "opt.onnx", x)

    r = _es("quantize", tmp_path / "opt.onnx", "-p", "int8", "--calib", calib, "-o", tmp_path / "q.onnx", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert "the shape of the data in" in r.stderr
    assert _io_dims(tmp_path / "q.onnx") == dims
    _matches(src, tmp_path / "q.onnx", x, int8=True)

    r = _es("build", src, "--target", "orin-nano", "--precision", "int8", "--calib", calib, "-o", tmp_path / "b",
            "--local-engine", "off")
    assert r.returncode == 0, r.stderr
    models = tmp_path / "b" / "models"
    for kind in ("fp32", "int8_qdq"):
        assert _io_dims(models / f"model.{kind}.onnx") == dims, kind
    _matches(src, models / "model.fp32.onnx", x)
    _matches(src, models / "model.int8_qdq.onnx", x, int8=True)


def test_ocr_recognizer_keeps_variable_width(tmp_path):
    """An OCR library feeds text lines of any width: the optimized recognizer must still take them."""
    src = realnet("ppocr_rec")
    r = _es("optimize", src, "-o", tmp_path / "rec.onnx", "--input", "x:1x3x48x320")
    assert r.returncode == 0, r.stderr
    assert _io_dims(tmp_path / "rec.onnx") == _io_dims(src)
    assert onnx.load(str(tmp_path / "rec.onnx")).metadata_props[0].key == "character"
    _matches(src, tmp_path / "rec.onnx", np.zeros((0, 3, 1, 1), np.float32), name="x",
             shapes=[(1, 3, 48, 320), (2, 3, 48, 640)])


def test_static_pins_the_shape(tmp_path):
    src = realnet("yolov8n_320")
    r = _es("optimize", src, "-o", tmp_path / "s.onnx", "--input", "images:2x3x256x256", "--static", "--no-verify")
    assert r.returncode == 0, r.stderr
    assert _io_dims(tmp_path / "s.onnx")[0] == [[2, 3, 256, 256]]
    assert "--static" in _es("optimize", "--help").stdout


def test_undeterminable_dims_are_one_line_exit_3(tmp_path):
    """PP-OCR det: [?,3,?,?] and no metadata: the error names the tensor and axis and suggests a real shape."""
    src = realnet("ppocr_det")
    r = _es("optimize", src, "-o", tmp_path / "d.onnx")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 3 and len(lines) == 1, r.stderr
    assert "tensor 'x'" in lines[0] or "x" in lines[0]
    assert "axis 2" in lines[0] and "--input x:1x3x640x640" in lines[0] and "1x1" not in lines[0]
    assert not (tmp_path / "d.onnx").exists()


def test_concrete_shape_rules():
    from onnx import TensorProto, helper

    from edgesqueeze.errors import InputError
    from edgesqueeze.model import concrete_input_shapes, random_feeds

    def model(dims, props=None):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
        m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
        for k, v in (props or {}).items():
            m.metadata_props.add(key=k, value=v)
        return m

    odd = model(["?", 3, None, "w"], {"imgsz": "[320, 416]"})
    odd.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1  # what paddle2onnx writes
    assert concrete_input_shapes(odd) == {"x": [1, 3, 320, 416]}
    assert concrete_input_shapes(odd, {"x": [4, 3, 64, 96]}) == {"x": [4, 3, 64, 96]}
    assert random_feeds(model(["N", 4]))[0]["x"].shape == (1, 4)
    with pytest.raises(InputError, match="axis 2") as e:
        concrete_input_shapes(model(["N", 3, "H", "W"]))
    assert "--input x:1x3x640x640" in e.value.one_line()
    with pytest.raises(InputError, match="conflicts"):
        concrete_input_shapes(model(["N", 3, "H", "W"]), {"x": [1, 1, 8, 8]})
