"""Trained networks from pip wheels (realnets.py) through every CLI stage, fed real inputs (realdata.py).

Per network: ``optimize`` equivalent at two input shapes (the CLI's own seeded check plus real held-out inputs),
``quantize -p int8 --calib`` (output SQNR vs FP32 on held-out real inputs above a per-network floor that a broken
quantizer misses by far), ``-p fp16``, ``build --target orin-nano`` (INT8) and ``--target tx2`` (FP16), and the
model's producer, metadata_props and input/output names preserved. Every network has dynamic dims, so every
command pins them with ``--input NAME:SHAPE`` (needed until dynamic shapes are supported).

Default run: the small networks; the rest with ``--runslow``. What fails today because of a separate, known bug
is ``xfail(strict=True)`` with the bug; the SQNRs measured are printed (pytest -s) and in benchmarks/RESULTS.md.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import realdata
from realnets import NETS, realnet

FAST = ("ppocr_cls", "mtcnn_onet", "mtcnn_pnet", "magika")

# output SQNR floors in dB on held-out real inputs (measured today minus a margin; a broken quantizer gives ~0)
INT8_FLOOR = {"ppocr_det": 15.0, "ppocr_rec": 15.0, "ppocr_cls": 15.0, "yolov8n_320": 20.0,
              "mtcnn_pnet": 21.0, "mtcnn_onet": 24.0, "magika": 40.0}  # MTCNN: 23.8 / 26.9 with the TRT placement
FP16_FLOOR = {"ppocr_rec": 30.0}
FP16_DEFAULT_FLOOR = 40.0
OPT_FLOOR = 80.0     # FP32 rewrites: float rounding only

_REC_INT8 = ("INT8 ppocr_rec (default auto calibration, every Conv/MatMul in INT8): output SQNR 12.5-13.2 dB on the "
             "CTC logits < 15 dB; the task metric holds: RapidOCR reads held-out lines at character accuracy 0.920 "
             "vs 0.916 with the shipped FP32 model (test_real_client)")
KNOWN = {
    ("ppocr_rec", "int8"): _REC_INT8,
    ("ppocr_rec", "orin-nano"): _REC_INT8,
}


def _params(step: str):
    out = []
    for name in NETS:
        marks = [] if name in FAST else [pytest.mark.slow]
        if (name, step) in KNOWN:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[name, step]))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def _shape_arg(name: str, shape) -> str:
    return f"{NETS[name].input}:{'x'.join(map(str, shape))}"


@lru_cache(maxsize=None)
def _data(name: str):
    return realdata.split(name)


def _npz(name: str, tmp_path, which: int):
    return realdata.save_npz(tmp_path / f"{('calib', 'val')[which]}.npz", NETS[name].input, _data(name)[which])


def _run(path, name: str, x: np.ndarray, batch: int = 1):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {NETS[name].input: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def _sqnrs(name: str, model, x: np.ndarray, batch: int = 1):
    ref = _run(realnet(name), name, x, batch)
    return [realdata.sqnr_db(r, o) for r, o in zip(ref, _run(model, name, x, batch))]


def _assert_identity_kept(name: str, out_path):
    src = onnx.load(str(realnet(name)), load_external_data=False)
    got = onnx.load(str(out_path), load_external_data=False)
    assert [i.name for i in got.graph.input] == [i.name for i in src.graph.input]
    assert [o.name for o in got.graph.output] == [o.name for o in src.graph.output]
    assert got.producer_name == src.producer_name
    assert {p.key: p.value for p in src.metadata_props}.items() <= {p.key: p.value for p in got.metadata_props}.items()


@pytest.mark.parametrize("name", _params("optimize"))
def test_optimize_equivalent_at_two_shapes(name, cli, tmp_path):
    for k, shape in enumerate(NETS[name].shapes):
        out = tmp_path / f"opt{k}.onnx"
        code, stdout, stderr = cli("optimize", realnet(name), "-o", out, "-i", _shape_arg(name, shape), "-q")
        assert code == 0, stderr
        x = realdata.net_inputs(name, shape[0], seed=7 + k, shape=shape)
        sqnr = _sqnrs(name, out, x, batch=shape[0])
        print(f"{name} optimize {shape}: output SQNR {[round(s, 1) for s in sqnr]} dB")
        assert min(sqnr) >= OPT_FLOOR, (shape, sqnr)
        _assert_identity_kept(name, out)


@pytest.mark.parametrize("name", _params("int8"))
def test_quantize_int8_real_calibration(name, cli, tmp_path):
    out = tmp_path / "int8.onnx"
    code, _, stderr = cli("quantize", realnet(name), "-p", "int8", "--calib", _npz(name, tmp_path, 0), "--no-cache",
                          "-i", _shape_arg(name, NETS[name].shapes[0]), "-o", out, "-q")
    assert code == 0, stderr
    sqnr = _sqnrs(name, out, _data(name)[1])
    print(f"{name} int8 (auto): held-out output SQNR {[round(s, 1) for s in sqnr]} dB")
    assert min(sqnr) >= INT8_FLOOR[name], sqnr
    _assert_identity_kept(name, out)


@pytest.mark.parametrize("name", _params("fp16"))
def test_quantize_fp16(name, cli, tmp_path):
    out = tmp_path / "fp16.onnx"
    code, _, stderr = cli("quantize", realnet(name), "-p", "fp16", "-i", _shape_arg(name, NETS[name].shapes[0]),
                          "-o", out, "-q")
    assert code == 0, stderr
    sqnr = _sqnrs(name, out, _data(name)[1])
    print(f"{name} fp16: held-out output SQNR {[round(s, 1) for s in sqnr]} dB")
    assert min(sqnr) >= FP16_FLOOR.get(name, FP16_DEFAULT_FLOOR), sqnr
    _assert_identity_kept(name, out)


def _build(name, cli, tmp_path, target: str):
    args = ["build", realnet(name), "-t", target, "-i", _shape_arg(name, NETS[name].shapes[0]), "-o", tmp_path / "b",
            "-q"]
    if target == "orin-nano":
        args += ["--calib", _npz(name, tmp_path, 0)]
    code, _, stderr = cli(*args)
    assert code == 0, stderr
    import json
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    deploy = tmp_path / "b" / manifest["models"]["deploy"]
    sqnr = _sqnrs(name, deploy, _data(name)[1])
    print(f"{name} build {target} ({manifest['models']['deploy']}): held-out output SQNR "
          f"{[round(s, 1) for s in sqnr]} dB")
    return manifest, deploy, sqnr


@pytest.mark.parametrize("name", _params("orin-nano"))
def test_build_orin_nano_int8(name, cli, tmp_path):
    manifest, deploy, sqnr = _build(name, cli, tmp_path, "orin-nano")
    assert "int8_qdq" in manifest["models"] and deploy.name.endswith("int8_qdq.onnx")
    assert (tmp_path / "b" / "calib" / "calibration.cache").is_file()
    assert min(sqnr) >= INT8_FLOOR[name], sqnr


@pytest.mark.parametrize("name", _params("tx2"))
def test_build_tx2_fp16(name, cli, tmp_path):
    manifest, deploy, sqnr = _build(name, cli, tmp_path, "tx2")
    assert "fp16" in deploy.name, manifest["models"]
    assert min(sqnr) >= FP16_FLOOR.get(name, FP16_DEFAULT_FLOOR), sqnr
