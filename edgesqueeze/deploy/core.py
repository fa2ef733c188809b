"""``deploy``: probe a device, check it against the bundle's target, sync the bundle, build the engine there."""
from __future__ import annotations

import contextlib
import json
import posixpath
import tempfile
import re
import shlex
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..bundle import extract_archive, is_signed, verify_signature
from ..errors import DeviceError, InputError
from . import device_runner
from .probe import check_target, describe, run_probe
from .ssh import SshTransport
from .sync import RUNNER_FALLBACK, RUNNER_IN_BUNDLE, read_local_bundle, sync_files

DEFAULT_ENGINE_CACHE = ".cache/edgesqueeze/engines"  # under the login's home on the device
TRANSPORT_KEYS = ("identity", "port", "connect_timeout", "host_key_check", "known_hosts", "multiplex",
                  "ssh_options")


def remote_path(path: Optional[str], default: str) -> str:
    """Normalise a device path: ``~/x`` and ``x`` are under the login's home (ssh starts there)."""
    text = (path or default).strip()
    if text in ("~", "~/"):
        raise InputError("the remote folder must not be the home folder itself")
    if text.startswith("~/"):
        text = text[2:]
    if not text or "\n" in text:
        raise InputError(f"bad remote folder '{path}'")
    return posixpath.normpath(text)


def default_remote_dir(bundle_dir) -> str:
    """``edgesqueeze/<bundle folder name>`` under the device login's home."""
    return f"edgesqueeze/{Path(bundle_dir).resolve().name}"


def open_transport(device: str, **opts) -> SshTransport:
    """An :class:`SshTransport` from the transport keyword arguments of deploy/remote_bench."""
    return SshTransport(device, **{k: v for k, v in opts.items() if k in TRANSPORT_KEYS and v is not None})


def deploy(bundle_dir, device: str, identity: Optional[str] = None, remote_dir: Optional[str] = None,
           force: bool = False, timeout: float = 600, *, python: str = "python3", build_engine: bool = True,
           engine_cache: str = DEFAULT_ENGINE_CACHE, build_timeout: float = 3600,
           build_env: Optional[dict] = None, progress: Optional[Callable[[int], None]] = None,
           transport: Optional[SshTransport] = None, allowed_signers: Optional[str] = None,
           **transport_opts) -> dict:
    """Put a bundle on a device and make it ready to run.

    Steps: check the bundle here; probe the device (architecture, L4T/JetPack, TensorRT, CUDA, trtexec, nvcc,
    Python, free disk); compare it with the bundle's target; upload only the files whose sha256 differs
    (resuming interrupted uploads); verify every sha256 on the device; when trtexec is there, build the plugin
    library (CMake) and the engine, cached on the device by TensorRT version + precision + model hash.

    Args:
        bundle_dir: a bundle folder (``edgesqueeze build ... -o bundle/``) or its ``--archive`` ``.tar.gz``.
        device: ``user@host[:port]`` or an ssh config alias.
        identity: private key file for ssh ``-i``.
        remote_dir: bundle folder on the device (default ``~/edgesqueeze/<bundle name>``).
        force: turn a device/target mismatch into a warning.
        timeout: seconds for each remote step (connects use ``connect_timeout``, default 10 s).
        python: the device's Python 3.6+ interpreter.
        build_engine: build the TensorRT engine on the device when trtexec is present.
        engine_cache: the device folder that keeps engines.
        build_timeout: seconds allowed for the plugin and engine builds (a Nano takes minutes).
        build_env: extra environment for build_engine.sh, e.g. {"ESQ_PLUGIN": "off", "WORKSPACE_MIB": "2048"}.
        progress: called with bytes after each uploaded chunk.
        transport: reuse an open :class:`SshTransport` (then identity and transport options are ignored).
        allowed_signers: an OpenSSH allowed-signers file: the bundle must carry a signature by one of its keys
            (``edgesqueeze sign``) before anything travels. Without it an unsigned bundle is deployed with a
            warning (its scripts and plugin sources run on the device).
        **transport_opts: port, connect_timeout, host_key_check, known_hosts, multiplex, ssh_options.

    Returns:
        A JSON-ready report: device, remote_dir, probe facts, target, warnings, files (uploaded / resumed /
        unchanged / bytes), engine, runner path, seconds.

    Raises:
        InputError: not a bundle; VerificationError: a file differs here or on the device, or the signature
        that ``allowed_signers`` asks for is missing or wrong;
        DeviceError: unreachable device, failed authentication, a mismatch without ``force``, a timeout or a
        failed build.
    """
    with open_bundle(bundle_dir) as folder:
        trust = bundle_trust(folder, allowed_signers)
        report = _deploy(folder, device, identity, remote_dir, force, timeout, python, build_engine, engine_cache,
                         build_timeout, build_env, progress, transport, transport_opts)
        report["signature"] = trust
        if trust["warning"]:
            report["warnings"].insert(0, trust["warning"])
        return report


