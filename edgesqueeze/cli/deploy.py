"""``edgesqueeze deploy``: put a bundle on a device over SSH (and, with --bench, benchmark it there)."""
from __future__ import annotations

import sys

import click

from ..errors import InputError
from .common import emit, info, json_option, quiet, table, warn


# --devices: boards at once. The default, 50, is edgesqueeze.deploy.fleet.DEFAULT_MAX_PARALLEL (a test checks it;
# importing deploy here would slow every verb's --help).
max_parallel_option = click.option(
    "--max-parallel", type=int, default=None, metavar="N",
    help="--devices: at most N boards at once (a whole number >= 1; the others wait for a free slot). "
         "[default: 50]")


def check_fleet_options(fleet, max_parallel) -> None:
    """``--max-parallel`` goes with ``--devices`` and is a whole number >= 1 (InputError, exit 3, otherwise)."""
    if max_parallel is None:
        return
    if not fleet:
        raise InputError("--max-parallel goes with --devices (a fleet); one --device runs one board")
    from ..deploy.fleet import check_max_parallel

    check_max_parallel(max_parallel)


def _mib(n) -> str:
    return f"{(n or 0) / 2 ** 20:.1f} MiB"


def _progress(total: int):
    """A tqdm byte counter on stderr (None when quiet or not a terminal)."""
    if quiet() or not sys.stderr.isatty() or total <= 0:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="upload", file=sys.stderr, leave=False)
    return bar, bar.update


def engine_choice_text(c: dict) -> str:
    """One line for the device's plugin-versus-native engine timing: ``plugin 0.8 ms, native 1.3 ms: plugin``."""
    ms = lambda v: "?" if v is None else f"{v:g} ms"  # noqa: E731
    return f"plugin {ms(c.get('plugin_ms'))}, native {ms(c.get('native_ms'))} (median GPU compute): {c.get('chosen')}"


def deploy_text(r: dict) -> str:
    """The human summary of a deploy report."""
    p = r.get("probe") or {}
    f = r.get("files") or {}
    e = r.get("engine") or {}
    rows = [
        ["device", f"{r['device']} ({p.get('hostname')}, {p.get('arch')}, Python {p.get('python')})"],
        ["L4T / JetPack", f"{p.get('l4t') or '-'} / {p.get('jetpack') or '-'}"
                          + (f" ({p['device_tree_model']})" if p.get("device_tree_model") else "")],
        ["TensorRT / CUDA", f"{p.get('tensorrt') or '-'} / {p.get('cuda') or '-'}"],
        ["tools", ", ".join(f"{k}: {'yes' if p.get(k) else 'no'}" for k in
                            ("trtexec", "nvcc", "cmake", "onnxruntime", "tegrastats"))],
        ["free disk", _mib(p.get("free_bytes")) if p.get("free_bytes") is not None else "-"],
        ["target", f"{r.get('target')} ({r.get('precision')})"],
        ["files", f"{len(f.get('uploaded', []))} uploaded ({_mib(f.get('bytes_sent'))} sent), "
                  f"{len(f.get('resumed', {}))} resumed, {len(f.get('unchanged', []))} unchanged; "
                  f"{f.get('verified')} verified by sha256 on the device"],
        ["engine", (("cached: " if e.get("cached") else f"built in {e.get('seconds')} s: ") + e["path"])
         if e.get("path") else f"none ({e.get('reason')})"],
        *([["engine choice", engine_choice_text(e["engine_choice"])]] if e.get("engine_choice") else []),
        ["remote folder", r.get("remote_dir")],
        ["runner", f"{r.get('python')} {r.get('runner')}"],
    ]
    return "\n".join(f"{k:<16} {v}" for k, v in rows)


