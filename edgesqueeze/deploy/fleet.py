"""Fleet runs: the same bundle benchmarked on several devices in parallel, merged into one comparison report.

``fleet.toml``::

    [[device]]
    name = "tx2-lab"                 # the label in reports (required, unique)
    host = "nvidia@10.0.0.12"        # user@host[:port] or an ssh config alias (required)
    target = "tx2"                   # the device's profile (checked against the probe and the bundle)
    port = 22                        # optional, overrides a port in host
    user = "nvidia"                  # optional, when host has no user@
    identity = "~/.ssh/jetson_ed25519"
    remote_dir = "edgesqueeze/digits"  # optional
    python = "python3"               # optional
    bundle = "bundles/tx2"           # optional: a bundle for this device instead of the shared one
    ssh_options = ["ProxyJump=bastion"]  # optional: extra ssh -o options

An Ansible inventory (INI, YAML or a folder) works in place of fleet.toml: see ``ansible_inventory.py``.
"""
from __future__ import annotations

import fnmatch
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

from .._lazy import require
from ..devices import profile_names
from ..errors import EdgeSqueezeError, InputError
from ..fileio import write_json_atomic, write_text_atomic
from .ansible_inventory import looks_like_inventory, read_inventory
from .ssh import DeviceAddress, parse_device
from .remote import BenchInterrupted, markdown_summary, remote_bench, render_report

DEVICE_KEYS = {"name", "host", "target", "port", "user", "identity", "remote_dir", "python", "bundle", "force",
               "ssh_options"}
# Boards at work at once, for both paths (--max-parallel here, the playbook's forks): each active board holds
# ~3 processes, a few fds and ~5 MiB in the controller, so 50 stays far below the common 1,024-fd soft limit
# (docs/deploy.md, "Scale").
DEFAULT_MAX_PARALLEL = 50