def bundle_trust(folder, allowed_signers: Optional[str]) -> dict:
    """Check the bundle's signature when ``allowed_signers`` is given; say what is known of who made it.

    Returns:
        ``{"signed": bool, "verified_by": principal or None, "warning": text or None}``.

    Raises:
        VerificationError: ``allowed_signers`` given and the bundle is unsigned, or signed by another key.
    """
    if allowed_signers:
        return {"signed": True, "verified_by": verify_signature(folder, allowed_signers), "warning": None}
    if is_signed(folder):
        return {"signed": True, "verified_by": None,
                "warning": "the bundle is signed but the signature was not checked (--require-signature FILE)"}
    return {"signed": False, "verified_by": None,
            "warning": "the bundle is not signed: its build_engine.sh and plugin sources will run on the device "
                       "as they are (sign it with 'edgesqueeze sign', deploy with --require-signature)"}


@contextlib.contextmanager
def open_bundle(path) -> Iterator[Path]:
    """Yield the bundle folder for ``path``: the folder itself, or a ``.tar.gz`` bundle extracted to a temp folder."""
    p = Path(path)
    if p.is_file() and p.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="esq-bundle-") as tmp:
            yield Path(extract_archive(p, tmp))
    else:
        yield p


def _deploy(bundle_dir, device, identity, remote_dir, force, timeout, python, build_engine, engine_cache,
            build_timeout, build_env, progress, transport, transport_opts) -> dict:
    t0 = time.monotonic()
    manifest, files = read_local_bundle(bundle_dir)
    rdir = remote_path(remote_dir, default_remote_dir(bundle_dir))
    own = transport is None
    tr = transport or open_transport(device, identity=identity, **transport_opts)
    try:
        info = run_probe(tr, python=python, folder=rdir, timeout=min(timeout, 120))
        target = manifest.get("target") or {}
        mismatches, warnings = check_target(info, target)
        if mismatches and not force:
            raise DeviceError(f"{tr.address} does not match the bundle's target {target.get('name')}: "
                              + "; ".join(mismatches), hint="use --force to deploy anyway")
        warnings = [f"target mismatch (forced): {m}" for m in mismatches] + warnings
        need = sum(f.size for f in files)
        if info.get("free_bytes") is not None and info["free_bytes"] < need:
            raise DeviceError(f"not enough disk space on {tr.address}: {need} bytes needed, "
                              f"{info['free_bytes']} free under {rdir}")
        sync = sync_files(tr, files, rdir, python=python, timeout=timeout, progress=progress)
        runner = RUNNER_IN_BUNDLE if any(f.rel == RUNNER_IN_BUNDLE for f in files) else RUNNER_FALLBACK
        engine = {"built": False, "path": None, "reason": "not requested (build_engine=False)"}
        if build_engine:
            engine = _engine(tr, manifest, info, rdir, remote_path(engine_cache, DEFAULT_ENGINE_CACHE),
                             build_timeout, force, build_env or {})
            warnings += engine.pop("warnings", [])
        return {"device": str(tr.address), "remote_dir": rdir, "probe": describe(info), "target": target.get("name"),
                "precision": manifest.get("precision"), "mismatches": mismatches, "warnings": warnings,
                "files": sync, "engine": engine, "runner": runner, "python": python,
                "seconds": round(time.monotonic() - t0, 3)}
    finally:
        if own:
            tr.close()


