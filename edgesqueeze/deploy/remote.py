"""``remote_bench``: deploy if needed, run the on-device runner, fetch its results, render the report here."""
from __future__ import annotations

import json
import shlex
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from ..bench.report import write_report
from ..bench.schema import redact_personal, validate_result
from ..errors import DeviceError, EdgeSqueezeError, VerificationError
from ..fileio import write_json_atomic, write_text_atomic
from .core import (DEFAULT_ENGINE_CACHE, _shell_path, default_remote_dir, deploy, open_bundle, open_transport,
                   remote_path)
from .device_runner import stats

RESULTS_DIR = ".edgesqueeze/results"
_REPORT_LOCK = threading.Lock()  # matplotlib is not thread-safe: fleet threads render one at a time
PID_FILE = ".edgesqueeze/run.pid"


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a cancel event) stopped a remote benchmark; ``results`` holds what was measured."""

    def __init__(self, results: Optional[dict], where: Optional[str] = None):
        super().__init__("remote benchmark interrupted")
        self.results = results
        self.where = where


def remote_bench(bundle_dir, device: str, *, iterations: int = 100, warmup: int = 10,
                 duration: Optional[float] = None, backend: str = "auto", power: str = "auto",
                 out_dir=None, run_timeout: Optional[float] = None, deploy_first: bool = True,
                 label: Optional[str] = None, cancel: Optional[threading.Event] = None,
                 identity: Optional[str] = None, remote_dir: Optional[str] = None, force: bool = False,
                 timeout: float = 600, python: str = "python3", runner_args=(), build_engine: bool = True,
                 engine_cache: str = DEFAULT_ENGINE_CACHE, build_env: Optional[dict] = None, plots: bool = True,
                 progress: Optional[Callable[[int], None]] = None, allowed_signers: Optional[str] = None,
                 record_host: bool = False, **transport_opts) -> dict:
    """Benchmark a bundle on a device over SSH and return the results (``edgesqueeze.bench/1``).

    Deploys first (only changed files travel; see :func:`deploy`), runs ``run_on_device.py`` there with a
    wall-clock limit, fetches its results JSON and, with ``out_dir``, writes ``results.json`` and the report
    (helper E's :func:`edgesqueeze.bench.report.write_report` when installed, a Markdown summary otherwise).

    Args:
        bundle_dir (a folder or a .tar.gz), device, identity, remote_dir, force, timeout, python, build_engine, engine_cache, build_env, transport
            options: as for deploy.
        iterations, warmup, duration, backend, power: passed to the on-device runner.
        out_dir: local folder for results.json and the report (None: only return the results).
        plots: draw the report's PNG plots (needs matplotlib; False writes the Markdown only).
        run_timeout: seconds for the on-device run (default: generous, from iterations/duration).
        deploy_first: deploy (a no-op when up to date) before running.
        label: a name for this device in reports (fleet runs use the fleet name).
        cancel: an event; setting it stops the remote run like Ctrl-C does.
        runner_args: extra command-line arguments for the runner.
        allowed_signers: require the bundle's signature by one of these keys (see :func:`deploy`).
        record_host: keep the device's address, host and user names and absolute paths in the results (they
            are left out by default; the device is identified by its board model and L4T/JetPack release).

    Returns:
        The results dict, with ``device.address``, ``device.label`` and ``deploy`` (the deploy report) added.

    Raises:
        BenchInterrupted (a KeyboardInterrupt): Ctrl-C or ``cancel``; the remote run was stopped and its partial
            results (``"partial": true``) are in ``exc.results`` and, with ``out_dir``, on disk.
        DeviceError / VerificationError: as for deploy, or the run failed or timed out (partial results kept).
    """
    with open_bundle(bundle_dir) as folder:
        return _remote_bench(folder, device, iterations, warmup, duration, backend, power, out_dir, run_timeout,
                             deploy_first, label, cancel, identity, remote_dir, force, timeout, python, runner_args,
                             build_engine, engine_cache, build_env, plots, progress,
                             dict(transport_opts, allowed_signers=allowed_signers, record_host=record_host))


def _remote_bench(bundle_dir, device, iterations, warmup, duration, backend, power, out_dir, run_timeout,
                  deploy_first, label, cancel, identity, remote_dir, force, timeout, python, runner_args,
                  build_engine, engine_cache, build_env, plots, progress, transport_opts) -> dict:
    allowed_signers = transport_opts.pop("allowed_signers", None)
    record_host = transport_opts.pop("record_host", False)
    rdir = remote_path(remote_dir, default_remote_dir(bundle_dir))
    tr = open_transport(device, identity=identity, **transport_opts)
    try:
        report = None
        if deploy_first:
            report = deploy(bundle_dir, device, remote_dir=rdir, force=force, timeout=timeout, python=python,
                            progress=progress, transport=tr, build_engine=build_engine, engine_cache=engine_cache,
                            build_env=build_env, allowed_signers=allowed_signers)
        runner = report["runner"] if report else _find_runner(tr, rdir)
        run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
        out = f"{RESULTS_DIR}/{run_id}.json"
        args = ["--bundle", ".", "--out", out, "--pid-file", PID_FILE, "--iterations", str(iterations),
                "--warmup", str(warmup), "--backend", backend, "--power", power]
        if duration:
            args += ["--duration", str(duration)]
        if label:
            args += ["--label", label]
        engine = (report or {}).get("engine") or {}
        extra = ""
        if engine.get("path") and backend in ("auto", "trtexec", "trt"):
            extra = f" --engine {_shell_path(engine['path'])}"
            if engine.get("plugin_lib"):
                args += ["--plugin-lib", engine["plugin_lib"]]
        args += list(runner_args)
        cmd = (f"cd {shlex.quote(rdir)} && mkdir -p {RESULTS_DIR} && exec {shlex.quote(python)} {runner} "
               + " ".join(shlex.quote(a) for a in args) + extra)
        limit = run_timeout or (120 + (duration or 0) * 2 + iterations * 2)
        stopped = None
        try:
            res = tr.run(cmd, timeout=limit, check=False, what="on-device benchmark", cancel=cancel)
        except KeyboardInterrupt:
            stopped = "interrupted from the host (Ctrl-C)"
        except DeviceError as exc:
            if "timed out" not in exc.message:
                raise
            stopped = f"the on-device run timed out after {limit:g} s"
        if stopped:
            _stop_remote(tr, rdir)
            results = _fetch(tr, rdir, out, wait=15)
            if results is not None:
                results["partial"] = True
                results.setdefault("warnings", []).append(f"stopped: {stopped}; partial results")
                results = finalise_results(results, str(tr.address), report, label, record_host)
                save_results(results, out_dir, plots)
            if "Ctrl-C" in stopped:
                raise BenchInterrupted(results, str(out_dir) if out_dir else None)
            raise DeviceError(f"{stopped} on {tr.address}" + (f"; partial results in {out_dir}" if
                              results is not None and out_dir else ""),
                              hint="raise run_timeout (--run-timeout) or lower --iterations")
        results = _fetch(tr, rdir, out, wait=0)
        if results is None:
            raise DeviceError(f"the on-device runner wrote no results on {tr.address} (exit {res.returncode}): "
                              f"{' '.join(res.stderr.strip().splitlines()[-3:])}")
        results = finalise_results(results, str(tr.address), report, label, record_host)
        save_results(results, out_dir, plots)
        err = results.get("error")
        if err:
            cls = VerificationError if err.get("exit_code") == 7 else DeviceError
            raise cls(f"the on-device run failed on {tr.address}: {err.get('message')}",
                      hint="redeploy to repair the bundle" if cls is VerificationError else None)
        return results
    finally:
        tr.close()


def _find_runner(tr, rdir: str) -> str:
    q = shlex.quote(rdir)
    res = tr.run(f"cd {q} && (test -f run_on_device.py && echo run_on_device.py || echo .edgesqueeze/run_on_device.py)",
                 timeout=60, what="runner lookup")
    return res.text.strip()


def _stop_remote(tr, rdir: str) -> None:
    """Send SIGTERM to the on-device runner (its pid file names it); it writes partial results and exits."""
    q = shlex.quote(f"{rdir}/{PID_FILE}")
    try:
        tr.run(f"test -f {q} && kill -TERM $(cat {q}) 2>/dev/null; true", timeout=20, check=False,
               what="stopping the on-device run")
    except EdgeSqueezeError:
        pass


def _fetch(tr, rdir: str, out: str, wait: float) -> Optional[dict]:
    path = shlex.quote(f"{rdir}/{out}")
    deadline = time.monotonic() + wait
    while True:
        try:
            res = tr.run(f"cat {path}", timeout=120, check=False, what="fetching results")
        except EdgeSqueezeError:
            return None
        if res.returncode == 0 and res.stdout.strip():
            try:
                return json.loads(res.text)
            except ValueError:
                pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def finalise_results(results: dict, address: str, report: Optional[dict], label: Optional[str],
                     record_host: bool) -> dict:
    """Annotate (address, label, deploy report), validate and (unless ``record_host``) strip user and host names
    and absolute paths: what every path that fetches a device's results does with them."""
    _annotate(results, address, report, label)
    results = normalise(results)
    return results if record_host else redact_personal(results)


