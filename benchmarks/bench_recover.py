"""Channel pruning + distillation recovery, measured: size, onnxruntime CPU latency, accuracy, compress/recover time.

For each network: the original as exported and ``edgesqueeze optimize``'s copy (the teacher: fused, unpruned),
then ``compress --channels 0.5`` twice, data-free (L1 norm of the filters) and data-aware (``--calib``: channels
chosen by the variance they feed their consumers, consumers refitted by least squares), then ``recover`` of the
data-aware copy by distillation on unlabelled inputs, with recover's defaults (``--lr auto``, temperature 4) unless
told (for the digits CNN also ``--prune 0.9`` + recover). Every command runs through the CLI and is printed.
Accuracy is top-1 against true labels on held-out inputs (digits: examples/digits/val.npz; ppocr_cls: rendered
text lines of tests/realdata.py, half rotated 180 degrees, the classifier's two classes; mtcnn_onet: the
face-balanced crops of realdata.face_crops, face / not face) and agreement (same argmax) with the original as
exported. Calibration, recovery, validation and test inputs are disjoint (different seeds; mtcnn_onet's faces are
7 real faces, so its splits share the faces under different jitter). Latency is the median of interleaved rounds
(every model once per round, in turn), batch 1, at 1 thread and at onnxruntime's default thread count (all
graph optimizations on), in one process: the ratio to the original as exported is what counts on a shared
machine.

    PYTHONPATH=. python benchmarks/bench_recover.py                      # digits CNN, ppocr_cls, mtcnn_onet
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
    print("$ edgesqueeze " + " ".join(Path(a).name if isinstance(a, Path) else str(a) for a in args), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {r.stderr.strip()}")
    return time.perf_counter() - t0


def _predict(path: Path, x: np.ndarray, output) -> np.ndarray:
    sess = make_session(load_model(path))
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run([output], {name: x[i:i + 1]})[0] for i in range(len(x))]).argmax(1)


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


def _digits(work: Path, args) -> dict:
    teacher = work / "digits.opt.onnx"
    _cli("optimize", DIGITS / "digits_cnn.onnx", "-o", teacher)
    val = np.load(DIGITS / "val.npz")
    return {"exported": DIGITS / "digits_cnn.onnx", "teacher": teacher, "calib": DIGITS / "calib.npz",
            "x": val["input"], "y": val["label"],
            "output": "logits", "prune": True,
            "recover": ["--data", DIGITS / "calib.npz", "--epochs", str(args.digits_epochs), "--lr", args.lr]}


def _package_net(work: Path, args, net: str, shape, output, recover, inputs, labels) -> dict:
    """A trained package net: ``inputs(count, seed)`` real inputs, ``labels(n)`` the classes of ``n`` test inputs."""
    from realnets import realnet
    teacher = work / f"{net}.opt.onnx"
    name = load_model(realnet(net)).graph.input[0].name
    spec = f"{name}:" + "x".join(map(str, shape))
    _cli("optimize", realnet(net), "--input", spec, "-o", teacher)
    sets = {}
    for key, count, seed in (("calib", 256, 3), ("train", args.samples, 5), ("val", 256, 77)):
        sets[key] = work / f"{net}.{key}.npz"
        np.savez(sets[key], x=inputs(count, seed))
    test = inputs(args.test, 1000)
    return {"exported": realnet(net), "teacher": teacher, "calib": sets["calib"], "x": test, "y": labels(len(test)),
            "output": output, "prune": False,
            "recover": ["--data", sets["train"], "--val", sets["val"], "--input", spec, "--epochs", str(args.epochs),
                        "--lr", args.lr, "--temperature", str(args.temperature), *recover]}


def _ppocr_cls(work: Path, args) -> dict:
    """Rendered text lines, every other one upside down: the classifier's two classes (0 and 180 degrees)."""
    import realdata
    shape = (1, 3, 48, 192)
    return _package_net(work, args, "ppocr_cls", shape, "save_infer_model/scale_0.tmp_1", [],
                        lambda n, seed: realdata.net_inputs("ppocr_cls", n, seed=seed, shape=shape),
                        lambda n: np.arange(n) % 2)


