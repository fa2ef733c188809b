"""``edgesqueeze plugins``: compile-check, build and locate the CUDA kernels and TensorRT plugins."""
from __future__ import annotations

import click

from ..errors import MissingDependencyError, UnsupportedError, VerificationError
from .common import emit, info, json_option, table


@click.group("plugins")
def command():
    """CUDA kernels and TensorRT plugins for the DepthwiseSeparableConv and SparseConv custom ops.

    \b
    Examples:
      edgesqueeze plugins check                       # compile every kernel for sm_53/62/72/87/110 here
      edgesqueeze plugins check --arch 62 --json
      edgesqueeze plugins check --trt-include /usr/include/aarch64-linux-gnu
      edgesqueeze plugins build --arch 62             # on the device: build libedgesqueeze_plugins.so
      edgesqueeze plugins bench --target orin-nano    # on a GPU: time the fused kernels on MobileNet layers
      edgesqueeze plugins path                        # where the sources are (what a bundle copies)
    """


@command.command("check")
@click.option("--arch", default=None, metavar="LIST",
              help="Compute capabilities to compile for, e.g. 53,62,72,87 (the default: every Jetson GPU, 53,62,72,87,110).")
@click.option("--trt-include", default=None, metavar="DIR", type=click.Path(),
              help="Also compile the TensorRT plugin sources against the TensorRT headers in DIR (NvInfer.h) and run "
                   "the plugin self-test (creators, attributes, serialisation; no GPU needed).")
@json_option
def check(arch, trt_include, as_json):
    """Compile every kernel for every Jetson architecture, without a GPU.

    sm_75 and newer use nvcc from the PATH; older architectures (Nano sm_53, TX2 sm_62, Xavier sm_72) use CUDA 12
    NVRTC and ptxas from PyPI (pip install "cuda-bindings<13" nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12
    nvidia-cuda-nvcc-cu12). Reports registers, spills and shared memory per kernel. Exit code 7 when a compile fails,
    5 when those NVRTC wheels are not installed, 4 when no compiler can target an architecture (sm_32: TK1).

    \b
    Examples:
      edgesqueeze plugins check
      edgesqueeze plugins check --arch 53,87 --json
    """
    from ..plugins.check import check_kernels

    report = check_kernels(arch, trt_include=trt_include)

    def text(rep):
        rows = []
        for r in rep["results"]:
            if not r["functions"]:
                rows.append([r["arch"], r["source"], r["compiler"] or "-", "-", "-", "-", "-",
                             "ok" if r["ok"] else "FAILED"])
            for f in r["functions"]:
                spill = f.get("spill_store_bytes", 0) + f.get("spill_load_bytes", 0)
                rows.append([r["arch"], r["source"], r["compiler"], f["name"], f["registers"], spill,
                             f.get("smem_bytes", 0), "ok" if r["ok"] else "FAILED"])
        lines = [table(rows, ["arch", "source", "compiler", "kernel", "regs", "spill B", "smem B", "status"],
                       "llllrrrl")]
        for p in rep.get("plugins", []):
            lines.append(f"plugin {p['source']} (TensorRT {p['trt_version']} headers): "
                         f"{'ok' if p['ok'] else 'FAILED'}")
        if "plugin_selftest" in rep:
            st = rep["plugin_selftest"]
            lines.append(f"plugin self-test: {'ok' if st['ok'] else 'FAILED'}" + ("" if st["ok"] else f"\n{st['log']}"))
        bad = [r for r in rep["results"] if not r["ok"]] + [p for p in rep.get("plugins", []) if not p["ok"]]
        for r in bad:
            lines.append(f"\n{r.get('arch', '')} {r['source']}:\n{r['log']}")
        lines.append(f"{'all kernels compile' if rep['ok'] else 'compile check FAILED'} for "
                     f"{', '.join(rep['archs'])}")
        return "\n".join(lines)

    emit(report, as_json, text)
    missing = sorted({r["arch"] for r in report["results"] if not r["ok"] and r["compiler"] is None})
    if missing:
        from ..plugins.check import INSTALL_HINT

        if report["toolchains"]["nvrtc"] is None:
            err = MissingDependencyError("cuda.bindings", "", f"compiling the kernels for {', '.join(missing)}")
            err.hint = INSTALL_HINT
            raise err
        raise UnsupportedError(f"no compiler here targets {', '.join(missing)} (CUDA 12 NVRTC: sm_50 and newer)")
    if not report["ok"]:
        failed = [f"{r['arch']} {r['source']}" for r in report["results"] if not r["ok"]]
        failed += [f"plugin {p['source']}" for p in report.get("plugins", []) if not p["ok"]]
        if not report.get("plugin_selftest", {"ok": True})["ok"]:
            failed.append("plugin self-test")
        raise VerificationError(f"kernel compile check failed: {', '.join(failed)}")