def bench_text(results: list) -> str:
    """One row per device and batch: backend, median/p90/p99 latency, throughput, status."""
    from ..deploy.device_runner import stats

    rows = []
    for r in results:
        dev = r.get("device") or {}
        status = "error" if r.get("error") else ("partial" if r.get("partial") else "ok")
        for run in r.get("runs") or [{}]:
            lat = run.get("latency_ms") or {}
            st = lat.get("stats") or stats(lat.get("samples") or []) or {}
            f = (lambda k: f"{st[k]:.3f}" if st.get(k) is not None else "-")
            thr = run.get("throughput_ips")
            rows.append([dev.get("label") or dev.get("hostname") or "?", dev.get("address", "-"),
                         (r.get("backend") or {}).get("name") or "-", run.get("batch", "-"), st.get("n", 0),
                         f("median"), f("p90"), f("p99"), f"{thr:.1f}" if thr else "-", status])
    return table(rows, ["device", "address", "backend", "batch", "n", "median ms", "p90 ms", "p99 ms", "inf/s",
                        "status"], "lllrrrrrrl")


@click.command("deploy")
@click.argument("bundle", type=click.Path())
@click.option("-d", "--device", metavar="USER@HOST[:PORT]", help="The device (or an alias from ~/.ssh/config).")
@click.option("--devices", "fleet", type=click.Path(exists=True), metavar="FLEET.TOML|INVENTORY",
              help="Several devices (a fleet.toml or an Ansible inventory): deploy and benchmark them in parallel.")
@click.option("--limit", default=None, metavar="PATTERN",
              help="--devices: only these hosts/groups (Ansible --limit pattern; fleet.toml: name patterns).")
@max_parallel_option
@click.option("-i", "--identity", type=click.Path(exists=True, dir_okay=False),
              help="SSH private key (ssh -i; with --devices, for the devices whose entry names none).")
@click.option("--port", type=int, help="SSH port (or put :PORT after the host).")
@click.option("--remote-dir", metavar="DIR", help="Bundle folder on the device (default ~/edgesqueeze/<bundle name>).")
@click.option("--force", is_flag=True, help="Deploy even when the device does not match the bundle's target.")
@click.option("--python", "python", default="python3", show_default=True, metavar="PATH",
              help="Python 3.6+ on the device (with --devices, where the entry names none).")
@click.option("--bench", is_flag=True, help="Benchmark on the device after deploying (always on with --devices).")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Local folder for results and the report.")
@click.option("-n", "--iterations", type=click.IntRange(min=1), default=100, show_default=True,
              help="Timed iterations (--bench).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Warm-up iterations (--bench).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Run for S seconds instead of N iterations (--bench).")
@click.option("--backend", type=click.Choice(["auto", "trtexec", "trt", "ort"]), default="auto", show_default=True,
              help="On-device backend; auto = trtexec, else TensorRT Python, else onnxruntime.")
@click.option("--power", type=click.Choice(["auto", "tegrastats", "none"]), default="auto", show_default=True,
              help="Power probe on the device (--bench; auto: tegrastats when the device has it).")
@click.option("--no-engine", is_flag=True, help="Do not build the TensorRT engine on the device.")
@click.option("--no-plots", is_flag=True, help="Write the report without PNG plots (--bench).")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds for each remote step.")
@click.option("--run-timeout", type=float, help="Seconds for the on-device benchmark run.")
@click.option("--connect-timeout", type=float, default=10, show_default=True, help="Seconds to connect.")
@click.option("--host-key-check", type=click.Choice(["accept-new", "yes", "no"]), default="accept-new",
              show_default=True, help="ssh StrictHostKeyChecking.")
@click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file to use instead of ~/.ssh's.")
@click.option("--record-host", is_flag=True,
              help="Keep host and user names, addresses and absolute paths in the results (left out by default).")
@click.option("--require-signature", "allowed_signers", type=click.Path(dir_okay=False), metavar="ALLOWED_SIGNERS",
              help="Refuse a bundle that is not signed by a key in this OpenSSH allowed-signers file.")
