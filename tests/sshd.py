"""A real OpenSSH server for the deploy tests, on 127.0.0.1 at a free port, with throw-away keys.

Usage from a test module::

    from sshd import SshServer, sshd_skip_reason

    pytestmark = pytest.mark.skipif(sshd_skip_reason() is not None, reason=str(sshd_skip_reason()))

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        with SshServer(tmp_path_factory.mktemp("sshd")) as srv:
            yield srv

``server.device`` is ``user@127.0.0.1:port``, ``server.identity`` the authorised private key and
``server.ssh_options()`` the keyword arguments that make the client trust this server's fresh host key
(a private known_hosts file). The server runs as the current user with its own ``sshd_config``
(``UsePAM no``, ``StrictModes no``, ``AuthorizedKeysFile`` pointing at the temporary key); nothing outside
its temporary folder is touched, except that sshd running as root insists on its privilege-separation
directory (``/run/sshd``), which is created when missing, as the openssh-server package does.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


def find_sshd() -> Optional[str]:
    """Return the absolute path of sshd (sshd must be started by absolute path), or None."""
    for cand in SSHD_CANDIDATES:
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def sshd_skip_reason() -> Optional[str]:
    """Why the SSH tests cannot run here (None when they can)."""
    if find_sshd() is None:
        return "sshd not found: install openssh-server (apt-get install openssh-server) to run the SSH tests"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not found: install openssh-client to run the SSH tests"
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as exc:
            return f"sshd as root needs /run/sshd and it cannot be created: {exc}"
    return None


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM sshd when the test process dies (no stray servers)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str = "edgesqueeze-test") -> Path:
    """Generate an unencrypted ed25519 key pair at ``path`` (+ ``.pub``); return the private key path."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    os.chmod(path, 0o600)
    return path


