"""``edgesqueeze bench``: latency, power, bandwidth of a model or bundle, here or on a device over SSH."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..backends.trt_profile import parse_shape_sweep
from ..errors import InputError
from ..fileio import check_writable, refuse_overwrite, write_json_atomic
from .common import emit, info, input_shape_option, json_option, quiet, table, target_option, warn
from .deploy import check_fleet_options, max_parallel_option


def _warmup(text: str):
    """``"10"`` -> (10, None); ``"2s"`` / ``"0.5s"`` -> (0, 2.0)."""
    t = str(text).strip().lower()
    try:
        if t.endswith("s"):
            sec = float(t[:-1])
            if sec > 0:
                return 0, sec
        else:
            n = int(t)
            if n >= 0:
                return n, None
    except ValueError:
        pass
    raise click.BadParameter(f"expected a count like 10 or seconds like 2s, got '{text}'", param_hint="--warmup")


def _batches(text: str):
    try:
        out = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        out = []
    if not out or any(b < 1 for b in out):
        raise click.BadParameter(f"expected positive integers like 1,4,8, got '{text}'", param_hint="--batch")
    return out


def _shapes(text):
    if not text:
        return None
    try:
        return parse_shape_sweep(text)
    except InputError as exc:
        raise click.BadParameter(exc.message, param_hint="--shapes") from exc


class _Bar:
    """tqdm progress on stderr: iterations, or seconds with --duration."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.phase = None

    def __call__(self, phase, done, total):
        if not self.enabled:
            return
        if phase != self.phase:
            self.close()
            from tqdm import tqdm

            self.phase = phase
            self.bar = tqdm(total=total, desc=phase, unit="it" if isinstance(total, int) else "s", file=sys.stderr,
                            leave=False, bar_format=None if total else "{desc}")
        if self.bar is not None and total:
            self.bar.n = done if isinstance(total, int) else round(done, 1)
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def summary_text(result: dict) -> str:
    """The human summary the CLI prints for one result."""
    from ..bench.report import summary_rows

    rows = summary_rows([result])
    b = result["backend"]
    opt = f", graph optimizations: {b['optimization']}" if b.get("optimization") else ""
    head = (f"{result['model']['name']} on {result['device']['profile']} ({b['name']} {b.get('version') or ''} "
            f"{b.get('precision') or ''}{opt}), data: {result.get('data')}")
    if result["device"].get("board_state"):
        from ..bench.boardstate import describe_board_state
        head += "\n" + describe_board_state(result["device"]["board_state"])
    choice = ((result.get("deploy") or {}).get("engine") or {}).get("engine_choice")
    if choice:  # custom nodes: the plugin engine and the native one, timed on the device; the faster runs
        from .deploy import engine_choice_text
        head += "\nengine choice: " + engine_choice_text(choice)
    lat = table([[r["shape"] or r["batch"], r["n"], f"{r['mean_ms']:.4f}", f"{r['median_ms']:.4f}", f"{r['p90_ms']:.4f}",
                  f"{r['p99_ms']:.4f}", f"{r['cv']:.1%}", f"{r['throughput_ips']:.1f}",
                  "-" if r["avg_w"] is None else f"{r['avg_w']:.2f}",
                  "-" if r["mj_per_inf"] is None else f"{r['mj_per_inf']:.3g}",
                  "-" if r["analytic_gbs"] is None else f"{r['analytic_gbs']:.3g}",
                  "-" if r["roof_fraction"] is None else f"{r['roof_fraction']:.0%} {r['bound']}"]
                 for r in rows],
                ["shape" if any(r["shape"] for r in rows) else "batch", "n", "mean ms", "median ms", "p90 ms", "p99 ms", "cv", "inf/s", "W", "mJ/inf", "GB/s*",
                 "roofline"])
    p = result.get("power") or {}
    lines = [head, lat, "* analytic: bytes that must move / median latency (a lower bound)",
             "power: " + (f"{p.get('probe')} ({p.get('total_source')})" if p.get("available")
                          else p.get("reason", "not measured"))]
    lines += [f"warning: {w}" for w in result.get("warnings") or []]
    return "\n".join(lines)