@json_option
def command(bundle, device, fleet, limit, max_parallel, identity, port, remote_dir, force, python, bench, output, iterations,
            warmup, duration, backend, power, no_engine, no_plots, timeout, run_timeout, connect_timeout,
            host_key_check, known_hosts, record_host, allowed_signers, as_json):
    """Deploy BUNDLE (a folder, or its .tar.gz from build --archive) to a Jetson over SSH.

    Uses the system's OpenSSH client, so ~/.ssh/config aliases, agents and jump hosts work.

    Probes the device (architecture, L4T -> JetPack -> TensorRT/CUDA, trtexec, nvcc, Python, free disk),
    refuses a device that does not match the bundle's target (--force: warn instead), uploads only files
    whose sha256 differs (an interrupted upload resumes), verifies every sha256 on the device, and builds
    the plugin library and the TensorRT engine there when trtexec exists (cached by TensorRT version,
    precision and model hash). With --bench it then runs the benchmark on the device, fetches the results
    and writes the report locally; Ctrl-C stops the remote run and keeps its partial results.

    \b
    Examples:
      edgesqueeze deploy bundle/ --device nvidia@tx2.local -i ~/.ssh/jetson
      edgesqueeze deploy bundle/ --device nvidia@10.0.0.7:2222 --bench -n 200 -o results/tx2
      edgesqueeze deploy bundle/ --devices fleet.toml -o results/fleet
      edgesqueeze deploy bundle/ --devices inventory.yml --limit 'orin:!orin-3' -o results/orin
      edgesqueeze deploy bundle/ --devices inventory.ini --max-parallel 8 -o results/lab
      edgesqueeze deploy bundle/ --device nvidia@orin.local --require-signature ~/.ssh/allowed_signers

    A bundle is code: build_engine.sh, a CMake project and the runner run on the device. Sign bundles with
    'edgesqueeze sign' (or build --sign) and deploy with --require-signature; an unsigned bundle is deployed
    with a warning.
    """
    from ..deploy import BenchInterrupted, deploy, fleet_bench, remote_bench

    if bool(device) == bool(fleet):
        raise InputError("give exactly one of --device USER@HOST[:PORT] or --devices FLEET.TOML")
    check_fleet_options(fleet, max_parallel)
    ssh = {"port": port, "connect_timeout": connect_timeout, "host_key_check": host_key_check,
           "known_hosts": known_hosts}
    bench_opts = {"iterations": iterations, "warmup": warmup, "duration": duration, "backend": backend,
                  "power": power, "run_timeout": run_timeout, "force": force, "timeout": timeout,
                  "python": python, "plots": not no_plots, "build_engine": not no_engine,
                  "allowed_signers": allowed_signers, "record_host": record_host}
    try:
        if fleet:
            ssh.pop("port")
            info(f"benchmarking {bundle} on the devices of {fleet} ...")
            if max_parallel is not None:
                bench_opts["max_parallel"] = max_parallel
            results = fleet_bench(bundle, fleet, out_dir=output, remote_dir=remote_dir, identity=identity, limit=limit,
                                  **bench_opts, **ssh)
            _report(results, output, as_json)
            return 0 if not any(r.get("error") for r in results) else 6
        if not bench:
            from ..deploy.sync import read_local_bundle

            from ..deploy.core import open_bundle

            with open_bundle(bundle) as folder:
                total = sum(f.size for f in read_local_bundle(folder)[1])
            bar, update = _progress(total)
            try:
                report = deploy(bundle, device, identity=identity, remote_dir=remote_dir, force=force,
                                timeout=timeout, python=python, build_engine=not no_engine, progress=update,
                                allowed_signers=allowed_signers, **ssh)
            finally:
                if bar is not None:
                    bar.close()
            for w in report["warnings"]:
                warn(w)
            emit(report, as_json, deploy_text)
            return 0
        results = remote_bench(bundle, device, identity=identity, remote_dir=remote_dir, out_dir=output,
                               **bench_opts, **ssh)
        _report([results], output, as_json)
        return 0
    except BenchInterrupted as exc:
        if exc.where:
            info(f"partial results kept in {exc.where}")
        raise KeyboardInterrupt from None


def _report(results: list, output, as_json: bool) -> None:
    for r in results:
        label = (r.get("device") or {}).get("label") or (r.get("device") or {}).get("address")
        for w in r.get("warnings") or []:
            warn(f"{label}: {w}")
        if r.get("error"):
            warn(f"{label}: {r['error'].get('message')}")
    emit(results if len(results) != 1 else results[0], as_json, lambda _: bench_text(results))
    if output and not as_json:
        info(f"results and report written to {output}")
