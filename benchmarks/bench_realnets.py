"""Trained networks from pip wheels (tests/realnets.py) on real inputs (tests/realdata.py): edgesqueeze's
optimize, INT8 (every calibrator) and FP16 side by side with onnxruntime's quantize_static (every
CalibrationMethod, QDQ, per-channel symmetric INT8), same optimized FP32 model, same 24 calibration samples.

Each quantization runs in a fresh subprocess that reports its wall time and peak RSS (VmHWM). Quality is
measured on 8 held-out real samples against the shipped FP32 model: output SQNR (lowest over the outputs) and
a task metric: YOLOv8 detections matched by IoU > 0.5 with the same class, PP-OCR rec character accuracy,
top-1 agreement for classifiers.

    python benchmarks/bench_realnets.py                       # every network, Markdown table on stdout
    python benchmarks/bench_realnets.py mtcnn_onet --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
import realdata  # noqa: E402
import realnets  # noqa: E402
from bench_calibration import _cpu_s, _vm_hwm_mb  # noqa: E402

OURS = ("auto", "entropy", "minmax", "percentile", "mse")  # auto: the default
ORT = ("MinMax", "Entropy", "Percentile", "Distribution")
MODELOPT = ("entropy", "max")  # NVIDIA Model Optimizer's ONNX PTQ calibrators (the TensorRT-oriented peer)
OPT_EXTRA: dict = {}  # optimize flags per network (none needed since the numeric check measures its noise floor)


# ------------------------------------------------------------------------------------------ one run per process
def _child(kind, method, model_path, data_path, input_name, out_path):
    start, cpu0 = time.perf_counter(), _cpu_s()
    if kind == "modelopt":  # its own venv (nvidia-modelopt pins onnx): python in $MODELOPT_PYTHON
        subprocess.run([os.environ["MODELOPT_PYTHON"], "-m", "modelopt.onnx.quantization", "--onnx_path", model_path,
                        "--quantize_mode", "int8", "--calibration_data", data_path, "--calibration_method", method,
                        "--calibration_eps", "cpu", "--output_path", out_path], check=True, capture_output=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": _cpu_s() - cpu0, "peak_rss_mb": peak}))
        return
    if kind == "edgesqueeze":
        from edgesqueeze.data import open_data
        from edgesqueeze.model import load_model, save_model
        from edgesqueeze.quant import calibrate, convert_fp16, quantize_qdq

        model = load_model(model_path)
        if method == "fp16":
            out = convert_fp16(model)
        else:
            out = quantize_qdq(model, calibrate(model, open_data(data_path, model), method=method,
                                                cache_dir=tempfile.mkdtemp()))
        save_model(out, out_path)
    else:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(np.load(data_path)[input_name])

            def get_next(self):
                x = next(self.it, None)
                return None if x is None else {input_name: x[None]}

        quantize_static(model_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": _cpu_s() - cpu0, "peak_rss_mb": _vm_hwm_mb()}))


def run_one(kind, method, model_path, data_path, input_name, out_path):
    cmd = [sys.executable, __file__, "--child", kind, method, model_path, data_path, input_name, out_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ quality
def _outputs(path, name, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {realnets.NETS[name].input: x[i:i + 1]}) for i in range(len(x))]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def _yolo_dets(out, conf=0.25):
    """[(box xyxy, class)] per image from YOLOv8's [N, 4 + classes, anchors] output, greedy NMS at IoU 0.45."""
    dets = []
    for pred in out:
        boxes, scores = pred[:4].T, pred[4:].T
        cls, best = scores.argmax(1), scores.max(1)
        keep = np.argsort(-best)[:300]
        keep = keep[best[keep] > conf]
        xyxy = np.c_[boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2][keep]
        chosen = []
        for i in range(len(keep)):
            if all(cls[keep[j]] != cls[keep[i]] or _iou(xyxy[i], xyxy[j]) < 0.45 for j in chosen):
                chosen.append(i)
        dets.append([(xyxy[i], int(cls[keep[i]])) for i in chosen])
    return dets


def _iou(a, b):
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter + 1e-9)