def _label_partial(result: dict, where=None) -> dict:
    """Mark an interrupted run's results as partial, saying so in its warnings (the JSON keeps the samples)."""
    result = dict(result)
    result["partial"] = True
    note = "interrupted (Ctrl-C)" + (f" during {where}" if where else "") + ": partial results"
    warnings = list(result.get("warnings") or [])
    result["warnings"] = warnings if any("interrupted" in w for w in warnings) else warnings + [note]
    return result


@click.command("bench")
@click.argument("path", type=click.Path())
@click.option("--backend", type=click.Choice(["ort", "trt", "trtexec", "auto"]), default=None,
              help="ort: onnxruntime on the CPU (default here); trt: TensorRT (the trt extra and a GPU); on a "
                   "device (--device/--devices) also trtexec, and auto (default there: trtexec, TensorRT or "
                   "onnxruntime, whichever the device has).")
@click.option("-n", "--iterations", type=click.IntRange(min=1), default=100, show_default=True,
              help="Timed iterations per batch size.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Time each batch size for S seconds instead of a fixed count (better for power).")
@click.option("--warmup", default="10", show_default=True, metavar="N|Ss",
              help="Warm-up: N iterations, or seconds with an s suffix (--warmup 2s).")
@click.option("--batch", "batch", default="1", show_default=True, metavar="1,4,8", help="Batch sizes to sweep.")
@click.option("--shapes", "shapes", default=None, callback=lambda ctx, param, v: _shapes(v),
              metavar="NAME:DIMS,NAME:DIMS",
              help="Input shapes to sweep instead of --batch, for a model with dynamic inputs (one row per shape; "
                   "a name that comes again starts the next shape). TensorRT gets one profile covering them all.")
@click.option("--power", type=click.Choice(["auto", "tegrastats", "ina3221", "nvml", "rapl", "none"]),
              default="auto", show_default=True, help="Power probe (auto: the first that works here).")
@click.option("--power-interval", type=click.FloatRange(min=1), default=50.0, show_default=True, metavar="MS",
              help="Power sampling interval in milliseconds.")
@target_option
@click.option("--data", default=None, metavar="FILE", help="Input data (.npz/.npy/image folder); default random.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime intra-op threads.")
@click.option("--ort-opt", "ort_opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all",
              show_default=True, help="onnxruntime graph optimizations (all = as a deployment runs it; "
                                      "disable = exactly the graph in the file).")
@click.option("--profile-layers", is_flag=True, help="onnxruntime: record per-node times (adds its own cost).")
@input_shape_option
@click.option("-o", "--output", type=click.Path(), default=None, help="Write the results JSON here.")
@click.option("--report", "report_dir", type=click.Path(), default=None, metavar="DIR",
              help="Write report.md and PNG plots into DIR.")
@click.option("--device", default=None, metavar="USER@HOST[:PORT]",
              help="Run on this device over SSH (deploys first; or an alias from ~/.ssh/config).")
@click.option("--devices", "fleet", type=click.Path(), default=None, metavar="FLEET.TOML|INVENTORY",
              help="Run on every device of a fleet file or an Ansible inventory, in parallel.")
@click.option("--limit", default=None, metavar="PATTERN",
              help="--devices: only these hosts/groups (Ansible --limit pattern; fleet.toml: name patterns).")
@max_parallel_option
@click.option("--identity", type=click.Path(), default=None, metavar="FILE",
              help="SSH private key (--device; with --devices, for the devices whose entry names none).")
@click.option("--known-hosts", type=click.Path(), default=None, metavar="FILE",
              help="known_hosts file to use instead of ~/.ssh's (--device/--devices).")
@click.option("--python", "remote_python", default=None, metavar="PATH",
              help="Python 3.6+ on the device (default python3; with --devices, where the entry names none).")
