"""Big models: edgesqueeze optimize (CLI, default verification) vs onnxslim (CLI), wall time and peak memory.

Each tool runs as its own process under ``/usr/bin/time -v`` (peak RSS = "Maximum resident set size"), the two
interleaved per repeat so that load changes hit both alike. Models: VGG-19 and ResNet-50 (the onnx package's light
Model-Zoo graphs with seeded random weights, tests/random_weights.py), and with ``--big`` MatMul chains of 0.15,
1.7 and 2.3 GB of weights in one external-data file, for which inspect / optimize / quantize -p fp16 are timed.

    python benchmarks/bench_big_models.py                 # VGG-19, ResNet-50 vs onnxslim (Markdown table)
    python benchmarks/bench_big_models.py --big           # also the 0.15 / 1.7 / 2.3 GB models
    python benchmarks/bench_big_models.py --folder /tmp/x --repeat 3
    python benchmarks/bench_big_models.py --no-zoo --big --sides 3536,12000   # the 0.15 and 1.7 GB models only
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _zoo(name, folder):
    import onnx

    from random_weights import materialize_random_weights

    path = folder / f"{name}.onnx"
    if not path.exists():
        src = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
        model = materialize_random_weights(onnx.load(str(src)), seed=0)
        onnx.save_model(model, str(path))
    return path


#: the tools' environment: our sources with compiled bytecode, as an installed package has (and onnxslim has)
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _compiled(folder):
    """Let the timed runs use compiled bytecode of our sources (kept under ``folder``), compiled once here."""
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "edgesqueeze")], env=ENV, check=True)


def _timed(cmd):
    """(wall seconds, CPU seconds, peak RSS in MB) of ``cmd`` run under /usr/bin/time -v; raises on failure."""
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    err = proc.stderr

    def field(label):
        return re.search(re.escape(label) + r":\s*(\S+)", err).group(1)

    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return seconds, cpu, int(field("Maximum resident set size (kbytes)")) / 1024


def _exe(name):
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", name]


def vs_onnxslim(folder, repeat):
    """Rows: model, tool, median wall, median CPU, max peak RSS."""
    rows = []
    for name in ("vgg19", "resnet50"):
        path = _zoo(name, folder)
        tools = {"edgesqueeze optimize": _exe("edgesqueeze") + ["-q", "optimize", str(path), "-o",
                                                                  str(folder / f"{name}.es.onnx")],
                 "onnxslim": _exe("onnxslim") + [str(path), str(folder / f"{name}.slim.onnx")]}
        samples = {t: [] for t in tools}
        for _ in range(repeat):
            for tool, cmd in tools.items():
                for out in folder.glob(f"{name}.*.onnx*"):
                    out.unlink()
                samples[tool].append(_timed(cmd))
        for tool, s in samples.items():
            rows.append((name, os.path.getsize(path) / 1e6, tool, statistics.median(x[0] for x in s),
                         statistics.median(x[1] for x in s), max(x[2] for x in s)))
    return rows


def big_models(folder, sides):
    """Rows: weights GB, verb, wall, CPU, peak RSS, for MatMul chains of three [side, side] float32 weights."""
    from test_big_models import build_matmul_chain

    rows = []
    for side in sides:
        sub = folder / f"chain{side}"
        sub.mkdir(exist_ok=True)
        path, _ = build_matmul_chain(sub, side)
        gb = os.path.getsize(sub / "big.onnx.data") / 1e9
        verbs = {"inspect": ["inspect", str(path)],
                 "optimize": ["optimize", str(path), "-o", str(sub / "out" / "big.opt.onnx")],
                 "quantize -p fp16": ["quantize", str(path), "-p", "fp16", "-o", str(sub / "fp16" / "big.fp16.onnx")]}
        for verb, args in verbs.items():
            rows.append((gb, verb) + _timed(_exe("edgesqueeze") + ["-q"] + args))
        shutil.rmtree(sub)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also the 0.15 / 1.7 / 2.3 GB MatMul chains")
    ap.add_argument("--no-zoo", action="store_true", help="skip VGG-19 / ResNet-50")
    ap.add_argument("--sides", default="3536,12000,14000",
                    help="sides n of the MatMul chains' [n, n] float32 weights (default: 0.15, 1.7, 2.35 GB)")
    args = ap.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="esq-big-"))
    folder.mkdir(parents=True, exist_ok=True)
    _compiled(folder)
    try:
        if not args.no_zoo:
            print("| model | weights (MB) | tool | wall (s) | CPU (s) | peak RSS (MB) |\n|---|---:|---|---:|---:|---:|")
            for r in vs_onnxslim(folder, args.repeat):
                print(f"| {r[0]} | {r[1]:.0f} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.0f} |", flush=True)
        if args.big:
            print("\n| weights (GB) | command | wall (s) | CPU (s) | peak RSS (MB) |\n|---:|---|---:|---:|---:|")
            for r in big_models(folder, [int(x) for x in args.sides.split(",")]):
                print(f"| {r[0]:.2f} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.0f} |", flush=True)
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
