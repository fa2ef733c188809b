"""Calibrator quality on trained networks and real inputs: every edgesqueeze method and onnxruntime's
``quantize_static`` (MinMax, Entropy, Percentile, Distribution) on the same model and inputs, one run.

Models and inputs (all seeded):

- ``yolov8n``: YOLOv8n from the nudenet wheel (``tests/realnets.py``), 1x3x320x320 RGB/255; square crops of
  scikit-learn's two sample photographs (china.jpg, flower.jpg), randomly placed, sized and flipped, resized
  to 320x320: ``--samples`` to calibrate, ``--eval-samples`` held out (different crops).
- ``ppocr_rec``: the PP-OCRv4 recognizer from the rapidocr wheel, 1x3x48x320; text lines rendered with
  matplotlib's DejaVu Sans, normalised (x/255 - 0.5) / 0.5.
- ``resnet18``, ``mobilenetv2``: the seeded networks and image-like random inputs of ``bench_calibration.py``.

Our statistics are collected once and every method reads them; onnxruntime calibrates once per method. Both
tools quantize the same op types (Conv, ConvTranspose, Gemm, MatMul inputs; per-channel symmetric INT8 weights,
symmetric activations, QDQ). The score is the SQNR (dB) of all model outputs against FP32 on the held-out inputs.

    python benchmarks/bench_calib_real.py --model yolov8n
    python benchmarks/bench_calib_real.py --model ppocr_rec --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]


# ------------------------------------------------------------------------------------------ inputs
def photo_crops(n: int, seed: int, size: int = 320) -> np.ndarray:
    """``n`` seeded square crops of scikit-learn's sample photographs, resized to ``size``, NCHW RGB/255."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), np.float32)
    for k in range(n):
        img = photos[int(rng.integers(len(photos)))]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(img[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
        arr = np.asarray(crop, np.float32) / 255.0
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out[k] = arr.transpose(2, 0, 1)
    return out


_WORDS = ("the quick brown fox jumps over lazy dog edge squeeze jetson orin nano xavier tensor int8 calibration "
          "invoice total amount 2026 date 12/03 price $19.99 order #4471 Room 305 Hello World ABCDEF qty").split()


def text_lines(n: int, seed: int, h: int = 48, w: int = 320) -> np.ndarray:
    """``n`` seeded text lines (DejaVu Sans, random words, sizes, grey levels), NCHW, (x/255-0.5)/0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, h, w), np.float32)
    dpi = 100
    for k in range(n):
        fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
        bg = rng.uniform(0.75, 1.0, 3)
        fig.patch.set_facecolor(bg)
        words = " ".join(rng.choice(_WORDS, int(rng.integers(2, 5))))
        fig.text(rng.uniform(0.01, 0.08), 0.5, words, fontsize=float(rng.uniform(15, 22)),
                 family="DejaVu Sans", va="center", color=tuple(rng.uniform(0.0, 0.3, 3)))
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].astype(np.float32)
        plt.close(fig)
        out[k] = ((rgb / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def setup(name: str, samples: int, eval_samples: int):
    """(model path with static input shape, input name, calibration inputs, held-out inputs)."""
    work = Path(tempfile.mkdtemp(prefix="bench_calib_real_"))
    if name in ("resnet18", "mobilenetv2"):
        import bench_calibration as bc

        model = getattr(bc, name)()
        calib, held = bc.make_inputs(samples, seed=1), bc.make_inputs(eval_samples, seed=2)
    else:
        import realnets

        model = onnx.load(str(realnets.fetch("yolov8n_320" if name == "yolov8n" else name)))
        if name == "yolov8n":
            shape, calib, held = [1, 3, 320, 320], photo_crops(samples, 1), photo_crops(eval_samples, 2)
        else:
            shape, calib, held = [1, 3, 48, 320], text_lines(samples, 1), text_lines(eval_samples, 2)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for d, v in zip(dims, shape):
            d.Clear()
            d.dim_value = v
    path = work / f"{name}.onnx"
    onnx.save(model, str(path))
    return path, model.graph.input[0].name, calib, held


# ------------------------------------------------------------------------------------------ scoring
def sqnr(fp32_path, q_model, input_name, inputs) -> float:
    """SQNR (dB) of every output of ``q_model`` (path or ModelProto) against the FP32 model."""
    from edgesqueeze.ortutil import make_session

    ref = make_session(str(fp32_path))
    act = make_session(q_model.SerializeToString() if isinstance(q_model, onnx.ModelProto) else str(q_model))
    se = sr = 0.0
    for x in inputs:
        for r, a in zip(ref.run(None, {input_name: x[None]}), act.run(None, {input_name: x[None]})):
            r, a = r.astype(np.float64), a.astype(np.float64)
            se += float(((a - r) ** 2).sum())
            sr += float((r ** 2).sum())
    return 10 * np.log10(sr / se) if se > 0 else float("inf")


def ours(path, input_name, calib, held, methods):
    from edgesqueeze.model import load_model
    from edgesqueeze.quant import quantize_qdq
    from edgesqueeze.quant.calibrate import choose_auto
    from edgesqueeze.quant.calibrators import amax_function
    from edgesqueeze.quant.collect import collect_statistics

    model = load_model(path)
    start = time.perf_counter()
    feeds = [{input_name: x[None]} for x in calib]
    stats = collect_statistics(model, feeds)
    collect_s = time.perf_counter() - start
    rows = []
    for method in methods:
        start = time.perf_counter()
        if method == "auto":
            amax, why = choose_auto(model, stats, feeds)
            method = f"auto ({why['chosen']})"
        else:
            fn = amax_function(method)
            amax = {n: float(fn(s)) for n, s in stats.items()}
        took = time.perf_counter() - start
        rows.append({"tool": "edgesqueeze", "method": method, "sqnr_db": sqnr(path, quantize_qdq(model, amax),
                                                                              input_name, held),
                     "calib_s": collect_s + took})
    return rows


def onnxruntime_rows(path, input_name, calib, held, methods):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x[None]}

    rows = []
    for method in methods:
        out = str(Path(path).with_name(f"ort_{method}.onnx"))
        start = time.perf_counter()
        try:
            quantize_static(str(path), out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=OPS,
                            calibrate_method=getattr(CalibrationMethod, method),
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        except Exception as exc:  # noqa: BLE001 - report and go on with the other methods
            rows.append({"tool": "onnxruntime", "method": method, "error": str(exc).splitlines()[0][:120]})
            continue
        took = time.perf_counter() - start
        rows.append({"tool": "onnxruntime", "method": method, "sqnr_db": sqnr(path, out, input_name, held),
                     "calib_s": took})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="yolov8n", choices=["yolov8n", "ppocr_rec", "resnet18", "mobilenetv2"])
    ap.add_argument("--samples", type=int, default=None, help="calibration inputs (24; 64 for the random ones)")
    ap.add_argument("--eval-samples", type=int, default=None, help="held-out inputs (8; 32 for the random ones)")
    ap.add_argument("--methods", default="auto,entropy,minmax,percentile,mse")
    ap.add_argument("--ort-methods", default="MinMax,Entropy,Percentile,Distribution")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    rnd = args.model in ("resnet18", "mobilenetv2")
    samples = args.samples or (64 if rnd else 24)
    evals = args.eval_samples or (32 if rnd else 8)
    path, input_name, calib, held = setup(args.model, samples, evals)
    rows = ours(path, input_name, calib, held, [m for m in args.methods.split(",") if m])
    rows += onnxruntime_rows(path, input_name, calib, held, [m for m in args.ort_methods.split(",") if m])
    print(f"\nmodel: {args.model}, {samples} calibration inputs, {evals} held-out inputs\n")
    print("| tool | method | SQNR dB | calibration s |")
    print("| --- | --- | ---: | ---: |")
    for r in rows:
        if "error" in r:
            print(f"| {r['tool']} | {r['method']} | failed: {r['error']} | |")
        else:
            print(f"| {r['tool']} | {r['method']} | {r['sqnr_db']:.1f} | {r['calib_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
