"""The data-reader protocol: .npz/.npy, image folders, random data, and clear errors for data that does not fit."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgesqueeze.data import open_data
from edgesqueeze.imagedata import Preprocess
from edgesqueeze.errors import InputError


def model_with_input(shape, elem=TensorProto.FLOAT, name="input"):
    node = helper.make_node("Identity", [name], ["out"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(name, elem, shape)],
                          [helper.make_tensor_value_info("out", elem, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_npz_with_labels(tmp_path):
    model = model_with_input([1, 1, 8, 8])
    x = np.random.default_rng(0).normal(size=(10, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x, label=np.arange(10))
    r = open_data(str(tmp_path / "d.npz"), model)
    feeds = list(r)
    assert len(r) == 10 == len(feeds) and not r.is_random
    np.testing.assert_array_equal(feeds[3]["input"], x[3:4])
    assert r.labels.tolist() == list(range(10)) and "labelled" in r.describe()
    assert list(r)[0]["input"].shape == (1, 1, 8, 8)  # iterable more than once
    limited = open_data(str(tmp_path / "d.npz"), model, limit=4)
    assert len(limited) == 4 and limited.labels.tolist() == [0, 1, 2, 3]
    assert limited.sha256() != r.sha256()
    assert open_data(str(tmp_path / "d.npz"), model).sha256() == r.sha256()


def test_dynamic_batch_and_unnamed_arrays(tmp_path):
    model = model_with_input(["N", 3])
    np.savez(tmp_path / "d.npz", arr_0=np.ones((10, 3), np.float64))  # float64 data, float32 input: cast
    r = open_data(str(tmp_path / "d.npz"), model, batch_size=4)
    feeds = list(r)
    assert [f["input"].shape for f in feeds] == [(4, 3), (4, 3)] and feeds[0]["input"].dtype == np.float32
    assert "2 left over" in r.describe()
    np.save(tmp_path / "d.npy", np.zeros((6, 3), np.float32))
    assert len(open_data(str(tmp_path / "d.npy"), model, batch_size=3)) == 2


def test_random_data_is_labelled_random():
    model = model_with_input([1, 3, 4, 4])
    r = open_data(None, model, limit=3, seed=5)
    assert r.is_random and "random" in r.describe() and len(r) == 3 and r.labels is None
    a, b = list(r), list(open_data("random", model, limit=3, seed=5))
    np.testing.assert_array_equal(a[2]["input"], b[2]["input"])


@pytest.mark.parametrize("arrays, words", [
    ({"input": np.zeros((4, 1, 8, 9), np.float32)}, "does not fit the model's input shape"),
    ({"input": np.zeros((4, 1, 8, 8), np.uint8)}, "dtype uint8"),
    ({"images": np.zeros((4, 1, 8, 8), np.float32), "other": np.zeros(3)}, "no array named 'input'"),
    ({"input": np.zeros((4, 1, 8, 8), np.float32), "label": np.zeros(2, np.int64)}, "labels have shape"),
])
def test_data_that_does_not_fit_is_a_clear_error(tmp_path, arrays, words):
    model = model_with_input([1, 1, 8, 8])
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError) as err:
        open_data(str(path), model)
    assert words in str(err.value) and str(path) in str(err.value) and err.value.exit_code == 3


def test_nan_and_inf_are_reported_with_the_sample(tmp_path):
    model = model_with_input([1, 4])
    x = np.zeros((20, 4), np.float32)
    x[13, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(InputError, match="sample 13 holds NaN"):
        open_data(str(tmp_path / "nan.npy"), model)
    x[13, 2] = 0
    x[17, 0] = np.inf
    np.savez(tmp_path / "inf.npz", input=x)
    with pytest.raises(InputError, match="sample 17 holds Inf"):
        open_data(str(tmp_path / "inf.npz"), model)
    assert len(open_data(str(tmp_path / "inf.npz"), model, limit=10)) == 10  # the bad sample is beyond the limit


def test_missing_and_unknown_files(tmp_path):
    model = model_with_input([1, 4])
    with pytest.raises(InputError, match="no such file"):
        open_data(str(tmp_path / "nope.npz"), model)
    (tmp_path / "d.csv").write_text("1,2,3,4\n")
    with pytest.raises(InputError, match="unknown data format"):
        open_data(str(tmp_path / "d.csv"), model)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read"):
        open_data(str(tmp_path / "broken.npz"), model)


def _write_images(root, pil):
    rng = np.random.default_rng(0)
    for cls, base in (("cat", 40), ("dog", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            img = np.clip(base + rng.normal(0, 5, (20, 30, 3)), 0, 255).astype(np.uint8)
            pil.fromarray(img).save(root / cls / f"{i}.png")


def test_image_folder_with_preprocessing(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    _write_images(tmp_path / "imgs", pil)
    model = model_with_input([1, 3, 16, 16])
    spec = f"{tmp_path / 'imgs'}?resize=16&crop=16&mean=0.5,0.5,0.5&std=0.25,0.25,0.25"
    r = open_data(spec, model)
    feeds = list(r)
    assert len(feeds) == 6 and r.labels.tolist() == [0, 0, 0, 1, 1, 1]
    x = feeds[0]["input"]
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32
    assert x.mean() == pytest.approx((40 / 255 - 0.5) / 0.25, abs=0.1)
    assert feeds[5]["input"].mean() == pytest.approx((200 / 255 - 0.5) / 0.25, abs=0.1)
    digest = r.sha256()
    pil.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "imgs" / "dog" / "0.png")
    assert open_data(spec, model).sha256() != digest  # the data hash follows the image bytes
    assert not hasattr(r, "_arrays")  # decoded batch by batch, never all at once
    nhwc = open_data(str(tmp_path / "imgs"), model_with_input([1, 16, 16, 3]))
    assert next(iter(nhwc))["input"].shape == (1, 16, 16, 3)
    (tmp_path / "imgs" / "preprocess.json").write_text('{"scale": 1, "channels": "bgr"}')
    bgr = next(iter(open_data(str(tmp_path / "imgs"), model)))["input"]
    assert bgr.max() > 2  # scale 1 from preprocess.json: raw pixel values
    with pytest.raises(InputError, match="unknown preprocessing option 'zoom'"):
        open_data(f"{tmp_path / 'imgs'}?zoom=2", model)
    with pytest.raises(InputError, match="smaller than the crop"):
        open_data(f"{tmp_path / 'imgs'}?resize=16&crop=20", model_with_input([1, 3, 20, 20]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        open_data(str(tmp_path / "empty"), model)


def test_preprocess_parse():
    p = Preprocess.parse("resize=256&crop=224&layout=NHWC", {"mean": [0.1, 0.2, 0.3]})
    assert (p.resize, p.crop, p.layout, p.mean) == (256, 224, "nhwc", (0.1, 0.2, 0.3))
    assert Preprocess().geometry([1, 3, 224, 224]) == ("nchw", 3, 224, 224)
    assert Preprocess().geometry([1, 224, 224, 3]) == ("nhwc", 3, 224, 224)
    with pytest.raises(InputError):
        Preprocess.parse("std=0")
    with pytest.raises(InputError):
        Preprocess.parse("resize=big")


def test_image_folder_without_pillow_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from edgesqueeze.errors import MissingDependencyError

    (tmp_path / "imgs").mkdir()
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingDependencyError) as err:
        open_data(str(tmp_path / "imgs"), model_with_input([1, 3, 8, 8]))
    assert "pillow" in str(err.value) and err.value.exit_code == 5
