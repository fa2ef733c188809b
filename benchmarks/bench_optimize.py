"""edgesqueeze optimize vs onnxslim vs onnxsim on the same models, in one run.

For each model and tool: wall time of the optimization (median of --repeat runs), node count of the output,
agreement with the original on onnxruntime (max relative error on the outputs and the logits), and the
onnxruntime CPU median latency of the output (>= 50 timed runs after warm-up), measured twice: with
onnxruntime's graph optimizations off (what the graph itself costs) and at ORT_ENABLE_ALL (what a user gets).

Models: ResNet-50 and Inception-v1 (the onnx package's light Model-Zoo models with seeded random weights) and
MobileNetV2 (built with onnx helpers in tests/netzoo.py, Conv -> BN -> ReLU6 as a framework export has it).
``--models`` also takes the trained networks that packages ship (tests/realnets.py: ppocr_cls, ppocr_det,
ppocr_rec, yolov8n_320), loaded at opset 13 with their input pinned to the shape of :data:`TRAINED` or to the
one given as ``name:1x3x320x320``; with ``--models`` the table gets the latency ratios onnxslim / tool.

    python benchmarks/bench_optimize.py                      # prints a Markdown table
    python benchmarks/bench_optimize.py --runs 100 --json out.json
    python benchmarks/bench_optimize.py --models ppocr_cls,ppocr_det:1x3x320x320 --threads 1
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesqueeze.model import load_model, model_bytes, random_feeds  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test models and random weights

from edgesqueeze.passes import DEFAULT_OPSET, optimize  # noqa: E402
from netzoo import mobilenet_v2  # noqa: E402
from random_weights import materialize_random_weights  # noqa: E402
from realnets import NETS, fetch  # noqa: E402


def _light(name):
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    return materialize_random_weights(load_model(path, opset=DEFAULT_OPSET), seed=0)


DEFAULT_MODELS = ("ResNet-50", "MobileNetV2", "Inception-v1")
SYNTHETIC = {"ResNet-50": lambda: _light("resnet50"), "MobileNetV2": mobilenet_v2,
             "Inception-v1": lambda: _light("inception_v1")}
# the trained networks' default input shapes, as tests/test_verify_numerics.py pins them
TRAINED = {"ppocr_cls": (1, 3, 48, 192), "ppocr_det": (1, 3, 640, 640), "ppocr_rec": (1, 3, 48, 320),
           "yolov8n_320": (1, 3, 320, 320)}


def parse_models(text):
    """``--models``: comma-separated names of SYNTHETIC or TRAINED, a trained one optionally ``name:1x3x320x320``.

    Returns ``[(label, name, shape or None)]``; the label carries the shape when it is not the default one.
    """
    specs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, dims = item.partition(":")
        if name in SYNTHETIC and not dims:
            specs.append((name, name, None))
        elif name in TRAINED:
            if dims and not all(d.isdigit() for d in dims.split("x")):
                raise ValueError(f"bad shape in {item!r}: write it as 1x3x320x320")
            shape = tuple(int(d) for d in dims.split("x")) if dims else TRAINED[name]
            specs.append((item if dims else name, name, shape))
        else:
            raise ValueError(f"unknown model {item!r}: choose from {', '.join([*SYNTHETIC, *TRAINED])}"
                             " (a trained one may carry its input shape, e.g. ppocr_det:1x3x320x320)")
    if not specs:
        raise ValueError("--models names no model")
    return specs


def _load(name, shape):
    """A fresh model. A trained one is pinned; an output whose shape inference cannot recover after pinning (the
    Paddle classifier's and recognizer's: their stale -1 dims are dropped, and a Reshape takes a computed shape)
    gets the shape onnxruntime gives it, since onnxsim 0.8.1 refuses an output without a shape."""
    if shape is None:
        return SYNTHETIC[name]()
    from edgesqueeze.ortutil import run_model

    model = load_model(fetch(name), {NETS[name].input: list(shape)}, opset=DEFAULT_OPSET, pin=True)
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if missing:
        got = run_model(model, random_feeds(model, seed=0)[0])
        for out in missing:
            for d in got[out.name].shape:
                out.type.tensor_type.shape.dim.add().dim_value = int(d)
    return model


def _tools(target):
    def edgesqueeze_tool(m):
        return optimize(m, target=target, verify=False)[0]

    def onnxslim_tool(m):
        import onnxslim

        return onnxslim.slim(m)

    def onnxsim_tool(m):
        import onnxsim

        out, ok = onnxsim.simplify(m)
        if not ok:
            raise RuntimeError("onnxsim check failed")
        return out

    tools = {"edgesqueeze": edgesqueeze_tool, "onnxslim": onnxslim_tool, "onnxsim": onnxsim_tool}
    if target is not None:
        tools = {f"edgesqueeze --target {target}": edgesqueeze_tool}
    return tools


def _copy(model):
    return onnx.load_from_string(model_bytes(model))


def _session(model, optimized, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model_bytes(model), so, providers=["CPUExecutionProvider"])


def _latencies(models, feeds, runs, warmup, optimized, threads):
    """Median latency (ms) of each model, timed round-robin so that load changes hit every model alike."""
    sessions = [_session(m, optimized, threads) for m in models]
    for sess in sessions:
        for _ in range(warmup):
            sess.run(None, feeds)
    samples = [[] for _ in sessions]
    for _ in range(runs):
        for i, sess in enumerate(sessions):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            samples[i].append((time.perf_counter() - t0) * 1000)
    return [statistics.median(s) for s in samples]


def _agreement(reference, candidate, feeds):
    from edgesqueeze.ortutil import expose_outputs, run_model

    logits = [n.input[0] for n in reference.graph.node if n.op_type == "Softmax"]
    produced = {o for n in candidate.graph.node for o in n.output}
    extra = [t for t in logits if t in produced]
    ref = run_model(expose_outputs(reference, extra), feeds)
    act = run_model(expose_outputs(candidate, extra), feeds)
    worst = 0.0
    for k, r in ref.items():
        r64, a64 = r.astype(np.float64), act[k].astype(np.float64)
        worst = max(worst, float(np.max(np.abs(r64 - a64)) / max(np.max(np.abs(r64)), 1e-12)))
    return worst


def run(runs=50, warmup=5, repeat=3, threads=2, models=None):
    """The table's rows for ``models`` (``parse_models`` output; default: the three synthetic models)."""
    specs = models if models is not None else [(n, n, None) for n in DEFAULT_MODELS]
    rows = []
    for model_name, name, shape in specs:
        model = _load(name, shape)
        feeds = random_feeds(model, seed=0)[0]
        variants = [("original", model, None, None)]
        for target in (None, "orin-nano") if model_name == "MobileNetV2" else (None,):
            for tool, fn in _tools(target).items():
                wall, cpu, out = [], [], None
                for _ in range(repeat):
                    src = _copy(model)
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = fn(src)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                variants.append((tool, out, statistics.median(wall), statistics.median(cpu)))
                print(f"{model_name:12s} {tool:32s} optimized", file=sys.stderr)
        outs = [v[1] for v in variants]
        raw = _latencies(outs, feeds, runs, warmup, optimized=False, threads=threads)
        full = _latencies(outs, feeds, runs, warmup, optimized=True, threads=threads)
        for (tool, out, wall, cpu), lat_raw, lat_ort in zip(variants, raw, full):
            rows.append({"model": model_name, "tool": tool, "optimize_s": wall, "optimize_cpu_s": cpu,
                         "nodes": len(out.graph.node),
                         "max_rel_err": _agreement(model, out, feeds) if out is not model else 0.0,
                         "latency_ms_ort_off": lat_raw, "latency_ms_ort_all": lat_ort})
    return rows