def _mtcnn_onet(work: Path, args) -> dict:
    """Face-balanced crops (realdata.face_crops: 7 real faces of the insightface wheel's photos, jittered, and
    non-faces): class 1 = face; the box and landmark outputs are held by hints."""
    import realdata
    return _package_net(work, args, "mtcnn_onet", (1, 48, 48, 3), "softmax_2",
                        ["--distil", "softmax_2", "--hint", "dense_5:dense_5", "--hint", "dense_6:dense_6"],
                        lambda n, seed: realdata.face_crops(n, seed=seed),
                        lambda n: realdata.face_labels(n).astype(np.int64))


NETS = {"digits": _digits, "ppocr_cls": _ppocr_cls, "mtcnn_onet": _mtcnn_onet}


def run_net(net: str, work: Path, args) -> list:
    """Rows for one network: original (optimized), --channels data-free, data-aware, data-aware + recover."""
    cfg = NETS[net](work, args)
    teacher = cfg["teacher"]
    steps = [("--channels 0.5", ["--channels", str(args.channels)], None),
             ("--channels 0.5 --calib", ["--channels", str(args.channels), "--calib", cfg["calib"]], [])]
    if cfg["prune"]:   # from 9 % top-1 (--lr auto picks 1e-2 here, 3e-4 for ppocr_cls)
        steps.append(("--prune 0.9", ["--prune", "0.9"], []))
    models = [("original (as exported)", cfg["exported"], None, None), ("original (optimized)", teacher, None, None)]
    for k, (label, flags, rec) in enumerate(steps):
        small = work / f"{net}.{k}.onnx"
        secs = _cli("compress", teacher, *flags, "-o", small)
        models.append((label, small, secs, None))
        if rec is not None:
            recovered = work / f"{net}.{k}.rec.onnx"
            models.append((label + " + recover", recovered, None,
                           _cli("recover", small, "--teacher", teacher, *cfg["recover"], *rec, "-o", recovered)))
    x1 = cfg["x"][:1]
    lat1 = _latency([m[1] for m in models], x1, 1, args.rounds, args.runs)
    latd = _latency([m[1] for m in models], x1, None, args.rounds, args.runs)
    ref = _predict(cfg["exported"], cfg["x"], cfg["output"])
    rows = []
    for (label, path, c_secs, r_secs), l1, ld in zip(models, lat1, latd):
        pred = _predict(path, cfg["x"], cfg["output"])
        rows.append({"net": net, "model": label, "kib": path.stat().st_size / 1024,
                     "top1": None if cfg["y"] is None else float((pred == cfg["y"]).mean()),
                     "agree": float((pred == ref).mean()), "ms_1t": l1, "ms_default": ld,
                     "speedup_1t": lat1[0] / l1, "speedup_default": latd[0] / ld,
                     "compress_s": c_secs, "recover_s": r_secs})
    return rows


def markdown(rows) -> str:
    """The RESULTS.md table."""
    out = ["| net | model | size KiB | top-1 | agreement | ORT ms 1 thread (x) | ORT ms default (x) | compress | "
           "recover |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def secs(v):
        return f"{v:.0f} s" if v is not None else ""
    for r in rows:
        top1 = f"{100 * r['top1']:.2f} %" if r["top1"] is not None else "n/a"
        out.append(f"| {r['net']} | {r['model']} | {r['kib']:.0f} | {top1} | "
                   f"{100 * r['agree']:.2f} % | {r['ms_1t']:.3f} ({r['speedup_1t']:.2f}x) | "
                   f"{r['ms_default']:.3f} ({r['speedup_default']:.2f}x) | {secs(r['compress_s'])} | "
                   f"{secs(r['recover_s'])} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--channels", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=12, help="recovery epochs of the package nets")
    ap.add_argument("--digits-epochs", type=int, default=20)
    ap.add_argument("--lr", default="auto", help="recover's --lr for every net")
    ap.add_argument("--temperature", type=float, default=4.0, help="package nets' distillation temperature")
    ap.add_argument("--samples", type=int, default=4096, help="unlabelled inputs to recover a package net on")
    ap.add_argument("--test", type=int, default=2000, help="held-out inputs of a package net")
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
