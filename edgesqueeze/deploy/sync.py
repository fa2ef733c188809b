"""Bundle upload: send only the files whose sha256 differs, resume interrupted uploads, verify on the device.

Each file travels to ``<name>.part`` by appending (``cat >>``); a later deploy that finds a ``.part`` whose
bytes are a prefix of the local file continues from there instead of starting over. A ``.part`` is renamed
onto its final name only after the device has hashed it, and at the end every file of the bundle is hashed
on the device again.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..bundle import verify_bundle
from ..errors import DeviceError, InputError, VerificationError
from ..fileio import sha256_file

RUNNER_IN_BUNDLE = "run_on_device.py"
RUNNER_FALLBACK = ".edgesqueeze/run_on_device.py"


@dataclass(frozen=True)
class BundleFile:
    """One file to put on the device: where it is here, where it goes there (relative), its hash and size."""

    rel: str
    local: Path
    sha256: str
    size: int


def _script(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def runner_source() -> bytes:
    """The on-device runner's source (``device_runner.py``)."""
    return _script("device_runner.py")


def read_local_bundle(bundle_dir) -> tuple:
    """Check a bundle here (schema and every sha256) and list what the device needs.

    Returns:
        (manifest, files): the manifest dict and the :class:`BundleFile` list, manifest.json last. When the
        bundle carries no ``run_on_device.py``, this edgesqueeze's runner is added as ``.edgesqueeze/``.

    Raises:
        InputError: not a bundle folder, or an unreadable manifest.
        VerificationError: a file is missing or differs from its manifest hash.
    """
    root = Path(bundle_dir)
    mpath = root / "manifest.json"
    if not root.exists():
        raise InputError("no such bundle folder", path=str(root))
    if not mpath.is_file():
        raise InputError("not a bundle folder (no manifest.json)", path=str(root),
                         hint="make one with 'edgesqueeze build model.onnx --target T -o bundle/'")
    manifest = verify_bundle(root)
    files = []
    for rel, entry in sorted(manifest.get("files", {}).items()):
        _check_rel(rel, mpath)
        files.append(BundleFile(rel, root / rel, entry["sha256"], int(entry.get("size", (root / rel).stat().st_size))))
    if RUNNER_IN_BUNDLE not in manifest.get("files", {}):
        src = Path(__file__).with_name("device_runner.py")
        data = runner_source()
        files.append(BundleFile(RUNNER_FALLBACK, src, hashlib.sha256(data).hexdigest(), len(data)))
    files.append(BundleFile("manifest.json", mpath, sha256_file(mpath), mpath.stat().st_size))
    return manifest, files


def _check_rel(rel: str, mpath: Path) -> None:
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or rel.endswith(".part"):
        raise InputError(f"manifest lists a file outside the bundle: {rel}", path=str(mpath))