@command.command("build")
@click.option("--arch", default=None, metavar="LIST",
              help="Compute capabilities, e.g. 62 (default: this machine's GPU, else 53,62,72,87).")
@click.option("--trt-root", default=None, metavar="DIR", type=click.Path(),
              help="TensorRT prefix (include/, lib/); default: JetPack's standard locations.")
@click.option("--build-dir", default="build/plugins", show_default=True, type=click.Path(),
              help="CMake build folder.")
@click.option("--kernels-only", is_flag=True, help="Build the kernels and GPU test harness only (no TensorRT).")
@json_option
def build(arch, trt_root, build_dir, kernels_only, as_json):
    """Build libedgesqueeze_plugins.so with CMake and nvcc (run it on the Jetson).

    Load the result with trtexec --plugins=LIB (TensorRT 8) or --dynamicPlugins=LIB (TensorRT 10).

    \b
    Examples:
      edgesqueeze plugins build --arch 62
      edgesqueeze plugins build --trt-root /opt/TensorRT-10.3 --build-dir /tmp/esq-plugins
    """
    from ..plugins.build import build_library

    info("building the edgesqueeze plugin library (this takes a few minutes on a Nano)...")
    result = build_library(arch, trt_root, build_dir, kernels_only=kernels_only)
    emit(result, as_json, lambda r: f"built {r['library'] or r['gpu_harness']} for {', '.join(r['archs'])} "
                                    f"in {r['seconds']} s")


@command.command("bench")
@click.option("--target", default="orin-nano", show_default=True,
              help="Device profile whose peak bandwidth and FLOP rate the results are related to.")
@click.option("--dtype", "dtypes", default="fp32,fp16,int8", show_default=True, metavar="LIST",
              help="Precisions to time: fp32, fp16 (half2), int8 (dp4a; fused kernel only, no TensorRT reference).")
@click.option("--layer", "layers", default=None, metavar="LIST",
              help="MobileNet layers CxHxW to time (default: all of 32x112x112 ... 960x7x7).")
@click.option("--iters", default=50, show_default=True, type=click.IntRange(1, 100000), help="Timed launches each.")
@click.option("--no-reference", "no_reference", is_flag=True,
              help="Skip the TensorRT reference engines (they take a few seconds each to build).")