def _annotate(results: dict, address: str, report: Optional[dict], label: Optional[str]) -> None:
    dev = results.setdefault("device", {})
    dev["address"] = address
    if label:
        dev["label"] = label
    # what reports print for the device (helper E's report reads display_name): fleet name, host, address
    dev["display_name"] = (f"{label}: " if label else "") + f"{dev.get('hostname') or '?'} at {address}"
    if report:
        dev["probe"] = report.get("probe")
        results["deploy"] = {k: report.get(k) for k in ("remote_dir", "files", "engine", "warnings", "seconds")}
        for w in report.get("warnings") or []:
            if w not in results.setdefault("warnings", []):
                results["warnings"].append(f"deploy: {w}")


def normalise(results: dict) -> dict:
    """Validate fetched results with the bench schema.

    The validator fills in missing statistics and parses raw tegrastats lines into a power summary. Results
    that do not validate (e.g. a run stopped before its first sample) are returned as they are, with a
    warning saying why.
    """
    try:
        return validate_result(results)
    except EdgeSqueezeError as exc:
        if results.get("runs"):
            results.setdefault("warnings", []).append(f"results do not validate: {exc.one_line()}")
        return results


def save_results(results: dict, out_dir, plots: bool = True) -> None:
    """Write one device's results.json and its report (or, without runs, a summary) into ``out_dir``."""
    if out_dir is None:
        return
    out = Path(out_dir)
    write_json_atomic(out / "results.json", results)
    if results.get("runs"):
        render_report([results], out, plots=plots)
    else:
        write_text_atomic(out / "report.md", markdown_summary([results]))


