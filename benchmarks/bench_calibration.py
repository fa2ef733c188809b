"""Calibration cost and quality: edgesqueeze vs onnxruntime's quantize_static, same model, same inputs.

The model (ResNet-18 or MobileNetV2 at 224x224, BatchNorm folded, seeded He-initialised weights) is built
here with onnx helpers; the calibration inputs are seeded. Each calibration runs in a fresh subprocess, which
reports its own wall time and peak RSS (ru_maxrss). The output error of every resulting QDQ model is
measured against FP32 on held-out seeded inputs.

    python benchmarks/bench_calibration.py --model resnet18 --samples 64
    python benchmarks/bench_calibration.py --model mobilenetv2 --samples 64 --json out.json
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
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------------------ model builders
class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, kind):
        self.n += 1
        return f"{kind}_{self.n}"

    def conv(self, x, cin, cout, k, stride=1, group=1, act="relu"):
        w = self.rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.05, cout).astype(np.float32)
        wn, bn, y = self.name("w"), self.name("b"), self.name("conv")
        self.inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(b, bn)]
        self.nodes.append(helper.make_node("Conv", [x, wn, bn], [y], name=y, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4, group=group))
        return self.act(y, act)

    def act(self, x, act):
        if act is None:
            return x
        y = self.name(act)
        if act == "relu":
            self.nodes.append(helper.make_node("Relu", [x], [y], name=y))
        else:  # relu6
            lo, hi = self.name("lo"), self.name("hi")
            self.inits += [numpy_helper.from_array(np.array(0, np.float32), lo),
                           numpy_helper.from_array(np.array(6, np.float32), hi)]
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y], name=y))
        return y

    def add(self, a, b, act=None):
        y = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y], name=y))
        return self.act(y, act)

    def head(self, x, cin, classes=1000):
        p, f = self.name("gap"), self.name("flat")
        self.nodes += [helper.make_node("GlobalAveragePool", [x], [p], name=p),
                       helper.make_node("Flatten", [p], [f], name=f)]
        w = self.rng.normal(0, np.sqrt(1.0 / cin), (classes, cin)).astype(np.float32)
        wn, bn = self.name("fc_w"), self.name("fc_b")
        self.inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(np.zeros(classes, np.float32), bn)]
        self.nodes.append(helper.make_node("Gemm", [f, wn, bn], ["logits"], name="fc", transB=1))

    def model(self, name):
        g = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        onnx.checker.check_model(m)
        return m


def resnet18(seed=0):
    b = _Builder(seed)
    x = b.conv("input", 3, 64, 7, 2)
    mp = b.name("maxpool")
    b.nodes.append(helper.make_node("MaxPool", [x], [mp], name=mp, kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1]))
    x, cin = mp, 64
    for cout, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]:
        y = b.conv(x, cin, cout, 3, stride)
        y = b.conv(y, cout, cout, 3, 1, act=None)
        sc = x if stride == 1 and cin == cout else b.conv(x, cin, cout, 1, stride, act=None)
        x, cin = b.add(y, sc, "relu"), cout
    b.head(x, 512)
    return b.model("resnet18")


def mobilenetv2(seed=0):
    b = _Builder(seed)
    x, cin = b.conv("input", 3, 32, 3, 2, act="relu6"), 32
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    for t, c, n, s in cfg:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = b.conv(x, cin, hidden, 1, act="relu6") if t != 1 else x
            y = b.conv(y, hidden, hidden, 3, stride, group=hidden, act="relu6")
            y = b.conv(y, hidden, c, 1, act=None)
            x = b.add(x, y) if stride == 1 and cin == c else y
            cin = c
    x = b.conv(x, cin, 1280, 1, act="relu6")
    b.head(x, 1280)
    return b.model("mobilenetv2")


def make_inputs(n, seed):
    rng = np.random.default_rng(seed)
    # smooth, image-like inputs: low-resolution noise upsampled, normalised per channel
    low = rng.normal(0, 1, (n, 3, 28, 28)).astype(np.float32)
    return np.repeat(np.repeat(low, 8, axis=2), 8, axis=3) + rng.normal(0, 0.1, (n, 3, 224, 224)).astype(np.float32)


# ------------------------------------------------------------------------------------------ one run per process
def _vm_hwm_mb():
    """Peak RSS of this process (VmHWM; unlike ru_maxrss it does not inherit the parent's peak across exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child(kind, method, model_path, data_path, out_path):
    rss0 = _vm_hwm_mb()
    cpu0 = _cpu_s()
    start = time.perf_counter()
    if kind == "inference":  # the floor both tools share: one FP32 run per input, nothing else
        from edgesqueeze.ortutil import make_session

        sess = make_session(model_path, optimize=True)  # all of onnxruntime's graph optimizations
        for x in np.load(data_path)["input"]:
            sess.run(None, {"input": x[None]})
    elif kind == "edgesqueeze":
        from edgesqueeze.data import open_data
        from edgesqueeze.model import load_model, save_model
        from edgesqueeze.quant import calibrate, quantize_qdq

        model = load_model(model_path)
        amax = calibrate(model, open_data(data_path, model), method=method)
        save_model(quantize_qdq(model, amax), out_path)
    else:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(np.load(data_path)["input"])

            def get_next(self):
                x = next(self.it, None)
                return None if x is None else {"input": x[None]}

        methods = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                   "minmax": CalibrationMethod.MinMax}
        quantize_static(model_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    wall = time.perf_counter() - start
    print(json.dumps({"wall_s": wall, "cpu_s": _cpu_s() - cpu0, "peak_rss_mb": _vm_hwm_mb(), "start_rss_mb": rss0}))


def run_one(kind, method, model_path, data_path, out_path):
    cmd = [sys.executable, __file__, "--child", kind, method, model_path, data_path, out_path]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def output_error(fp32_path, q_path, inputs):
    from edgesqueeze.ortutil import make_session

    ref, act = make_session(fp32_path), make_session(q_path)
    se = sr = 0.0
    agree = 0
    worst = 0.0
    for x in inputs:
        r = ref.run(None, {"input": x[None]})[0].astype(np.float64)
        a = act.run(None, {"input": x[None]})[0].astype(np.float64)
        se += float(((a - r) ** 2).sum())
        sr += float((r ** 2).sum())
        worst = max(worst, float(np.abs(a - r).max() / np.abs(r).max()))
        agree += int(a.argmax() == r.argmax())
    return {"sqnr_db": 10 * np.log10(sr / se) if se > 0 else float("inf"), "max_rel": worst,
            "top1_agreement": 100.0 * agree / len(inputs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", choices=["resnet18", "mobilenetv2"])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--methods", default="entropy,percentile,minmax")
    ap.add_argument("--ours-only", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per tool and method (each in a fresh process); the table shows the median times")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    import onnxruntime

    work = Path(tempfile.mkdtemp(prefix="bench_calib_"))
    model = resnet18() if args.model == "resnet18" else mobilenetv2()
    model_path = str(work / f"{args.model}.onnx")
    onnx.save(model, model_path)
    data_path = str(work / "calib.npz")
    np.savez(data_path, input=make_inputs(args.samples, seed=1))
    held_out = make_inputs(args.eval_samples, seed=2)
    def measured(kind, method, out):
        runs = [run_one(kind, method, model_path, data_path, out) for _ in range(args.repeat)]
        ok = [r for r in runs if "error" not in r]
        if not ok:
            return runs[0]
        med = dict(ok[0])
        for key in ("wall_s", "cpu_s", "peak_rss_mb"):
            med[key] = float(np.median([r[key] for r in ok]))
        med["wall_runs"] = [round(r["wall_s"], 2) for r in ok]
        return med

    rows = []
    floor = measured("inference", "-", "")
    floor.update({"tool": "FP32 inference only", "method": "-"})
    print(json.dumps(floor), flush=True)
    for method in args.methods.split(","):
        for kind in (("edgesqueeze",) if args.ours_only else ("edgesqueeze", "onnxruntime")):
            out = str(work / f"{kind}_{method}.onnx")
            res = measured(kind, method, out)
            if "error" not in res:
                res.update(output_error(model_path, out, held_out))
            res.update({"tool": kind, "method": method})
            rows.append(res)
            print(json.dumps(res), flush=True)
    print()
    print(f"model: {args.model} (224x224, batch 1), {args.samples} calibration inputs, {args.eval_samples} held-out "
          f"inputs; onnxruntime {onnxruntime.__version__}; {os.cpu_count()} CPUs (shared, busy machine); "
          f"median of {args.repeat} run(s) each")
    print()
    print("| method | tool | wall s | CPU s | peak RSS MB | SQNR dB vs FP32 | max rel err | top-1 agreement % |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| - | FP32 inference only, optimized graph (floor) | {floor['wall_s']:.2f} | {floor['cpu_s']:.2f} | "
          f"{floor['peak_rss_mb']:.0f} | | | |")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['tool']} | failed: {r['error']} | | | | | |")
            continue
        print(f"| {r['method']} | {r['tool']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
              f"{r['sqnr_db']:.1f} | "
              f"{r['max_rel']:.4f} | {r['top1_agreement']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps([floor] + rows, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:7])
    else:
        main()