def _prefix_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    left = size
    with open(path, "rb") as fh:
        while left > 0:
            block = fh.read(min(1 << 20, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _helper_command(python: str, mode: str, remote_dir: str, arg=None) -> str:
    cmd = (f"{shlex.quote(python)} -c {shlex.quote(_script('remote_files.py').decode('utf-8'))} {mode} "
           f"{shlex.quote(remote_dir)}")
    return cmd if arg is None else f"{cmd} {shlex.quote(json.dumps(arg, sort_keys=True))}"


def remote_files(transport, python: str, mode: str, remote_dir: str, arg, timeout: float) -> dict:
    """Run the device-side file helper (``remote_files.py``) in ``mode`` and return its JSON answer."""
    res = transport.run(_helper_command(python, mode, remote_dir, arg), timeout=timeout, check=False,
                        what=f"remote file {mode}")
    if res.returncode != 0:
        raise DeviceError(f"remote file {mode} failed on {transport.address} (exit {res.returncode}): "
                          f"{' '.join(res.stderr.strip().splitlines()[-2:])}")
    return json.loads(res.text.strip().splitlines()[-1])


def sync_files(transport, files: List[BundleFile], remote_dir: str, *, python: str = "python3",
               timeout: float = 600, progress: Optional[Callable[[int], None]] = None) -> dict:
    """Make ``remote_dir`` on the device hold exactly ``files`` (by sha256), sending as little as possible.

    Args:
        transport: an :class:`~edgesqueeze.deploy.ssh.SshTransport`.
        files: what must be there (:func:`read_local_bundle`).
        remote_dir: the bundle folder on the device (relative paths are under the login's home).
        python: the device's Python 3 (runs the small hashing helper).
        timeout: seconds for each remote step (each file's upload included).
        progress: called with the number of bytes after each chunk sent (may raise to interrupt).

    Returns:
        {"uploaded": [rel], "resumed": {rel: offset}, "unchanged": [rel], "bytes_sent": N, "bytes_total": N,
         "verified": N}

    Raises:
        VerificationError: a file does not hash to its manifest value on the device after upload.
        DeviceError: the connection or a remote step failed or timed out.
    """
    state = remote_files(transport, python, "state", remote_dir, [f.rel for f in files], timeout)
    todo, unchanged, resumed = [], [], {}
    for f in files:
        st = state.get(f.rel) or {}
        if st.get("sha256") == f.sha256:
            unchanged.append(f.rel)
            continue
        offset = 0
        part = st.get("part_size")
        if part is not None:
            if part <= f.size and _prefix_sha256(f.local, part) == st.get("part_sha256"):
                offset = part
                if part > 0:
                    resumed[f.rel] = part
            # else: a stale .part (not a prefix of this file): the receiver truncates it to offset 0
        todo.append((f, offset))
    # every file that needs bytes travels in one ssh session (one handshake, however many files)
    items = [(json.dumps({"rel": f.rel, "offset": offset, "size": f.size - offset}).encode() + b"\n",
              str(f.local), offset) for f, offset in todo if offset < f.size or f.size == 0]
    sent = transport.send_files(_helper_command(python, "receive", remote_dir), items, timeout=timeout,
                                progress=progress) if items else 0
    if todo:
        # commit the uploads, then hash every file of the bundle again, in one remote call
        answer = remote_files(transport, python, "commit", remote_dir,
                              {"commit": {f.rel: f.sha256 for f, _ in todo},
                               "verify": {f.rel: f.sha256 for f in files}}, timeout)
        bad = {rel: st for rel, st in answer["commit"].items() if st != "ok"}
        if bad:
            raise VerificationError("uploaded files do not match their sha256 on the device: " +
                                    ", ".join(f"{rel} ({st.split(':')[0]})" for rel, st in sorted(bad.items())),
                                    path=f"{transport.address}:{remote_dir}", hint="run deploy again")
        verified = _check_verified(answer["verify"], transport, remote_dir)
    else:
        verified = len(unchanged)  # the state query above hashed every file on the device and all matched
    return {"uploaded": [f.rel for f, _ in todo], "resumed": resumed, "unchanged": unchanged, "bytes_sent": sent,
            "bytes_total": sum(f.size for f in files), "verified": verified}


def verify_remote(transport, files: List[BundleFile], remote_dir: str, *, python: str = "python3",
                  timeout: float = 600) -> int:
    """Hash every file on the device; return how many were checked.

    Raises:
        VerificationError: naming each file that is missing or differs on the device.
    """
    result: Dict[str, str] = remote_files(transport, python, "verify", remote_dir,
                                          {f.rel: f.sha256 for f in files}, timeout)
    return _check_verified(result, transport, remote_dir)


def _check_verified(result: Dict[str, str], transport, remote_dir: str) -> int:
    bad = {rel: st for rel, st in result.items() if st != "ok"}
    if bad:
        raise VerificationError("files on the device do not match the bundle: " +
                                ", ".join(f"{rel} ({'missing' if st == 'missing' else 'sha256 differs'})"
                                          for rel, st in sorted(bad.items())),
                                path=f"{transport.address}:{remote_dir}",
                                hint="run 'edgesqueeze deploy' again to repair them")
    return len(result)
