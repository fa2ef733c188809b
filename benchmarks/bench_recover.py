"""Channel pruning + distillation recovery, measured: size, onnxruntime CPU latency, accuracy, recovery time.

For each network: ``edgesqueeze optimize`` (the reference: the unpruned, fused original), then
``compress --channels FRACTION`` (and, for the digits CNN, ``--prune 0.9``), then ``recover`` on unlabelled
inputs. Every command runs through the CLI and is printed. Accuracy is top-1 against true labels on held-out
inputs (digits: examples/digits/val.npz; ppocr_cls: rendered text lines of tests/realdata.py, half of them
rotated 180 degrees, the classifier's two classes) and agreement (same argmax) with the original. Latency is
the median of interleaved rounds (every model once per round, in turn), batch 1, at 1 thread and at
onnxruntime's default thread count, in one process: the ratio is what counts on a shared machine.

    PYTHONPATH=. python benchmarks/bench_recover.py                       # digits CNN + ppocr_cls
    PYTHONPATH=. python benchmarks/bench_recover.py --nets digits --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edgesqueeze.model import load_model  # noqa: E402
from edgesqueeze.ortutil import make_session  # noqa: E402

DIGITS = ROOT / "examples" / "digits"


def _cli(*args) -> float:
    """Run ``edgesqueeze ARGS``; print the command; return its wall time."""
    print("$ edgesqueeze " + " ".join(str(a) for a in args), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {r.stderr.strip()}")
    return time.perf_counter() - t0


def _predict(path: Path, x: np.ndarray) -> np.ndarray:
    sess = make_session(load_model(path))
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]).argmax(1)


def _latency(paths, x1: np.ndarray, threads, rounds: int, runs: int):
    """Median ms per model, interleaved: each round runs every model ``runs`` times in turn."""
    sessions = [make_session(load_model(p), threads=threads, optimize=True) for p in paths]
    names = [s.get_inputs()[0].name for s in sessions]
    for s, n in zip(sessions, names):
        for _ in range(10):
            s.run(None, {n: x1})
    samples = [[] for _ in paths]
    for _ in range(rounds):
        for k, (s, n) in enumerate(zip(sessions, names)):
            t0 = time.perf_counter()
            for _ in range(runs):
                s.run(None, {n: x1})
            samples[k].append((time.perf_counter() - t0) / runs * 1e3)
    return [statistics.median(v) for v in samples]


def _digits(work: Path, args):
    teacher = work / "digits.opt.onnx"
    _cli("optimize", DIGITS / "digits_cnn.onnx", "-o", teacher)
    val = np.load(DIGITS / "val.npz")
    steps = [("channels", ["--channels", str(args.channels)]), ("prune", ["--prune", "0.9"])]
    rec = ["--data", DIGITS / "calib.npz", "--epochs", str(args.epochs), "--lr", "1e-2"]
    return teacher, steps, rec, val["input"], val["label"]


def _ppocr_cls(work: Path, args):
    import realdata
    from realnets import realnet
    teacher = work / "cls.opt.onnx"
    _cli("optimize", realnet("ppocr_cls"), "--input", "x:1x3x48x192", "-o", teacher)
    shape = (1, 3, 48, 192)
    train = work / "lines_train.npz"
    np.savez(train, x=realdata.net_inputs("ppocr_cls", args.lines, seed=5, shape=shape))
    vals = work / "lines_val.npz"
    np.savez(vals, x=realdata.net_inputs("ppocr_cls", 128, seed=77, shape=shape))
    test = realdata.net_inputs("ppocr_cls", args.test, seed=1000, shape=shape)
    steps = [("channels", ["--channels", str(args.channels)])]
    rec = ["--data", train, "--val", vals, "--epochs", str(args.epochs), "--lr", str(args.lr),
           "--temperature", "2", "--input", "x:1x3x48x192"]
    return teacher, steps, rec, test, np.arange(len(test)) % 2


def run_net(net: str, work: Path, args) -> list:
    """Rows for one network: original (optimized), each compression with and without recovery."""
    teacher, steps, rec, xt, yt = {"digits": _digits, "ppocr_cls": _ppocr_cls}[net](work, args)
    ref = _predict(teacher, xt)
    models = [("original (optimized)", teacher, None)]
    for label, flags in steps:
        small = work / f"{net}.{label}.onnx"
        _cli("compress", teacher, *flags, "-o", small)
        recovered = work / f"{net}.{label}.rec.onnx"
        secs = _cli("recover", small, "--teacher", teacher, *rec, "-o", recovered)
        models += [(" ".join(flags), small, None), (" ".join(flags) + " + recover", recovered, secs)]
    x1 = xt[:1]
    lat1 = _latency([p for _, p, _ in models], x1, 1, args.rounds, args.runs)
    latd = _latency([p for _, p, _ in models], x1, None, args.rounds, args.runs)
    rows = []
    for (label, path, secs), l1, ld in zip(models, lat1, latd):
        pred = _predict(path, xt)
        rows.append({"net": net, "model": label, "kib": path.stat().st_size / 1024,
                     "top1": float((pred == yt).mean()), "agree": float((pred == ref).mean()),
                     "ms_1t": l1, "ms_default": ld, "speedup_1t": lat1[0] / l1, "speedup_default": latd[0] / ld,
                     "recover_s": secs})
    return rows


def markdown(rows) -> str:
    """The RESULTS.md table."""
    out = ["| net | model | size KiB | top-1 | agreement | ORT ms 1 thread (x) | ORT ms default (x) | recovery |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rec = f"{r['recover_s']:.0f} s" if r["recover_s"] is not None else ""
        out.append(f"| {r['net']} | {r['model']} | {r['kib']:.0f} | {100 * r['top1']:.2f} % | "
                   f"{100 * r['agree']:.2f} % | {r['ms_1t']:.3f} ({r['speedup_1t']:.2f}x) | "
                   f"{r['ms_default']:.3f} ({r['speedup_default']:.2f}x) | {rec} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=["digits", "ppocr_cls"], choices=["digits", "ppocr_cls"])
    ap.add_argument("--channels", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3, help="ppocr_cls learning rate (digits: 1e-2)")
    ap.add_argument("--lines", type=int, default=1024, help="unlabelled rendered lines to recover ppocr_cls on")
    ap.add_argument("--test", type=int, default=400, help="held-out rendered lines")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets:
            rows += run_net(net, Path(tmp), args)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