def task_metric(name, ref, got):
    """A task metric of outputs ``got`` against the FP32 outputs ``ref`` (text for the table)."""
    if name == "yolov8n_320":
        want, have = _yolo_dets(ref[0]), _yolo_dets(got[0])
        hit = sum(any(c == c2 and _iou(b, b2) > 0.5 for b2, c2 in h) for w, h in zip(want, have) for b, c in w)
        return f"boxes {hit}/{sum(map(len, want))} (found {sum(map(len, have))})"
    if name == "ppocr_rec":
        labels = realdata.rec_dictionary(realnets.fetch(name))
        truths = [t for _, t in realdata.text_lines(realdata.HELD_OUT, 1000)]
        return f"char acc {realdata.char_accuracy(realdata.ctc_greedy(got[0], labels), truths):.3f}"
    if name in ("ppocr_cls", "magika"):
        return f"top-1 agree {np.mean(ref[0].argmax(-1) == got[0].argmax(-1)):.2f}"
    if name == "mtcnn_onet":
        return f"face/no-face agree {np.mean(ref[2].argmax(-1) == got[2].argmax(-1)):.2f}"
    return ""


def _quality(name, ref, path, held):
    got = _outputs(path, name, held)
    return {"sqnr_db": min(realdata.sqnr_db(r, g) for r, g in zip(ref, got)), "task": task_metric(name, ref, got)}


def bench_net(name, work: Path, tools=("edgesqueeze", "onnxruntime")):
    """Rows for network ``name``: optimize, ours per calibrator + FP16, onnxruntime per CalibrationMethod."""
    net, src = realnets.NETS[name], realnets.fetch(name)
    calib, held = realdata.split(name)
    data = realdata.save_npz(work / f"{name}.calib.npz", net.input, calib)
    opt = work / f"{name}.opt.onnx"
    shape = f"{net.input}:{'x'.join(map(str, net.shapes[0]))}"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "import sys; from edgesqueeze.cli import run; sys.argv[0] = 'edgesqueeze'; run()", "optimize", str(src), "-i", shape, "-o", str(opt),
                           "-q", *OPT_EXTRA.get(name, [])], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    ref = _outputs(src, name, held)
    rows = [{"net": name, "tool": " ".join(["edgesqueeze optimize", *OPT_EXTRA.get(name, [])]), "method": "fp32",
             "wall_s": time.perf_counter() - start}]
    if proc.returncode != 0:
        rows[0]["error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1][:160]
        return rows
    rows[0].update(_quality(name, ref, opt, held))
    methods = {"edgesqueeze": OURS + ("fp16",), "onnxruntime": ORT, "modelopt": MODELOPT}
    runs = [(kind, m) for kind in tools for m in methods[kind]]
    for kind, method in runs:
        out = work / f"{name}.{kind}.{method}.onnx"
        row = {"net": name, "tool": kind, "method": method,
               **run_one(kind, method, str(opt), str(data), net.input, str(out))}
        if "error" not in row:
            try:
                row.update(_quality(name, ref, out, held))
            except Exception as exc:  # noqa: BLE001 - an invalid output model is a result, not a crash
                row["error"] = f"{type(exc).__name__}: {str(exc)[:140]}"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def markdown(rows):
    lines = ["| network | tool | method | output SQNR dB | task metric | wall s | peak RSS MB |",
             "|---|---|---|---:|---|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['net']} | {r['tool']} | {r['method']} | error: {r['error']} | | | |")
            continue
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        lines.append(f"| {r['net']} | {r['tool']} | {r['method']} | {r['sqnr_db']:.1f} | {r['task']} | "
                     f"{r['wall_s']:.1f} | {rss} |")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:8])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nets", nargs="*", default=list(realnets.DEFAULT))
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--modelopt", metavar="PYTHON", help="a Python with nvidia-modelopt: adds Model Optimizer's "
                    "ONNX PTQ (entropy, max) as a peer")
    ap.add_argument("--tools", default="edgesqueeze,onnxruntime", help="comma-separated: edgesqueeze,onnxruntime,"
                    "modelopt (modelopt needs --modelopt)")
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    if args.modelopt:
        os.environ["MODELOPT_PYTHON"] = args.modelopt
        tools += [] if "modelopt" in tools else ["modelopt"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets:
            rows += bench_net(name, Path(tmp), tools)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