def engine_key(info: dict, manifest: dict) -> str:
    """Cache key of a device engine: TensorRT version + precision + model hash (+ SoC, which pins the GPU)."""
    rel = (manifest.get("models") or {}).get("deploy", "")
    sha = ((manifest.get("files") or {}).get(rel) or {}).get("sha256", "unknown")
    trt = info.get("tensorrt") or (f"tag{info.get('trtexec_version_tag')}" if info.get("trtexec_version_tag")
                                   else "unknown")
    return f"trt{trt}-{info.get('soc') or info.get('arch')}-{manifest.get('precision', 'fp32')}-{sha[:16]}"


def _shell_path(path: str) -> str:
    """A device path for the shell: relative paths are anchored at $HOME so they work from any folder."""
    return shlex.quote(path) if path.startswith("/") else f'"$HOME"/{shlex.quote(path)}'


def _engine(tr: SshTransport, manifest: dict, info: dict, rdir: str, cache: str, timeout: float,
            force: bool, build_env: dict) -> dict:
    target = manifest.get("target") or {}
    if not (target.get("tensorrt") or target.get("kind") in ("jetson", "desktop")):
        return {"built": False, "path": None, "reason": f"the bundle's target ({target.get('name')}) runs "
                                                        "onnxruntime, not TensorRT"}
    if not info.get("trtexec"):
        return {"built": False, "path": None, "reason": "no trtexec on the device: the benchmark runs without "
                                                        "a prebuilt engine"}
    files = manifest.get("files") or {}
    if "build_engine.sh" in files:
        return _engine_by_script(tr, info, rdir, cache, timeout, force, build_env)
    return _engine_by_trtexec(tr, manifest, info, rdir, cache, timeout)


def _engine_by_script(tr: SshTransport, info: dict, rdir: str, cache: str, timeout: float, force: bool,
                      build_env: dict) -> dict:
    """Run the bundle's build_engine.sh with ENGINE_DIR in the device's engine cache.

    The script names the engine by TensorRT version, precision and model hash, skips an engine that already
    exists ("engine already built"), builds the plugin library itself when the model has custom nodes, and
    prints "edgesqueeze: engine: PATH".
    """
    q = shlex.quote
    for key in build_env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise InputError(f"bad environment variable name for build_engine.sh: {key!r}")
    env = f"ENGINE_DIR={_shell_path(cache)} TRTEXEC={q(info['trtexec'])}" + (" ESQ_FORCE=1" if force else "") + \
        "".join(f" {k}={q(str(v))}" for k, v in sorted(build_env.items()))
    t0 = time.monotonic()
    res = tr.run(f"mkdir -p {_shell_path(cache)} && cd {q(rdir)} && {env} bash build_engine.sh", timeout=timeout,
                 check=False, what="engine build (build_engine.sh)")
    found = re.findall(r"^edgesqueeze: engine(?: already built)?: (\S+)", res.text, re.MULTILINE)
    path = found[-1] if found else None
    ok = bool(path) and tr.run(f"test -s {_shell_path(path)}", timeout=60, check=False,
                               what="engine check").returncode == 0
    if res.returncode != 0 or not ok:
        tail = " | ".join((res.stderr or res.text).strip().splitlines()[-4:])
        raise DeviceError(f"the engine build on {tr.address} failed (build_engine.sh, exit {res.returncode}): {tail}")
    cached = "engine already built" in res.text
    notes = [ln[len("edgesqueeze: "):] for ln in res.text.splitlines()
             if ln.startswith("edgesqueeze: ") and ("warning" in ln or " path:" in ln or "did not build" in ln)]
    return {"built": not cached, "cached": cached, "path": path, "how": "build_engine.sh",
            "engine_choice": _engine_choice(res.text),
            "plugin_lib": _plugin_lib(tr, rdir), "seconds": round(time.monotonic() - t0, 1), "log": notes,
            "reason": "found in the device's engine cache" if cached else "built on the device",
            "warnings": [n for n in notes if "warning" in n or "did not build" in n]}


def _plugin_lib(tr: SshTransport, rdir: str) -> Optional[str]:
    res = tr.run(f"cd {shlex.quote(rdir)} && find plugins/build -maxdepth 2 -name 'lib*.so' 2>/dev/null | sort | head -n 1",
                 timeout=60, check=False, what="plugin library lookup")
    lib = res.text.strip()
    return lib or None