class SshServer:
    """One sshd process on 127.0.0.1 with a fresh host key and a fresh authorised user key."""

    def __init__(self, workdir: Path, port: Optional[int] = None, extra_config: Sequence[str] = ()):
        self.dir = Path(workdir)
        self.extra_config = list(extra_config)
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.proc: Optional[subprocess.Popen] = None
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.identity = self.dir / "id_user"
        self.wrong_identity = self.dir / "id_wrong"
        self.authorized_keys = self.dir / "authorized_keys"
        self.known_hosts = self.dir / "known_hosts"
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"

    @property
    def device(self) -> str:
        """The ``user@host:port`` string the deploy code takes."""
        return f"{self.user}@127.0.0.1:{self.port}"

    def ssh_options(self) -> dict:
        """Keyword arguments for edgesqueeze.deploy that trust this server's host key and use its user key."""
        return {"identity": str(self.identity), "known_hosts": str(self.known_hosts)}

    def start(self) -> "SshServer":
        """Generate keys, write sshd_config, start sshd in the foreground and wait until it accepts."""
        reason = sshd_skip_reason()
        if reason:
            raise RuntimeError(reason)
        self.dir.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, "edgesqueeze-test-host")
        keygen(self.identity)
        keygen(self.wrong_identity, "edgesqueeze-test-unauthorised")
        shutil.copyfile(str(self.identity) + ".pub", self.authorized_keys)
        os.chmod(self.authorized_keys, 0o600)
        host_pub = (Path(str(self.host_key) + ".pub").read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_pub)}\n")
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "MaxSessions 50",
            "MaxStartups 50:30:100",
            "PrintMotd no",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
        ] + self.extra_config + [""]))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([find_sshd(), "-D", "-e", "-f", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=log, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not start on 127.0.0.1:{self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Terminate this sshd (only the process this object started)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> "SshServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SilentServer:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers (a hung host)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def __enter__(self) -> "SilentServer":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


# ------------------------------------------------------------------------------------------ test bundles
def make_bundle(folder: Path, target: str = "cpu", precision: str = "fp32", features: int = 256,
                hidden: int = 2048, seed: int = 0, with_runner: bool = True) -> Path:
    """Write a small bundle in the layout of contracts.md section F: manifest.json + models/ + run_on_device.py.

    The model is ``y = relu(x @ W + b)`` with x [1, features]; W makes the model file ~features*hidden*4 bytes
    (2 MiB by default) so that an upload can be interrupted half way.
    """
    import hashlib
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgesqueeze.devices import get_profile

    folder = Path(folder)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((features, hidden)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["xwb"]),
         helper.make_node("Relu", ["xwb"], ["y"])], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, hidden])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgesqueeze-test")
    model.ir_version = 8
    onnx.save(model, folder / "models" / "model.fp32.onnx")
    if with_runner:
        src = Path(__file__).resolve().parents[1] / "edgesqueeze" / "deploy" / "device_runner.py"
        (folder / "run_on_device.py").write_bytes(src.read_bytes())
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            rel = p.relative_to(folder).as_posix()
            files[rel] = {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
    manifest = {"schema": "edgesqueeze.bundle/1", "name": "dense", "target": get_profile(target).to_dict(),
                "precision": precision, "options": {}, "versions": {},
                "models": {"fp32": "models/model.fp32.onnx", "deploy": "models/model.fp32.onnx"},
                "inputs": {"x": {"shape": [1, features], "dtype": "float32"}}, "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


FAKE_TRTEXEC = r'''#!{python}
"""A trtexec STAND-IN for tests on machines without TensorRT (TensorRT cannot be installed here).

It accepts the flags edgesqueeze passes, writes an "engine" file for --saveEngine and, for --loadEngine,
an --exportTimes file in trtexec's documented format. Its timings are synthetic: they test the plumbing
(engine cache, flags, parsing), never performance.
"""
import json, os, sys
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:] if a.startswith("--"))
print("&&&& RUNNING TensorRT.trtexec [TensorRT v{tag}] # trtexec " + " ".join(sys.argv[1:]))
with open(os.environ.get("FAKE_TRTEXEC_LOG", os.devnull), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
if "help" in args:
    sys.exit(0)
if "onnx" in args:
    if not os.path.isfile(args["onnx"]):
        print("[E] cannot open " + args["onnx"]); sys.exit(1)
    if "saveEngine" in args:
        with open(args["saveEngine"], "wb") as fh:
            fh.write(b"FAKE-ENGINE " + args["onnx"].encode())
if "loadEngine" in args:
    with open(args["loadEngine"], "rb") as fh:
        if not fh.read().startswith(b"FAKE-ENGINE"):
            print("[E] not an engine"); sys.exit(1)
if "exportTimes" in args:
    n = int(args.get("iterations", "10"))
    rows, t = [], 0.0
    for i in range(n):
        h2d, comp, d2h = 0.01, 0.5 + 0.001 * i, 0.02
        rows.append({{"startH2dMs": t, "endH2dMs": t + h2d, "startComputeMs": t + h2d, "endComputeMs": t + h2d + comp,
                     "startD2hMs": t + h2d + comp, "endD2hMs": t + h2d + comp + d2h, "h2dMs": h2d, "computeMs": comp,
                     "d2hMs": d2h, "latencyMs": h2d + comp + d2h, "endToEndMs": h2d + comp + d2h}})
        t += 1.0
    with open(args["exportTimes"], "w") as fh:
        json.dump(rows, fh)
print("&&&& PASSED TensorRT.trtexec [TensorRT v{tag}]")
'''


def write_fake_trtexec(folder: Path, tag: str = "100300") -> Path:
    """Write the trtexec stand-in (see FAKE_TRTEXEC) as ``folder/trtexec``; return its path."""
    import sys

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trtexec"
    path.write_text(FAKE_TRTEXEC.format(python=sys.executable, tag=tag))
    path.chmod(0o755)
    return path


def find_python36() -> Optional[str]:
    """A real Python 3.6 interpreter (what JetPack 4.6 ships), or None.

    Looks at $EDGESQUEEZE_TEST_PY36, ``python3.6`` on PATH and pyenv's versions; each candidate must run.
    """
    import glob

    candidates = [os.environ.get("EDGESQUEEZE_TEST_PY36"), shutil.which("python3.6"), "/usr/bin/python3.6"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))
    for cand in candidates:
        if not cand or not os.access(cand, os.X_OK):
            continue
        try:
            out = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2] == (3, 6))"],
                                 capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip() == "True":
            return cand
    return None