def _vs_onnxslim(rows):
    """onnxslim's latency / each row's (> 1: faster than onnxslim), off and at ORT_ENABLE_ALL, by row index."""
    slim = {r["model"]: r for r in rows if r["tool"] == "onnxslim"}
    out = []
    for r in rows:
        s = slim.get(r["model"])
        out.append(None if s is None else (s["latency_ms_ort_off"] / r["latency_ms_ort_off"],
                                           s["latency_ms_ort_all"] / r["latency_ms_ort_all"]))
    return out


def markdown(rows, runs, threads, ratios=False):
    import onnxruntime
    import onnxsim
    import onnxslim

    lines = [f"onnxruntime {onnxruntime.__version__}, onnxslim {onnxslim.__version__}, onnxsim "
             f"{getattr(onnxsim, '__version__', '?')}, onnx {onnx.__version__}; {platform.processor() or 'cpu'}, "
             f"{threads} intra-op threads, median of {runs} timed runs (round-robin); optimize times: median of the repeats", "",
             "| model | tool | optimize wall (s) | optimize CPU (s) | nodes | max rel. error | "
             "ORT latency, graph opt. off (ms) | ORT latency, ORT_ENABLE_ALL (ms) |"
             + (" onnxslim / this, off | onnxslim / this, ALL |" if ratios else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if ratios else "")]
    for r, vs in zip(rows, _vs_onnxslim(rows)):
        t = "-" if r["optimize_s"] is None else f"{r['optimize_s']:.2f}"
        c = "-" if r["optimize_cpu_s"] is None else f"{r['optimize_cpu_s']:.2f}"
        line = (f"| {r['model']} | {r['tool']} | {t} | {c} | {r['nodes']} | {r['max_rel_err']:.1e} | "
                f"{r['latency_ms_ort_off']:.2f} | {r['latency_ms_ort_all']:.2f} |")
        if ratios:
            line += " - | - |" if vs is None else f" {vs[0]:.2f} | {vs[1]:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="timed onnxruntime runs per model (>= 50)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="optimization runs per tool (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--models", default=None,
                    help=f"comma-separated: {', '.join([*SYNTHETIC, *TRAINED])} (default: {','.join(DEFAULT_MODELS)}); "
                         "a trained one may carry its input shape, e.g. ppocr_det:1x3x320x320")
    args = ap.parse_args(argv)
    if args.runs < 50:
        ap.error("--runs must be >= 50")
    try:
        models = None if args.models is None else parse_models(args.models)
    except ValueError as exc:
        ap.error(str(exc))
    rows = run(args.runs, args.warmup, args.repeat, args.threads, models)
    print(markdown(rows, args.runs, args.threads, ratios=models is not None))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