def _engine_choice(text: str) -> Optional[dict]:
    """``{plugin_ms, native_ms, chosen}`` from build_engine.sh's "engine choice:" line (custom nodes: the plugin
    engine against the native one, timed on the device), or None when the script compared nothing."""
    found = re.findall(r"^edgesqueeze: engine choice: (\{.*\})\s*$", text, re.MULTILINE)
    try:
        choice = json.loads(found[-1]) if found else None
    except ValueError:
        return None
    return {k: choice.get(k) for k in ("plugin_ms", "native_ms", "chosen")} if choice else None


def _engine_by_trtexec(tr: SshTransport, manifest: dict, info: dict, rdir: str, cache: str, timeout: float) -> dict:
    """No build_engine.sh in the bundle: call trtexec with the flags of the device's TensorRT version."""
    q = shlex.quote
    files = manifest.get("files") or {}
    path = f"{cache}/{engine_key(info, manifest)}.engine"
    if tr.run(f"test -s {_shell_path(path)}", timeout=60, check=False, what="engine cache lookup").returncode == 0:
        return {"built": False, "cached": True, "path": path, "reason": "found in the device's engine cache"}
    warnings = []
    plugin_lib = None
    if "plugins/CMakeLists.txt" in files:
        plugin_lib, note = _build_plugins(tr, info, rdir, timeout)
        if note:
            warnings.append(note)
    t0 = time.monotonic()
    tag = info.get("trtexec_version_tag")
    major = int(tag) // (10000 if int(tag) >= 100000 else 1000) if tag and tag.isdigit() else None
    calib = "calib/calibration.cache" if "calib/calibration.cache" in files else None
    flags = device_runner.trtexec_build_flags(manifest, calib, major, plugin_lib)
    cmd = (f"mkdir -p {_shell_path(cache)} && cd {q(rdir)} && {q(info['trtexec'])} "
           f"--onnx={q(manifest['models']['deploy'])} {' '.join(q(f) for f in flags)} "
           f"--saveEngine={_shell_path(path)} " + ("--buildOnly" if major and major < 10 else "--skipInference"))
    res = tr.run(cmd, timeout=timeout, check=False, what="engine build (trtexec)")
    ok = tr.run(f"test -s {_shell_path(path)}", timeout=60, check=False, what="engine check").returncode == 0
    if res.returncode != 0 or not ok:
        tail = " | ".join((res.stderr or res.text).strip().splitlines()[-4:])
        raise DeviceError(f"the engine build on {tr.address} failed (trtexec, exit {res.returncode}): {tail}")
    return {"built": True, "cached": False, "path": path, "how": "trtexec", "plugin_lib": plugin_lib,
            "seconds": round(time.monotonic() - t0, 1), "warnings": warnings}


def _build_plugins(tr: SshTransport, info: dict, rdir: str, timeout: float):
    """Build the bundle's plugin library with CMake on the device; return (library path | None, note)."""
    if not (info.get("cmake") and info.get("nvcc")):
        return None, ("the bundle has plugin sources but the device lacks " +
                      " and ".join(t for t in ("cmake", "nvcc") if not info.get(t)) +
                      ": the engine uses the inlined (plugin-free) graph if the bundle provides it")
    sm = _device_sm(info)
    q = shlex.quote
    arch = f"-DCMAKE_CUDA_ARCHITECTURES={sm}" if sm else ""
    cmd = (f"cd {q(rdir)}/plugins && mkdir -p build && cd build && "
           f"PATH=$PATH:{q(posixpath.dirname(info['nvcc']))} cmake .. -DCMAKE_BUILD_TYPE=Release {arch} "
           f"> cmake.log 2>&1 && make -j$(nproc) >> cmake.log 2>&1 && ls \"$PWD\"/*.so | head -n 1")
    res = tr.run(cmd, timeout=timeout, check=False, what="plugin build")
    lib = res.text.strip().splitlines()[-1] if res.returncode == 0 and res.text.strip() else None
    if not lib:
        raise DeviceError(f"the plugin library build failed on {tr.address} (see {rdir}/plugins/build/cmake.log)")
    return lib, None


def _device_sm(info: dict) -> Optional[int]:
    return {"tegra210": 53, "tegra186": 62, "tegra194": 72, "tegra234": 87, "tegra264": 110}.get(info.get("soc"))