def check_max_parallel(n) -> int:
    """Return ``n`` when it is a whole number >= 1 (boards at once); raise :class:`InputError` otherwise."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"--max-parallel must be a whole number >= 1 (boards at once), got {n!r}",
                         hint=f"the default is {DEFAULT_MAX_PARALLEL}; 1 runs the boards one after another")
    return n


def _load_toml(path: Path) -> dict:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - older Pythons
        tomllib = require("tomli", "reading fleet.toml on Python < 3.11")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise InputError(f"cannot read the fleet file: {exc.strerror}", path=str(path)) from exc
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise InputError(f"not valid TOML: {exc}", path=str(path)) from exc


def read_fleet(path, limit: Optional[str] = None) -> List[dict]:
    """Read and check a fleet: ``fleet.toml`` or an Ansible inventory; return one dict per device.

    Args:
        path: a fleet.toml (keys as in the module docstring) or an Ansible inventory (INI, YAML or a folder;
            see :mod:`edgesqueeze.deploy.ansible_inventory`), told apart by :func:`looks_like_inventory`.
        limit: keep only these devices: an Ansible ``--limit`` pattern for an inventory; for fleet.toml,
            comma- or colon-separated name patterns (``board-*``, ``!board-3``).

    Raises:
        InputError: unreadable TOML or inventory, no devices (or none matching ``limit``), a device without
            name or host, a duplicate name, an unknown key, an unknown target profile, or a bad host, user or port.
        MissingDependencyError: an inventory without ansible-core installed.
    """
    path = Path(path)
    if looks_like_inventory(path):
        devices, base = read_inventory(path, limit), None
    else:
        devices, base = _limit_names(_toml_devices(path), limit, path), path.parent
    known = set(profile_names())
    seen: set = set()
    return [_check_device(dev, f"device #{i + 1}", path, base, known, seen) for i, dev in enumerate(devices)]


def _toml_devices(path: Path) -> list:
    data = _load_toml(path)
    devices = data.get("device", data.get("devices"))
    if isinstance(devices, dict):  # [devices.NAME] tables
        devices = [dict(v, name=v.get("name", k)) for k, v in devices.items()]
    if not devices or not isinstance(devices, list):
        raise InputError("no devices: add [[device]] tables with name and host", path=str(path))
    return devices


def _limit_names(devices: list, limit: Optional[str], path: Path) -> list:
    if not limit:
        return devices
    pats = [p.strip() for p in re.split(r"[,:]", limit) if p.strip()]
    keep = [p for p in pats if not p.startswith("!")] or ["*"]
    drop = [p[1:] for p in pats if p.startswith("!")]
    out = [d for d in devices if isinstance(d, dict)
           and any(fnmatch.fnmatchcase(str(d.get("name")), p) or p == "all" for p in keep)
           and not any(fnmatch.fnmatchcase(str(d.get("name")), p) for p in drop)]
    if not out:
        raise InputError(f"no devices: --limit {limit!r} matched no device name", path=str(path))
    return out


def _check_device(dev, where: str, path: Path, base: Optional[Path], known: set, seen: set) -> dict:
    """One device checked and normalised (``device`` = user@host:port); paths resolved against ``base``."""
    if not isinstance(dev, dict):
        raise InputError(f"{where} is not a table", path=str(path))
    unknown = sorted(set(dev) - DEVICE_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(DEVICE_KEYS))})",
                         path=str(path))
    for key in ("name", "host"):
        if not dev.get(key):
            raise InputError(f"{where}: '{key}' is required", path=str(path))
    if dev["name"] in seen:
        raise InputError(f"{where}: duplicate name '{dev['name']}'", path=str(path))
    seen.add(dev["name"])
    if dev.get("target") and dev["target"] not in known:
        raise InputError(f"{where} ({dev['name']}): unknown target '{dev['target']}' "
                         f"(see 'edgesqueeze devices')", path=str(path))
    d = dict(dev)
    host = str(d["host"])
    if d.get("user") and "@" not in host:
        host = f"{d['user']}@{host}"
    try:
        addr = parse_device(host)
        if d.get("port") is not None:
            addr = DeviceAddress(addr.host, addr.user, int(d.pop("port")))
    except (InputError, ValueError) as exc:
        raise InputError(f"{where} ({dev['name']}): bad host or port: {exc}", path=str(path)) from exc
    d["device"] = str(addr)
    opts = d.get("ssh_options")
    if opts is not None and (not isinstance(opts, list) or not all(isinstance(o, str) and o for o in opts)):
        raise InputError(f"{where} ({dev['name']}): ssh_options must be a list of 'Key=Value' strings",
                         path=str(path))
    for key in ("identity", "bundle"):
        if d.get(key):
            p = Path(os.path.expanduser(str(d[key])))
            d[key] = str(p if p.is_absolute() or base is None else (base / p))
    return d


def fleet_bench(bundle_dir, fleet_toml, *, out_dir=None, max_parallel: int = DEFAULT_MAX_PARALLEL,
                limit: Optional[str] = None,
                cancel: Optional[threading.Event] = None, plots: bool = True, **opts) -> List[dict]:
    """Run :func:`remote_bench` on every device of ``fleet_toml`` in parallel; merge the results.

    Args:
        bundle_dir: the bundle every device runs (a device's ``bundle`` key overrides it).
        fleet_toml: path of the fleet file (see the module docstring) or an Ansible inventory.
        limit: only these devices (see :func:`read_fleet`).
        out_dir: writes ``<name>/results.json`` per device, ``fleet.json`` and the merged comparison report.
        max_parallel: devices at once, a whole number >= 1 (default :data:`DEFAULT_MAX_PARALLEL`, 50); the
            others wait for a free slot, in fleet order.
        cancel: an event that stops every remote run (Ctrl-C sets it too).
        plots: draw PNG plots in the reports (False: Markdown only).
        **opts: remote_bench options (iterations, warmup, backend, timeout, force, known_hosts, ...).

    Returns:
        One results dict per device, in fleet order. A device that failed gets a results dict with
        ``"partial": true``, no runs and ``"error"`` ({"message", "exit_code"}), so one bad board does not
        hide the others.

    Raises:
        InputError: a bad fleet file or ``max_parallel``. BenchInterrupted: Ctrl-C (every remote run is stopped first).
    """
    check_max_parallel(max_parallel)
    devices = read_fleet(fleet_toml, limit)
    cancel = cancel or threading.Event()
    results: Dict[str, dict] = {}

    def one(dev: dict) -> dict:
        kw = dict(opts)
        for key in ("identity", "remote_dir", "python", "ssh_options"):
            if dev.get(key) is not None:
                kw[key] = dev[key]
        if dev.get("force") is not None:
            kw["force"] = bool(dev["force"])
        dev_out = Path(out_dir) / dev["name"] if out_dir is not None else None
        try:
            return remote_bench(dev.get("bundle") or bundle_dir, dev["device"], label=dev["name"], cancel=cancel,
                                out_dir=dev_out, plots=plots, **kw)
        except BenchInterrupted as exc:
            return exc.results or failed_result(dev, "interrupted", 130)
        except EdgeSqueezeError as exc:
            return failed_result(dev, exc.one_line(), exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - one device's bug must not lose the other devices' results
            return failed_result(dev, f"internal error: {type(exc).__name__}: {exc}", 1)

    workers = min(max_parallel, len(devices))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet")
    futures = {dev["name"]: pool.submit(one, dev) for dev in devices}
    try:
        for name, fut in futures.items():
            results[name] = fut.result()
    except KeyboardInterrupt:
        cancel.set()
        for name, fut in futures.items():
            results[name] = fut.result()
        pool.shutdown(wait=True)
        merged = merge_fleet_results(devices, results, out_dir, plots)
        raise BenchInterrupted(merged, str(out_dir) if out_dir else None) from None
    pool.shutdown(wait=True)
    return merge_fleet_results(devices, results, out_dir, plots)


def failed_result(dev: dict, message: str, code: int) -> dict:
    """The results dict of a device that did not run (``partial``, no runs, ``error``), so reports list it."""
    return {"schema": "edgesqueeze.bench/1", "model": {}, "backend": {"name": None, "version": None,
                                                                      "precision": None},
            "device": {"profile": dev.get("target"), "label": dev["name"], "address": dev["device"]},
            "runs": [], "warnings": [], "partial": True, "error": {"message": message, "exit_code": code}}


def merge_fleet_results(devices: List[dict], results: Dict[str, dict], out_dir, plots: bool = True) -> List[dict]:
    """Label each device's results (by ``name``) in fleet order; with ``out_dir`` write fleet.json (every device
    with its status), fleet.md and the comparison report of the devices that ran. Returns the results list."""
    merged = []
    for dev in devices:
        r = results[dev["name"]]
        d = r.setdefault("device", {})
        d.setdefault("label", dev["name"])
        if dev.get("target"):
            d["fleet_target"] = dev["target"]
        merged.append(r)
    if out_dir is not None:
        out = Path(out_dir)
        summary = [{"name": dev["name"], "device": dev["device"], "target": dev.get("target"),
                    "status": "error" if r.get("error") else ("partial" if r.get("partial") else "ok"),
                    "error": (r.get("error") or {}).get("message"),
                    "results": f"{dev['name']}/results.json" if (out / dev["name"] / "results.json").exists()
                    else None} for dev, r in zip(devices, merged)]
        write_json_atomic(out / "fleet.json", {"devices": summary})
        write_text_atomic(out / "fleet.md", markdown_summary(merged))
        ok = [r for r in merged if r.get("runs")]
        if ok:
            render_report(ok, out, plots=plots)
    return merged