def render_report(results: List[dict], out_dir, plots: bool = True) -> Path:
    """Write the report for ``results`` into ``out_dir``; return the Markdown file's path.

    Uses :func:`edgesqueeze.bench.report.write_report`.
    """
    out = Path(out_dir)
    with _REPORT_LOCK:
        written = write_report(results, out, plots=plots)
    return Path(written["report"])


def markdown_summary(results: List[dict]) -> str:
    """A small Markdown table of one row per run (device, backend, precision, latency stats, throughput)."""
    lines = ["# edgesqueeze benchmark", "",
             "| device | address | backend | precision | batch | n | median ms | p90 ms | p99 ms | mean ms | "
             "throughput /s | status |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    notes = []
    for r in results:
        dev = r.get("device") or {}
        name = dev.get("label") or dev.get("hostname") or "?"
        status = "error" if r.get("error") else ("partial" if r.get("partial") else "ok")
        runs = r.get("runs") or [{}]
        for run in runs:
            lat = (run.get("latency_ms") or {})
            st = lat.get("stats") or stats(lat.get("samples") or [])
            cell = (lambda k: f"{st[k]:.3f}" if st and st.get(k) is not None else "-")
            thr = run.get("throughput_ips")
            lines.append(f"| {name} | {dev.get('address', '-')} | {(r.get('backend') or {}).get('name') or '-'} | "
                         f"{(r.get('backend') or {}).get('precision') or '-'} | {run.get('batch', '-')} | "
                         f"{st['n'] if st else 0} | {cell('median')} | {cell('p90')} | {cell('p99')} | "
                         f"{cell('mean')} | {f'{thr:.1f}' if thr else '-'} | {status} |")
        for w in r.get("warnings") or []:
            notes.append(f"- {name}: {w}")
        if r.get("error"):
            notes.append(f"- {name}: error: {r['error'].get('message')}")
    if notes:
        lines += ["", "## Warnings", ""] + notes
    return "\n".join(lines) + "\n"