@click.option("--from-result", "from_result", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Print a result recorded earlier with --json instead of running (no GPU needed).")
@json_option
def bench(target, dtypes, layers, iters, no_reference, from_result, as_json):
    """Time our kernels and TensorRT's on this machine's GPU (CUDA events), side by side.

    The fused depthwise-separable kernel (FP32, FP16, INT8) against its chunked fallback, the one-thread-per-output
    kernel and TensorRT's unfused depthwise + pointwise layers; the tiled sparse kernels (a 1x1 C -> C layer at 2:4
    and at 10 % density in CSR) against the one-thread-per-output ones and TensorRT's dense layer (and, on sm_80+,
    TensorRT's 2:4 sparse tensor cores). MobileNetV2 shapes, batch 1. Reports milliseconds, effective GB/s (X,
    weights and Y moved once) and GFLOP/s as a share of the --target profile's peaks (run it on the target), then
    each kernel beside TensorRT with the speed-up (TensorRT ms / ours). Builds a harness with nvcc first; the
    reference needs TensorRT's Python package and torch or pycuda, else it is skipped with the reason. Exit code 6
    when there is no GPU here.

    \b
    Examples:
      edgesqueeze plugins bench --target orin-nano
      edgesqueeze plugins bench --dtype fp16 --layer 384x14x14,960x7x7 --json > bench.json
      edgesqueeze plugins bench --from-result bench.json
    """
    import json as _json

    from ..plugins.bench import run_bench

    if from_result:
        with open(from_result, encoding="utf-8") as f:
            result = _json.load(f)
    else:
        chosen = [x.strip() for x in layers.split(",")] if layers else None
        wanted = [d.strip() for d in dtypes.split(",") if d.strip()]
        result = run_bench(target, dtypes=wanted, iters=iters, layers=chosen)
        result = _with_tensorrt(result, wanted, chosen, iters, no_reference)
    emit(result, as_json, bench_text)


def _with_tensorrt(result: dict, dtypes, layers, iters: int, skip: bool) -> dict:
    """Add TensorRT's timings of the same layers (or the reason they are missing) to a run_bench result."""
    from ..bench.plugin_reference import skipped_reference, time_reference
    from ..plugins.bench import SPARSE_OPS, reference_weight, select_layers, with_reference

    if skip:
        return with_reference(result, skipped_reference("--no-reference"))
    reference = time_reference(select_layers(layers), dtypes, ["dwsep", *SPARSE_OPS],
                               int(result["arch"].replace("sm_", "")), iters, reference_weight)
    return with_reference(result, reference)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def bench_text(r: dict) -> str:
    """The text of a ``plugins bench`` result: the kernels' table, then each kernel beside TensorRT."""
    rows = [[x["layer"], x["dtype"], x.get("op", "dwsep"), x["kernel"], f"{x['ms']:.4f}", f"{x['gbs']:.1f}",
             _pct(x["pct_peak_bandwidth"]), f"{x['gflops']:.1f}", _pct(x["pct_peak_gflops"])] for x in r["results"]]
    out = [table(rows, ["layer", "dtype", "op", "kernel", "ms", "GB/s", "% peak BW", "GFLOP/s", "% peak FLOP"],
                 "llllrrrrr"),
           f"{r['arch']} GPU, peaks of {r['target']}, {r['iters']} launches each"]
    ref = r.get("reference")
    if ref is None:
        return "\n".join(out)
    if ref.get("skipped"):
        out.append(f"TensorRT reference skipped: {ref['skipped']}")
    comparison = r.get("comparison") or []
    if comparison:
        rows = [[c["layer"], c["dtype"], c["op"], c["kernel"], f"{c['ms']:.4f}", c["engine"], f"{c['engine_ms']:.4f}",
                 "-" if c["speedup"] is None else f"{c['speedup']:.2f}x"] for c in comparison]
        out += ["", table(rows, ["layer", "dtype", "op", "ours", "ms", "reference", "ms", "speed-up"], "llllrlrr"),
                f"reference: {ref.get('engine')}; speed-up = reference ms / ours (above 1: ours is faster)"]
    return "\n".join(out)


@command.command("path")
@json_option
def path(as_json):
    """Print the folder with the kernel and plugin sources and CMakeLists.txt.

    \b
    Example:
      cmake -S "$(edgesqueeze plugins path)" -B build -DCUDA_ARCHITECTURES=87
    """
    from ..plugins.sources import plugin_source_dir

    emit({"source_dir": str(plugin_source_dir())}, as_json, lambda d: d["source_dir"])