@click.option("--record-host", is_flag=True,
              help="Keep host and user names, addresses and absolute paths in the results (left out by default).")
@json_option
def command(path, backend, iterations, duration, warmup, batch, shapes, power, power_interval, target, data, threads,
            ort_opt, profile_layers, input_shapes, output, report_dir, device, fleet, limit, max_parallel, identity, known_hosts,
            remote_python, record_host, as_json):
    """Benchmark a model or bundle: latency statistics, throughput, power and energy, memory bandwidth.

    Every latency sample is kept; the results JSON (schema edgesqueeze.bench/1) carries them with the device,
    versions and options. Power is measured when a probe exists (tegrastats, INA3221, NVML, RAPL), with an
    idle baseline first; otherwise the results say why not.

    \b
    Examples:
      edgesqueeze bench examples/digits/digits_cnn.onnx
      edgesqueeze bench bundle/ --batch 1,4,8 --iterations 500 -o results.json --report report/
      edgesqueeze bench bundle/ --backend trt --duration 10 --power tegrastats
      edgesqueeze bench yolo.onnx --shapes images:1x3x320x320,images:1x3x640x640     # dynamic input
      edgesqueeze bench bundle/ --device nvidia@jetson.local --identity ~/.ssh/jetson -o tx2.json
      edgesqueeze bench bundle/ --devices fleet.toml --report fleet-report/
      edgesqueeze bench bundle/ --devices inventory.ini --limit lab --report lab-report/
      edgesqueeze bench bundle/ --devices inventory.ini --max-parallel 8 -o lab.json
    """
    batches = _batches(batch)
    warmup, warmup_s = _warmup(warmup)
    backend = _check_options(path, backend, device, fleet, profile_layers, output, data, report_dir)
    check_fleet_options(fleet, max_parallel)
    bar = _Bar(enabled=not quiet() and sys.stderr.isatty())
    remote_report = False
    if device or fleet:
        if batches != [1] or shapes or data or threads or profile_layers:
            warn("--batch, --shapes, --data, --threads and --profile-layers apply to local runs; the on-device "
                 "runner runs the bundle's model as built (a dynamic input at its profile's opt shape)")
        if warmup_s:
            warn("--warmup in seconds applies to local runs; the device runner warms up 10 iterations")
            warmup = 10
        opts = dict(iterations=iterations, warmup=warmup, duration=duration, power=power, backend=backend or "auto")
        if known_hosts:
            opts["known_hosts"] = known_hosts
        opts["record_host"] = record_host
        if identity:
            opts["identity"] = identity
        if remote_python:
            opts["python"] = remote_python
        if device:
            results, remote_report = _bench_device(path, device, report_dir, opts)
            if results is None:
                return 130
        else:
            from ..deploy import fleet_bench

            info(f"benchmarking {path} on the devices of {fleet} ...")
            if max_parallel is not None:
                opts["max_parallel"] = max_parallel
            results = fleet_bench(path, fleet, limit=limit, **opts)
    else:
        from ..bench.api import bench
        from ..model import parse_input_shapes

        if shapes and (batches != [1] or input_shapes):
            raise InputError("--shapes sweeps the input shapes: give it without --batch and --input")
        sweep = f"{len(shapes)} shape(s)" if shapes else f"batch {','.join(map(str, batches))}"
        line = (f"benchmarking {path} with {backend} ({sweep}, "
                f"{f'{duration:g} s' if duration else f'{iterations} iterations'} each, power: {power}) ...")
        try:  # the line comes once the model and data load: a bad input stays a one-line error
            results = [bench(path, backend=backend, iterations=iterations, duration=duration, warmup=warmup,
                             warmup_s=warmup_s, announce=lambda: info(line),
                             batch_sizes=batches, power=power, target=target, data=data, threads=threads,
                             input_shapes=parse_input_shapes(input_shapes), progress=bar,
                             power_interval_ms=power_interval, shapes=shapes,
                             **({"profile_layers": profile_layers, "optimization": ort_opt}
                                if backend == "ort" else {}))]
        finally:
            bar.close()
    if not record_host:
        from ..bench.schema import redact_personal

        results = [redact_personal(r) for r in results]
    return _finish(results, output, report_dir if not (device and remote_report) else None, as_json)


