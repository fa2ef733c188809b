#!/usr/bin/env python3
"""edgesqueeze on-device benchmark runner: one self-contained script, Python 3.6+, standard library only.

Shipped in every bundle as ``run_on_device.py``. It runs the bundle's model with the best backend the device
has (trtexec, then the TensorRT Python API with pycuda, then onnxruntime; each fallback is recorded as a
warning), samples ``tegrastats`` alongside when present, and writes results JSON in the
``edgesqueeze.bench/1`` schema (render it on the workstation with ``edgesqueeze report results.json``).

    python3 run_on_device.py --bundle DIR --out results.json [--iterations N] [--warmup N]
                             [--backend auto|trtexec|trt|ort] [--engine FILE] [--power auto|tegrastats|none]

SIGINT/SIGTERM/SIGHUP stop the run early; the results written so far are kept with ``"partial": true``.
Exit codes: 0 done, 2 bad command line, 3 bad bundle, 6 no usable backend or a backend failed,
7 a bundle file does not match its sha256, 130 interrupted (partial results written).
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SCHEMA = "edgesqueeze.bench/1"
RUNNER_VERSION = "1"
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")
STOP = threading.Event()
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
             "tensor(bool)": "bool"}


class RunnerError(Exception):
    """A failure with the exit code the runner ends with."""

    def __init__(self, message, code=6):
        Exception.__init__(self, message)
        self.code = code


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def log(message):
    sys.stderr.write("run_on_device: %s\n" % message)
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------- statistics
def percentile(ordered, q):
    """Linear-interpolated percentile of sorted values (numpy's default method)."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(samples):
    """min, mean, median, p90, p95, p99, max, std (population), cv of a list of numbers (None when empty)."""
    if not samples:
        return None
    ordered = sorted(samples)
    mean = sum(ordered) / len(ordered)
    std = math.sqrt(sum((x - mean) ** 2 for x in ordered) / len(ordered))
    return {"min": ordered[0], "mean": mean, "median": percentile(ordered, 50), "p90": percentile(ordered, 90),
            "p95": percentile(ordered, 95), "p99": percentile(ordered, 99), "max": ordered[-1], "std": std,
            "cv": std / mean if mean else None, "n": len(ordered)}


def series(samples):
    return {"samples": samples, "stats": stats(samples)} if samples else None


def make_run(batch, latency, compute=None, h2d=None, d2h=None):
    mean = sum(latency) / len(latency) if latency else 0
    return {"batch": batch, "latency_ms": {"samples": latency, "stats": stats(latency)},
            "throughput_ips": batch * 1000.0 / mean if mean else None,
            "compute_ms": series(compute or []), "h2d_ms": series(h2d or []), "d2h_ms": series(d2h or [])}


# ---------------------------------------------------------------------------------------------- the bundle
def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(bundle):
    path = os.path.join(bundle, "manifest.json")
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (IOError, OSError, ValueError) as exc:
        raise RunnerError("cannot read %s: %s" % (path, exc), 3)
    if not str(manifest.get("schema", "")).startswith("edgesqueeze.bundle/"):
        raise RunnerError("%s is not an edgesqueeze bundle manifest" % path, 3)
    return manifest


def verify_files(bundle, manifest):
    bad = []
    for rel, entry in sorted(manifest.get("files", {}).items()):
        path = os.path.join(bundle, rel)
        if not os.path.isfile(path):
            bad.append("%s (missing)" % rel)
        elif sha256_file(path) != entry.get("sha256"):
            bad.append("%s (sha256 differs)" % rel)
    if bad:
        raise RunnerError("bundle files do not match the manifest: " + ", ".join(bad), 7)


def read_tegra_release():
    try:
        with open("/etc/nv_tegra_release") as fh:
            text = fh.read(512)
    except (IOError, OSError):
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return "%s.%s" % (m.group(1), m.group(2)) if m else None


# ---------------------------------------------------------------------------------------------- power
class Tegrastats(object):
    """Runs ``tegrastats --interval N`` in the background and keeps every line with its time."""

    def __init__(self, path, interval_ms):
        self.path, self.interval_ms = path, interval_ms
        self.lines, self.times = [], []
        self.t0 = time.time()
        self.proc = None
        self.thread = None

    def start(self):
        self.proc = subprocess.Popen([self.path, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, universal_newlines=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                self.times.append(round(time.time() - self.t0, 4))
                self.lines.append(line)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.thread is not None:
            self.thread.join(5)

    def rel(self):
        return round(time.time() - self.t0, 4)


def power_section(sampler, window, reason):
    if sampler is None:
        return {"probe": "none", "available": False, "reason": reason}
    return {"probe": "tegrastats", "available": bool(sampler.lines), "reason": "" if sampler.lines else
            "tegrastats printed nothing", "raw": sampler.lines, "raw_t_s": sampler.times,
            "window_s": window, "interval_ms": sampler.interval_ms}


# ---------------------------------------------------------------------------------------------- backends
def find_trtexec():
    for path in TRTEXEC_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("trtexec")


def has_module(name):
    try:
        __import__(name)
        return True
    except Exception:  # noqa: BLE001 - broken installs count as absent
        return False


def choose_backend(requested, warnings, expects_trt):
    """Pick a backend; every step down from what the bundle's target expects becomes a warning."""
    trtexec = find_trtexec()
    have = {"trtexec": trtexec is not None, "trt": has_module("tensorrt") and has_module("pycuda"),
            "ort": has_module("onnxruntime")}
    why = {"trtexec": "trtexec not found (looked in %s and PATH)" % ", ".join(TRTEXEC_PATHS),
           "trt": "the tensorrt and pycuda Python modules are not both importable",
           "ort": "the onnxruntime Python module is not importable"}
    if requested == "auto":  # a cpu bundle runs onnxruntime first; TensorRT targets go down from trtexec
        order = ["trtexec", "trt", "ort"] if expects_trt else ["ort", "trtexec", "trt"]
    else:
        order = [requested] + [b for b in ("trtexec", "trt", "ort") if b != requested]
    for i, name in enumerate(order):
        if have[name]:
            skipped = order[:i]
            if skipped:
                warnings.append("backend fallback: %s; running with %s instead%s" % (
                    "; ".join(why[b] for b in skipped), {"trt": "the TensorRT Python API",
                                                         "ort": "onnxruntime on the CPU"}.get(name, name),
                    " (timings are CPU timings, not TensorRT)" if name == "ort" and expects_trt else ""))
            return name, trtexec
    raise RunnerError("no backend can run the model here: " + "; ".join(why[b] for b in order), 6)


def shape_profile(manifest):
    """The TensorRT optimization profile of the dynamic inputs ({name: {min, opt, max}}; {} for a static model)."""
    return (manifest.get("tensorrt") or {}).get("profile") or {}


def input_specs(manifest):
    """[(name, shape, dtype)] to feed: a dynamic input runs at its profile's opt shape (else 1 per dynamic dim)."""
    specs = manifest.get("inputs") or {}
    profile = shape_profile(manifest)
    out = []
    for name, spec in sorted(specs.items()):
        if name in profile:
            shape = [int(d) for d in profile[name]["opt"]]
        else:
            shape = [int(d) if isinstance(d, int) and d > 0 else 1 for d in spec.get("shape", [])]
        out.append((name, shape, spec.get("dtype", "float32")))
    return out


def shapes_spec(profile, selector):
    """One selector of a profile in trtexec's syntax: images:1x3x640x640,mask:1x640x640 (copy of
    edgesqueeze.backends.trt_profile.shapes_spec: this file imports nothing of edgesqueeze)."""
    return ",".join("%s:%s" % ("'%s'" % n if (":" in n or "," in n) else n,
                               "x".join(str(int(d)) for d in profile[n][selector])) for n in sorted(profile))


def profile_flags(manifest, row, calib, engine_given):
    """trtexec's shape flags for the bundle's dynamic inputs: the build profile (--minShapes/--optShapes/
    --maxShapes, unless an engine is loaded), the calibration profile with --calib (--optShapesCalib, where the
    version calibrates), and the inference shapes (--shapes, the opt shapes). [] for a static model."""
    profile = shape_profile(manifest)
    if not profile:
        return []
    row = row or {"min_shapes": "--minShapes", "opt_shapes": "--optShapes", "max_shapes": "--maxShapes",
                  "shapes": "--shapes", "calib_shapes": "--optShapesCalib"}
    flags = []
    if not engine_given:
        flags = ["%s=%s" % (row[k], shapes_spec(profile, sel))
                 for k, sel in (("min_shapes", "min"), ("opt_shapes", "opt"), ("max_shapes", "max"))]
        if calib and row.get("calib_shapes"):
            flags.append("%s=%s" % (row["calib_shapes"], shapes_spec(profile, "opt")))
    return flags + ["%s=%s" % (row.get("shapes") or "--shapes", shapes_spec(profile, "opt"))]


def io_api(version):
    """The TensorRT Python I/O API for ``version`` ((major, minor)): "bindings" before 8.5, "tensors" from 8.5
    (copy of edgesqueeze.backends.trt_plan.context_plan's io_api)."""
    return "tensors" if tuple(version)[:2] >= (8, 5) else "bindings"


def timed_loop(fn, warmup, iterations, duration, on_sample=None):
    """Call fn() warmup times, then until ``iterations`` samples (or ``duration`` s); returns ms samples."""
    for _ in range(warmup):
        if STOP.is_set():
            return []
        fn()
    samples = []
    end = time.perf_counter() + duration if duration else None
    while not STOP.is_set():
        if end is None and len(samples) >= iterations:
            break
        if end is not None and time.perf_counter() >= end:
            break
        t = time.perf_counter()
        extra = fn()
        samples.append((time.perf_counter() - t) * 1000.0)
        if on_sample is not None:
            on_sample(extra)
    return samples


def run_ort(model_path, manifest, args, results):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    if args.threads:
        so.intra_op_num_threads = args.threads
    providers = [p for p in args.ort_providers.split(",") if p] if args.ort_providers else ["CPUExecutionProvider"]
    session = ort.InferenceSession(model_path, so, providers=providers)
    rng = np.random.RandomState(args.seed)
    specs = {n: (s, d) for n, s, d in input_specs(manifest)}
    feeds = {}
    for inp in session.get_inputs():
        default = ([d if isinstance(d, int) and d > 0 else 1 for d in inp.shape], ORT_TYPES.get(inp.type, "float32"))
        shape, dtype = specs.get(inp.name, default)
        if np.dtype(dtype).kind in "iub":
            feeds[inp.name] = rng.randint(0, 2 if dtype == "bool" else 10, size=shape).astype(dtype)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    batch = next(iter(feeds.values())).shape[0] if feeds and next(iter(feeds.values())).ndim else 1
    results["backend"].update({"name": "ort", "version": ort.__version__, "providers": session.get_providers()})
    results["versions"]["onnxruntime"] = ort.__version__
    results["versions"]["numpy"] = np.__version__
    samples = timed_loop(lambda: session.run(None, feeds), args.warmup, args.iterations, args.duration)
    if samples:
        results["runs"].append(make_run(batch, samples))
    return len(samples)


def trtexec_version(trtexec):
    out = subprocess.Popen([trtexec, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True).communicate(timeout=60)[0]
    m = re.search(r"TensorRT v(\d+)", out)
    if not m:
        return None, None
    return m.group(1), version_tuple(m.group(1))[0]


def version_tuple(tag):
    """NV_TENSORRT_VERSION digits -> (major, minor, patch): 8201 -> (8, 2, 1), 100300 -> (10, 3, 0)."""
    n = int(tag)
    if n >= 100000:
        return n // 10000, n // 100 % 100, n % 100
    return n // 1000, n // 100 % 10, n % 100


def version_from_tag(tag):
    """NV_TENSORRT_VERSION digits -> dotted version: 8201 -> 8.2.1, 100300 -> 10.3.0 (None stays None)."""
    if not tag:
        return None
    return "%d.%d.%d" % version_tuple(tag)


# A copy of edgesqueeze.backends.calib_cache (this script imports nothing of ours); a test pins the two.
CALIB_HEADER_PATTERN = r"^TRT-(\d+)-([A-Za-z0-9]+)$"
CALIB_ALGORITHM = "EntropyCalibration2"  # trtexec's --calib reads a cache with an EntropyCalibrator2


def retag_text(text, tag, algorithm=CALIB_ALGORITHM):
    """The cache text with its header replaced by TRT-<tag>-<algorithm>; text without a header is unchanged."""
    lines = text.split("\n")
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None or not re.match(CALIB_HEADER_PATTERN, lines[first].strip()):
        return text
    lines[first] = "TRT-%s-%s" % (tag, algorithm) + ("\r" if lines[first].endswith("\r") else "")
    return "\n".join(lines)


def calib_for_trtexec(calib, tag, warnings):
    """The cache path trtexec should read: a re-tagged temporary copy when its header names another TensorRT.

    trtexec ignores a cache written for another version and calibrates with random data instead; the scales
    do not depend on the version. Returns (path, temporary file to delete or None).
    """
    if not calib or not tag:
        return calib, None
    with open(calib) as fh:
        text = fh.read()
    new = retag_text(text, tag)
    if new == text:
        return calib, None
    fd, tmp = tempfile.mkstemp(prefix="esq-calib-", suffix=".cache")
    with os.fdopen(fd, "w") as fh:
        fh.write(new)
    warnings.append("the calibration cache was written for another TensorRT; its header is re-labelled for "
                    "trtexec v%s" % tag)
    return tmp, tmp


def flag_row(manifest, version):
    """The manifest's trtexec flag row for the device's TensorRT ``version`` ((major, minor) or a major).

    The bundle writes the table (edgesqueeze.bundle.engine_plan.TRTEXEC_FLAGS); None for an old manifest.
    """
    table = (manifest.get("tensorrt") or {}).get("trtexec_flags")
    if not table:
        return None
    have = tuple(version) if isinstance(version, (tuple, list)) else ((version, 0) if version else (99, 0))
    rows = [r for r in table if tuple(int(x) for x in r["since"].split(".")[:2]) <= have[:2]]
    return rows[-1] if rows else table[0]


def plugin_flag(lib, major, row=None):
    """trtexec's flag to load a plugin library: --plugins (8.x); 10.x: --dynamicPlugins for a library that
    exports getCreators, --staticPlugins for one that registers itself when loaded (TENSORRT.md)."""
    if (row["plugins"] == "--plugins") if row else (major and major < 10):
        return "--plugins=" + lib
    try:
        import ctypes
        dynamic = hasattr(ctypes.CDLL(os.path.abspath(lib)), "getCreators")
    except OSError:
        dynamic = False
    return ("--dynamicPlugins=" if dynamic else "--staticPlugins=") + lib


def _legacy_flags(precision, qdq, calib, major):
    """Old manifests (no tensorrt.trtexec_flags): the rules this runner used before the bundle's table."""
    flags = ["--workspace=1024"] if major and major < 10 else ["--memPoolSize=workspace:1024"]
    if major is None or major < 11:
        if precision in ("fp16", "int8"):
            flags.append("--fp16")
        if precision == "int8":
            flags.append("--int8")
            if calib and not qdq:
                flags.append("--calib=" + calib)
    return flags


def trtexec_build_flags(manifest, calib, version, plugin_lib):
    """Precision, workspace and plugin flags for the device's TensorRT ``version`` (see TENSORRT.md).

    ``version`` is (major, minor) or a major alone (then minor 0). The flags come from the manifest's
    trtexec flag table (the one build_engine.sh is generated from); an old manifest without the table
    gets the legacy rules. ``calib`` is the calibration cache's path (None when there is none).
    """
    precision = manifest.get("precision", "fp32")
    qdq = "qdq" in manifest.get("models", {}).get("deploy", "")
    major = version[0] if isinstance(version, (tuple, list)) else version
    row = flag_row(manifest, version)
    if row is None:
        flags = _legacy_flags(precision, qdq, calib, major)
    else:
        mib = (manifest.get("tensorrt") or {}).get("workspace_mib") or 1024
        flags = [row["workspace"].replace("{mib}", str(int(mib)))]
        if row.get("strongly_typed"):
            flags.append(row["strongly_typed"])
        elif precision in ("fp16", "int8"):
            flags.append(row["fp16"])
            if precision == "int8":
                flags.append(row["int8"])
                if calib and not qdq:
                    flags.append(row["calib"].replace("{calib}", calib))
    if plugin_lib:
        flags.append(plugin_flag(plugin_lib, major, row))
    return flags


def run_trtexec(trtexec, model_path, bundle, manifest, args, results):
    tag, major = trtexec_version(trtexec)
    version = version_from_tag(tag)
    tuple_version = version_tuple(tag)[:2] if tag else major
    results["backend"].update({"name": "trtexec", "version": version, "version_tag": tag, "path": trtexec})
    results["versions"]["tensorrt"] = version
    fd, times_path = tempfile.mkstemp(prefix="esq-times-", suffix=".json")
    os.close(fd)
    calib = os.path.join(bundle, (manifest.get("tensorrt") or {}).get("calibration_cache") or
                         "calib/calibration.cache")
    calib, calib_tmp = (None, None) if args.engine or not os.path.isfile(calib) else \
        calib_for_trtexec(calib, tag, results["warnings"])
    source = ["--loadEngine=" + args.engine] if args.engine else ["--onnx=" + model_path] + \
        trtexec_build_flags(manifest, calib, tuple_version, None)
    source += profile_flags(manifest, flag_row(manifest, tuple_version), calib is not None and
                            any(f.startswith("--calib=") for f in source), bool(args.engine))
    if args.plugin_lib:
        source.append(plugin_flag(args.plugin_lib, major, flag_row(manifest, tuple_version)))
    cmd = [trtexec] + source + ["--warmUp=%d" % args.warmup_ms, "--iterations=%d" % args.iterations,
                                "--duration=%d" % (args.duration or 0), "--exportTimes=" + times_path]
    results["backend"]["command"] = cmd
    log(" ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    tail = []
    reader = threading.Thread(target=lambda: [tail.append(ln.rstrip()) for ln in proc.stdout], daemon=True)
    reader.start()
    while proc.poll() is None:
        if STOP.wait(0.2):
            proc.terminate()
            proc.wait(10)
    reader.join(5)
    results["backend"]["log_tail"] = tail[-40:]
    try:
        with open(times_path) as fh:
            times = json.load(fh)
    except (IOError, OSError, ValueError):
        times = []
    finally:
        os.unlink(times_path)
        if calib_tmp:
            os.unlink(calib_tmp)
    if proc.returncode != 0 and not STOP.is_set():
        raise RunnerError("trtexec failed (exit %s): %s" % (proc.returncode, " | ".join(tail[-5:])), 6)
    rows = [t for t in times if isinstance(t, dict) and "latencyMs" in t]
    if rows:
        batch = input_specs(manifest)[0][1][0] if input_specs(manifest) and input_specs(manifest)[0][1] else 1
        results["runs"].append(make_run(batch, [float(t["latencyMs"]) for t in rows],
                                        [float(t.get("computeMs", 0)) for t in rows],
                                        [float(t.get("h2dMs", 0)) for t in rows],
                                        [float(t.get("d2hMs", 0)) for t in rows]))
    return len(rows)


def _engine_bytes(trt, logger, model_path, manifest, args, results):
    """The serialized engine: ``--engine``'s file, or one built here from the bundle's model."""
    if args.engine:
        with open(args.engine, "rb") as fh:
            return fh.read()
    precision = manifest.get("precision", "fp32")
    if precision == "int8" and "qdq" not in os.path.basename(model_path):
        results["warnings"].append("the TensorRT Python path builds INT8 from Q/DQ models only; this model has "
                                   "none, so the engine is built in FP16 (use trtexec with the calibration "
                                   "cache for INT8)")
        precision = "fp16"
    return build_plan(trt, logger, model_path, precision, shape_profile(manifest))


def _io_buffers(trt, cuda, np, engine, context, names, v3, rng):
    """Page-locked host and device buffers for every I/O tensor (inputs filled with seeded random data)."""
    bufs, inputs, outputs = [], [], []
    for i, name in enumerate(names):
        # the context's shapes: the engine's own for a static model, the set input shapes for a dynamic one
        shape = tuple(context.get_tensor_shape(name) if v3 else context.get_binding_shape(i))
        dtype = trt.nptype(engine.get_tensor_dtype(name) if v3 else engine.get_binding_dtype(i))
        is_input = (engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT) if v3 else engine.binding_is_input(i)
        host = cuda.pagelocked_empty(shape, dtype)
        if is_input:
            host[...] = rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f" else 0
        dev = cuda.mem_alloc(max(1, host.nbytes))
        bufs.append(int(dev))
        (inputs if is_input else outputs).append((host, dev))
        if v3:
            context.set_tensor_address(name, int(dev))
    return bufs, inputs, outputs


def run_trt_python(model_path, bundle, manifest, args, results):
    import ctypes

    import numpy as np
    import pycuda.autoinit  # noqa: F401 - creates the CUDA context
    import pycuda.driver as cuda
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    if args.plugin_lib:
        load_plugin_library(trt, ctypes, args.plugin_lib)
    trt.init_libnvinfer_plugins(logger, "")
    results["backend"].update({"name": "trt", "version": trt.__version__})
    results["versions"]["tensorrt"] = trt.__version__
    engine = trt.Runtime(logger).deserialize_cuda_engine(_engine_bytes(trt, logger, model_path, manifest, args,
                                                                       results))
    if engine is None:
        raise RunnerError("TensorRT could not deserialize the engine (built for another TensorRT or GPU?)", 6)
    context = engine.create_execution_context()
    rng = np.random.RandomState(args.seed)
    v3 = io_api(version_tuple_of(trt.__version__)) == "tensors" and hasattr(engine, "num_io_tensors")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)] if v3 else \
        [engine.get_binding_name(i) for i in range(engine.num_bindings)]
    set_dynamic_shapes(trt, cuda, engine, context, names, v3, {n: s for n, s, _ in input_specs(manifest)})
    bufs, inputs, outputs = _io_buffers(trt, cuda, np, engine, context, names, v3, rng)
    stream = cuda.Stream()
    ev = [cuda.Event() for _ in range(4)]
    h2d, compute, d2h = [], [], []

    def infer():
        ev[0].record(stream)
        for host, dev in inputs:
            cuda.memcpy_htod_async(dev, host, stream)
        ev[1].record(stream)
        if v3:
            context.execute_async_v3(stream.handle)
        else:
            context.execute_async_v2(bufs, stream.handle)
        ev[2].record(stream)
        for host, dev in outputs:
            cuda.memcpy_dtoh_async(host, dev, stream)
        ev[3].record(stream)
        ev[3].synchronize()
        return ev[1].time_since(ev[0]), ev[2].time_since(ev[1]), ev[3].time_since(ev[2])

    def keep(t):
        h2d.append(t[0])
        compute.append(t[1])
        d2h.append(t[2])

    wall = timed_loop(infer, args.warmup, args.iterations, args.duration, keep)
    if wall:
        # end-to-end latency from the same CUDA events (the host wall time is kept for reference)
        latency = [a + b + c for a, b, c in zip(h2d, compute, d2h)]
        batch = inputs[0][0].shape[0] if inputs and inputs[0][0].ndim else 1
        run = make_run(batch, latency, compute, h2d, d2h)
        run["host_wall_ms"] = series(wall)
        results["runs"].append(run)
    return len(wall)


def plugin_load_method(trt_version, exports_creators):
    """How the TensorRT Python API loads a plugin library: "registry" or "ctypes".

    From 10.0 a library is not expected to register itself when loaded: the plugin registry's
    load_library(path) loads it and registers what its exported getCreators (or getPluginCreators)
    returns, as trtexec's --dynamicPlugins does. A library without those exports (8.x style, static
    REGISTER_TENSORRT_PLUGIN) and every TensorRT 8.x take "ctypes": dlopen with RTLD_GLOBAL registers it.
    """
    return "registry" if version_tuple_of(trt_version)[0] >= 10 and exports_creators else "ctypes"


def load_plugin_library(trt, ctypes, path):
    """Load the plugin library ``path`` the way the running TensorRT expects (see plugin_load_method).

    Raises:
        RunnerError: the registry could not load it.
    """
    path = os.path.abspath(path)
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    exports = hasattr(lib, "getCreators") or hasattr(lib, "getPluginCreators")
    if plugin_load_method(trt.__version__, exports) == "registry":
        if trt.get_plugin_registry().load_library(path) is None:
            raise RunnerError("TensorRT could not load the plugin library %s (load_library)" % path, 6)
    return lib


def version_tuple_of(version):
    """(major, minor) of a version string such as '8.2.1.8' or '10.3.0'."""
    parts = [int(p) for p in re.findall(r"\d+", str(version))[:2]]
    return tuple(parts + [0] * (2 - len(parts)))


def set_dynamic_shapes(trt, cuda, engine, context, names, v3, shapes):
    """Run on optimization profile 0 with each dynamic input at ``shapes[name]``: set_input_shape (8.5+) or
    set_binding_shape (8.2), as edgesqueeze.backends.trt_plan.context_plan decides."""
    dynamic = []
    for i, name in enumerate(names):
        if v3:
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dims = engine.get_tensor_shape(name)
        else:
            is_input, dims = engine.binding_is_input(i), engine.get_binding_shape(i)
        if is_input and any(d < 0 for d in dims):
            dynamic.append((i, name))
    if not dynamic:
        return
    if hasattr(context, "set_optimization_profile_async"):
        stream = cuda.Stream()
        context.set_optimization_profile_async(0, stream.handle)
        stream.synchronize()
    for i, name in dynamic:
        if v3:
            context.set_input_shape(name, tuple(shapes[name]))
        else:
            context.set_binding_shape(i, tuple(shapes[name]))


def build_plan(trt, logger, model_path, precision, profile=None):
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(model_path, "rb") as fh:
        if not parser.parse(fh.read(), model_path):  # the path: a big model's external data is read next to it
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RunnerError("TensorRT's ONNX parser rejected the model: " + " | ".join(errors), 6)
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    else:
        config.max_workspace_size = 1 << 30
    if precision in ("fp16", "int8") and major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8" and major < 11:
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ in the model carries the scales
    if profile:  # dynamic inputs: one optimization profile, as build_engine.sh passes it to trtexec
        opt_profile = builder.create_optimization_profile()
        for name in sorted(profile):
            opt_profile.set_shape(name, *(tuple(profile[name][sel]) for sel in ("min", "opt", "max")))
        config.add_optimization_profile(opt_profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RunnerError("TensorRT failed to build an engine from %s" % model_path, 6)
    return bytes(plan)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description="edgesqueeze on-device benchmark (writes edgesqueeze.bench/1 JSON)")
    p.add_argument("--bundle", default=os.path.dirname(os.path.abspath(__file__)), help="bundle folder")
    p.add_argument("--out", required=True, help="results JSON to write")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10, help="warm-up iterations (ort, trt)")
    p.add_argument("--warmup-ms", type=int, default=500, help="warm-up time for trtexec (ms)")
    p.add_argument("--duration", type=float, default=0, help="run for S seconds instead of N iterations")
    p.add_argument("--backend", choices=("auto", "trtexec", "trt", "ort"), default="auto")
    p.add_argument("--engine", help="a serialized TensorRT engine to run (trtexec/trt)")
    p.add_argument("--plugin-lib", help="edgesqueeze plugin library to load (trtexec/trt)")
    p.add_argument("--model", help="model inside the bundle (default: the manifest's deploy model)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--ort-providers", default="", help="comma-separated onnxruntime execution providers")
    p.add_argument("--power", choices=("auto", "tegrastats", "none"), default="auto")
    p.add_argument("--power-interval-ms", type=int, default=100)
    p.add_argument("--idle-s", type=float, default=1.0, help="idle power baseline before the run (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle files")
    p.add_argument("--label", default="", help="a name for this run (e.g. the fleet device name)")
    p.add_argument("--pid-file", help="write this process's id here (lets the host stop the run)")
    return p.parse_args(argv)


def write_results(path, results):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    fd, tmp = tempfile.mkstemp(prefix=".results.", dir=folder)
    with os.fdopen(fd, "w") as fh:
        json.dump(results, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.rename(tmp, path)


def new_results(args):
    """The results dict before anything ran (schema, device facts, options)."""
    l4t = read_tegra_release()
    return {"schema": SCHEMA, "model": {}, "backend": {"name": None, "version": None, "precision": None},
            "device": {"profile": None, "hostname": socket.gethostname(), "arch": platform.machine(),
                       "l4t": l4t, "jetson": l4t is not None, "label": args.label or None},
            "versions": {"python": platform.python_version(), "runner": RUNNER_VERSION, "l4t": l4t},
            "options": {"iterations": args.iterations, "warmup": args.warmup, "duration": args.duration,
                        "backend": args.backend, "engine": args.engine, "threads": args.threads,
                        "seed": args.seed},
            "data": "random", "runs": [], "warnings": [], "partial": False, "started_at": now()}


def start_power(args, results):
    """Start tegrastats (and wait the idle baseline); returns ``(sampler or None, reason when None)``."""
    ts = shutil.which("tegrastats") or ("/usr/bin/tegrastats" if os.access("/usr/bin/tegrastats", os.X_OK)
                                        else None)
    if not ts:
        reason = "tegrastats not found on the device (not a Jetson?)"
        if args.power == "tegrastats":
            results["warnings"].append("--power tegrastats: " + reason)
        return None, reason
    sampler = Tegrastats(ts, args.power_interval_ms)
    sampler.start()
    STOP.wait(args.idle_s)
    return sampler, None


def main(argv=None):
    args = parse_args(argv)
    bundle = os.path.abspath(args.bundle)
    if args.pid_file:
        with open(args.pid_file, "w") as fh:
            fh.write("%d\n" % os.getpid())
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: STOP.set())
    results = new_results(args)
    sampler, window, reason, code = None, None, "power sampling disabled (--power none)", 0
    try:
        manifest = load_manifest(bundle)
        target = manifest.get("target") or {}
        rel = args.model or manifest.get("models", {}).get("deploy")
        if not rel or not os.path.isfile(os.path.join(bundle, rel)):
            raise RunnerError("the bundle has no deploy model (%s)" % rel, 3)
        precision = manifest.get("precision")
        results["device"]["profile"] = target.get("name")
        results["backend"]["precision"] = precision
        source = (manifest.get("source") or {}).get("name") or ""
        name = manifest.get("name") or (source[:-5] if source.endswith(".onnx") else source) or \
            os.path.basename(rel).split(".")[0]
        results["model"] = {"name": name, "path": rel,
                            "sha256": manifest.get("files", {}).get(rel, {}).get("sha256")}
        if not args.no_verify:
            verify_files(bundle, manifest)
        expects_trt = bool(target.get("tensorrt")) or target.get("kind") in ("jetson", "desktop")
        backend, trtexec = choose_backend(args.backend, results["warnings"], expects_trt)
        if backend == "ort" and precision in ("fp16", "int8") and expects_trt:
            results["warnings"].append("onnxruntime runs the %s model on the CPU: the numbers do not show %s "
                                       "speed on the GPU" % (precision, precision.upper()))
        if args.power != "none":
            sampler, reason = start_power(args, results)
        model_path = os.path.join(bundle, rel)
        start = sampler.rel() if sampler else None
        log("backend %s, %d iterations" % (backend, args.iterations))
        if backend == "ort":
            done = run_ort(model_path, manifest, args, results)
        elif backend == "trtexec":
            done = run_trtexec(trtexec, model_path, bundle, manifest, args, results)
        else:
            done = run_trt_python(model_path, bundle, manifest, args, results)
        if sampler:
            window = [start, sampler.rel()]
        if STOP.is_set():
            results["partial"] = True
            planned = "%g s run" % args.duration if args.duration else "%d-iteration run" % args.iterations
            results["warnings"].append("interrupted after %d timed iterations of a %s: partial results" % (
                done, planned))
            code = 130
    except RunnerError as exc:
        results["partial"] = True
        results["error"] = {"message": str(exc), "exit_code": exc.code}
        log("error: %s" % exc)
        code = exc.code
    except Exception as exc:  # noqa: BLE001 - keep what was measured, say what broke
        results["partial"] = True
        results["error"] = {"message": "%s: %s" % (type(exc).__name__, exc), "exit_code": 6}
        log("error: %s: %s" % (type(exc).__name__, exc))
        code = 6
    finally:
        if sampler:
            sampler.stop()
        results["power"] = power_section(sampler, window, reason)
        results["finished_at"] = now()
        write_results(args.out, results)
    return code


if __name__ == "__main__":
    sys.exit(main())
