"""A real client library runs our models: RapidOCR (rapidocr_onnxruntime), through its own API, with the
PP-OCR models it ships replaced by edgesqueeze's optimized / INT8 versions (constructor's *_model_path).

Our models have static input shapes (``--input`` pins them until dynamic shapes are supported), so RapidOCR is
set to batches of one (``rec_batch_num=1``, ``cls_batch_num=1``) and fed text lines no wider than 320 pixels at
height 48, which it always resizes to exactly [1, 3, 48, 320] (rec) and [1, 3, 48, 192] (cls).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import realdata
from realnets import realnet

rapidocr = pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr_onnxruntime not installed (test extra)")

LINES = 24
PAGE_H, PAGE_W = 160, 320           # rapidocr's det resize (min side 736) makes this exactly 736 x 1472
DET_SHAPE = "x:1x3x736x1472"


def _engine(**models):
    return rapidocr.RapidOCR(rec_batch_num=1, cls_batch_num=1, **models)


def _bgr(lines):
    return [np.ascontiguousarray(img[:, :, ::-1]) for img, _ in lines]


def _read_lines(engine, images):
    """Text of each line through RapidOCR.__call__ without detection (cls + rec), as a user calls it."""
    texts = []
    for img in images:
        result, _ = engine(img, use_det=False, use_cls=True, use_rec=True)
        texts.append(result[0][0] if result else "")
    return texts


@pytest.fixture(scope="module")
def lines():
    return realdata.text_lines(LINES, seed=4242)


def _optimize(cli, name, shape, out, *extra):
    code, _, stderr = cli("optimize", realnet(name), "-i", shape, "-o", out, "-q", *extra)
    assert code == 0, stderr
    return str(out)


def test_optimized_rec_and_cls_are_drop_in(cli, tmp_path, lines):
    rec = _optimize(cli, "ppocr_rec", "x:1x3x48x320", tmp_path / "rec.onnx")
    cls = _optimize(cli, "ppocr_cls", "x:1x3x48x192", tmp_path / "cls.onnx")
    images = _bgr(lines)
    stock = _read_lines(_engine(), images)
    ours = _read_lines(_engine(rec_model_path=rec, cls_model_path=cls), images)
    assert ours == stock
    acc = realdata.char_accuracy(stock, [t for _, t in lines])
    print(f"RapidOCR stock vs optimized rec+cls: identical text on {LINES} lines, character accuracy {acc:.3f}")
    assert acc > 0.85   # the rendered lines are legible to the shipped recognizer


def _int8_rec(cli, tmp_path):
    """Our INT8 recognizer: `build --target orin-nano` (`quantize -p int8` refuses the Paddle graph today)."""
    calib = realdata.save_npz(tmp_path / "calib.npz", "x", realdata.net_inputs("ppocr_rec", realdata.CALIB, seed=0))
    code, _, stderr = cli("build", realnet("ppocr_rec"), "-t", "orin-nano", "-i", "x:1x3x48x320", "--calib", calib,
                          "-o", tmp_path / "b", "-q")
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    return str(tmp_path / "b" / manifest["models"]["int8_qdq"])


def test_int8_rec_character_accuracy_within_two_points(cli, tmp_path, lines):
    images, truths = _bgr(lines), [t for _, t in lines]
    stock = realdata.char_accuracy(_read_lines(_engine(), images), truths)
    int8 = realdata.char_accuracy(_read_lines(_engine(rec_model_path=_int8_rec(cli, tmp_path)), images), truths)
    print(f"RapidOCR character accuracy: shipped FP32 {stock:.3f}, edgesqueeze INT8 {int8:.3f}")
    assert int8 >= stock - 0.02, (stock, int8)


def _page(lines):
    """A light page of PAGE_H x PAGE_W with three of the rendered lines on it (BGR), and their strings."""
    page = np.full((PAGE_H, PAGE_W, 3), 245, np.uint8)
    picked = lines[:3]
    for k, (img, _) in enumerate(picked):
        page[8 + k * 50:8 + k * 50 + img.shape[0], 4:4 + img.shape[1]] = img[:, :PAGE_W - 4]
    return np.ascontiguousarray(page[:, :, ::-1]), [t for _, t in picked]


@pytest.mark.slow
def test_full_pipeline_with_optimized_det_rec_cls(cli, tmp_path, lines):
    page, _ = _page(lines)
    det = _optimize(cli, "ppocr_det", DET_SHAPE, tmp_path / "det.onnx")
    rec = _optimize(cli, "ppocr_rec", "x:1x3x48x320", tmp_path / "rec.onnx")
    cls = _optimize(cli, "ppocr_cls", "x:1x3x48x192", tmp_path / "cls.onnx")
    stock, _ = _engine()(page)
    ours, _ = _engine(det_model_path=det, rec_model_path=rec, cls_model_path=cls)(page)
    assert [r[1] for r in ours] == [r[1] for r in stock]
    assert np.allclose([r[0] for r in ours], [r[0] for r in stock], atol=2)