def _check_options(path, backend, device, fleet, profile_layers, output, data, report_dir):
    """Check the options before anything runs; return the backend (``ort`` by default for a local run)."""
    if not (device or fleet):
        backend = backend or "ort"
        if backend not in ("ort", "trt"):
            raise InputError(f"--backend {backend} runs on a device only (with --device or --devices); "
                             "here use ort or trt")
    if device and fleet:
        raise InputError("give --device or --devices, not both")
    if profile_layers and backend not in (None, "ort"):
        raise InputError("--profile-layers is for --backend ort (for TensorRT use trtexec --exportProfile and "
                         "'edgesqueeze report times.json --trtexec-profile profile.json')")
    if not Path(path).exists():  # before the progress line: a bad input is a one-line error
        raise InputError("no such file or folder", path=str(path))
    if not (device or fleet):
        _check_local_bundle(Path(path))
    if output:  # where results go is checked before the benchmark, not after it
        refuse_overwrite(output, path, data if data and data != "random" else None)
        check_writable(output)
    if report_dir:
        if Path(report_dir).is_file():
            raise InputError("the report folder is a file; give a folder (created when absent)",
                             path=str(report_dir))
        check_writable(Path(report_dir) / "report.md")
    return backend


def _check_local_bundle(path: Path) -> None:
    """A bundle is checked like ``verify`` does before anything in it runs; an archive is named as one."""
    if path.is_dir():
        from ..bundle import verify_bundle

        verify_bundle(path)
    elif path.name.endswith((".tar.gz", ".tgz")):
        raise InputError("this is a bundle archive: bench runs a bundle folder or an .onnx model here",
                         path=str(path), hint=f"extract it first (tar xzf {path.name}), or bench it on a device "
                                              "with --device (deploy unpacks archives)")


def _bench_device(path, device, report_dir, opts):
    """Benchmark on one device: ``(results, report written there)``; ``(None, False)`` when Ctrl-C came first."""
    from ..deploy import remote_bench
    from ..deploy.remote import BenchInterrupted

    info(f"benchmarking {path} on {device} ...")
    try:  # with an out dir, remote_bench writes results.json + report there, partial ones too
        return [remote_bench(path, device, out_dir=report_dir, **opts)], bool(report_dir)
    except BenchInterrupted as exc:
        if not exc.results:
            warn("interrupted before the device returned any result")
            return None, False
        return [_label_partial(exc.results, getattr(exc, "where", None))], False  # the CLI writes the report


def _finish(results, output, report_dir, as_json) -> int:
    """Write the results JSON and the report, print the summary, and return the exit code."""
    from ..bench.report import write_report

    good = [r for r in results if r.get("runs")]
    for r in results:
        if not r.get("runs"):
            err = r.get("error") or {}
            warn(f"{(r.get('device') or {}).get('label') or (r.get('device') or {}).get('hostname')}: "
                 f"no results ({err.get('message', 'failed')})")
    if output:
        if len(results) == 1:
            write_json_atomic(output, results[0])
        else:
            write_json_atomic(output, results)
        info(f"wrote {output}")
    if report_dir and good:
        written = write_report(good, report_dir)
        info(f"wrote {written['report']}" + (f" and {len(written) - 1} plot(s)" if len(written) > 1 else ""))
    if any(r.get("partial") for r in results):
        warn("the benchmark was interrupted: the results are partial")
    payload = results[0] if len(results) == 1 else results
    emit(payload, as_json, lambda _: "\n\n".join(summary_text(r) for r in good))
    if not good:
        return 6
    return 130 if any(r.get("partial") for r in results) else 0
