"""SSH transport through the system's OpenSSH client (so ~/.ssh/config, agents and jump hosts just work).

Every remote step runs ``ssh`` as a subprocess with ``BatchMode=yes`` (never a password prompt), a connect
timeout, keep-alives and a wall-clock timeout of its own. Connections are multiplexed through one
``ControlMaster`` per :class:`SshTransport`, so the dozen small commands of a deploy cost one handshake.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from ..errors import DeviceError, InputError

HOST_KEY_POLICIES = ("accept-new", "yes", "no")


@dataclass(frozen=True)
class DeviceAddress:
    """Where a device is: ``[user@]host[:port]`` (host may be an alias from ~/.ssh/config)."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None

    @property
    def destination(self) -> str:
        """``user@host`` (or ``host``) as ssh takes it."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port else text


def parse_device(spec: str) -> DeviceAddress:
    """Parse ``user@host[:port]``, ``host``, ``user@[::1]:2222`` into a :class:`DeviceAddress`.

    The user and host are checked so that neither can reach ssh as an option (no leading ``-``, no
    whitespace, control or shell characters); ssh is also given ``--`` before the destination.

    Raises:
        InputError: an empty or unsafe host or user, or a port that is not a number in 1..65535.
    """
    text = (spec or "").strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://"):]
    user = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        user = user or None
    port = None
    m = re.fullmatch(r"\[([^\]]+)\](?::(\w+))?", text)
    if m:
        host, port_text = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InputError(f"bad port '{port_text}' in device '{spec}' (expected user@host[:port])")
        port = int(port_text)
    if not host or not _SAFE_HOST.fullmatch(host):
        raise InputError(f"bad device {spec!r}: the host may hold letters, digits and . _ - : % only, "
                         "and may not start with '-' (expected user@host[:port])")
    if user is not None and not _SAFE_USER.fullmatch(user):
        raise InputError(f"bad device {spec!r}: the user may hold letters, digits and . _ - only, "
                         "and may not start with '-' (expected user@host[:port])")
    return DeviceAddress(host=host, user=user, port=port)


_SAFE_HOST = re.compile(r"[A-Za-z0-9_.%:][A-Za-z0-9_.%:-]*")  # names, IPv4, IPv6 (with a %zone), config aliases
_SAFE_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")


# ssh's own messages -> what the user should hear (first match wins)
_SSH_FAILURES = [
    (r"Permission denied|Too many authentication failures|no matching host key type",
     "authentication failed", "check --identity and that its public key is in the device's authorized_keys"),
    (r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED",
     "host key verification failed", "the device's host key is unknown or changed; check known_hosts"),
    (r"Connection refused", "connection refused", "is sshd running on the device, and is the port right?"),
    (r"timed out|Connection timed out|Operation timed out|banner exchange",
     "connection timed out", "is the device on and reachable?"),
    (r"Could not resolve hostname|Name or service not known|nodename nor servname",
     "unknown host name", "check the host name or ~/.ssh/config"),
    (r"No route to host|Network is unreachable", "no route to host", "is the device on this network?"),
    (r"Connection closed|Connection reset|kex_exchange_identification",
     "the connection was closed by the device", "is sshd healthy and accepting connections?"),
]


def _explain(stderr: str) -> tuple:
    for pattern, what, hint in _SSH_FAILURES:
        if re.search(pattern, stderr, re.IGNORECASE):
            return what, hint
    last = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return (last[-1].strip() if last else "ssh failed"), None


@dataclass
class RemoteResult:
    """What a remote command returned."""

    returncode: int
    stdout: bytes
    stderr: str
    seconds: float

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8."""
        return self.stdout.decode("utf-8", "replace")


class SshTransport:
    """Runs commands on one device through ``ssh``.

    Args:
        device: ``user@host[:port]`` or an ssh config alias.
        identity: private key file (``-i``), with ``IdentitiesOnly=yes``.
        port: overrides a port given in ``device``.
        connect_timeout: seconds for TCP connect plus the SSH handshake.
        host_key_check: ``accept-new`` (default: trust a first-seen key, refuse a changed one), ``yes`` or ``no``.
        known_hosts: a known_hosts file to use instead of ~/.ssh/known_hosts.
        multiplex: share one connection between commands (ControlMaster); off for diagnostics.
        ssh_options: extra ``-o`` options, e.g. ``["ProxyJump=bastion"]``.
    """

    def __init__(self, device: str, *, identity: Optional[str] = None, port: Optional[int] = None,
                 connect_timeout: float = 10, host_key_check: str = "accept-new",
                 known_hosts: Optional[str] = None, multiplex: bool = True,
                 ssh_options: Sequence[str] = ()):
        if shutil.which("ssh") is None:
            raise DeviceError("the OpenSSH client 'ssh' is not installed on this machine",
                              hint="install openssh-client")
        self.address = parse_device(device)
        if port is not None:
            self.address = DeviceAddress(self.address.host, self.address.user, int(port))
        if identity is not None:
            identity = os.path.expanduser(str(identity))
            if not os.path.isfile(identity):
                raise InputError("the identity file does not exist", path=identity)
        if host_key_check not in HOST_KEY_POLICIES:
            raise InputError(f"host_key_check must be one of {', '.join(HOST_KEY_POLICIES)}")
        self.identity = identity
        self.connect_timeout = max(1, int(round(connect_timeout)))
        self.host_key_check = host_key_check
        self.known_hosts = known_hosts
        self.ssh_options = list(ssh_options)
        self._control_dir = tempfile.mkdtemp(prefix="esq-ssh-") if multiplex else None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ command lines
    def base_args(self) -> List[str]:
        """The ssh command line up to (not including) the remote command."""
        args = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", f"StrictHostKeyChecking={self.host_key_check}", "-o", "LogLevel=ERROR"]
        if self.known_hosts:
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            args += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.address.port:
            args += ["-p", str(self.address.port)]
        if self._control_dir:
            args += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%C",
                     "-o", "ControlPersist=60"]
        for opt in self.ssh_options:
            args += ["-o", opt]
        return args + ["--", self.address.destination]

    # ------------------------------------------------------------------ running
    def run(self, command: str, *, timeout: float, input: Optional[bytes] = None,  # noqa: A002 - subprocess's name
            check: bool = True, what: str = "remote command",
            cancel: Optional[threading.Event] = None) -> RemoteResult:
        """Run ``command`` (a shell command line) on the device and wait for it.

        Args:
            command: what the device's shell runs (quote arguments with :func:`shlex.quote`).
            timeout: wall-clock seconds for the whole step; the local ssh is killed when it runs out.
            input: bytes for the command's stdin.
            check: raise :class:`DeviceError` on a non-zero exit.
            what: the step's name, for error messages.
            cancel: an event that, when set, stops the step (KeyboardInterrupt is raised).

        Returns:
            RemoteResult with the exit code, stdout (bytes), stderr (text) and duration.

        Raises:
            DeviceError: ssh could not connect or authenticate (exit 255), the step timed out, or (with
                ``check``) the command failed.
        """
        start = time.monotonic()
        proc = self.popen(command, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = self._communicate(proc, input, timeout, what, cancel)
        result = RemoteResult(proc.returncode, out, err.decode("utf-8", "replace"), time.monotonic() - start)
        if result.returncode == 255:
            self.raise_connection_error(result.stderr, what)
        if check and result.returncode != 0:
            tail = " ".join(result.stderr.strip().splitlines()[-3:]) or result.text.strip()[-300:]
            raise DeviceError(f"{what} failed on {self.address} (exit {result.returncode}): {tail}")
        return result

    def _communicate(self, proc: subprocess.Popen, input: Optional[bytes], timeout: float, what: str,  # noqa: A002
                     cancel: Optional[threading.Event]):
        deadline = time.monotonic() + timeout
        while True:
            step = min(0.5, max(0.01, deadline - time.monotonic())) if cancel is not None else \
                max(0.01, deadline - time.monotonic())
            try:
                return proc.communicate(input, timeout=step)
            except subprocess.TimeoutExpired:
                input = None  # communicate() keeps feeding stdin across retries
                if cancel is not None and cancel.is_set():
                    self._kill(proc)
                    raise KeyboardInterrupt(f"{what} cancelled")
                if time.monotonic() >= deadline:
                    self._kill(proc)
                    raise DeviceError(f"{what} on {self.address} timed out after {timeout:g} s",
                                      hint="raise the timeout, or check that the device is responsive")
            except BaseException:
                self._kill(proc)
                raise

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        # With ControlMaster the master holds copies of our pipes until the remote command ends, so wait
        # for the local ssh process only, then close our ends (never wait for EOF here).
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def raise_connection_error(self, stderr: str, what: str = "ssh") -> None:
        """Raise the :class:`DeviceError` that explains ssh's exit 255."""
        reason, hint = _explain(stderr)
        if reason == "connection timed out":
            reason = f"connection timed out after {self.connect_timeout} s"
        if reason == "authentication failed":
            key = f" with key {self.identity}" if self.identity else ""
            raise DeviceError(f"authentication failed on {self.address}{key} ({what})", hint=hint)
        raise DeviceError(f"cannot reach {self.address}: {reason} ({what})", hint=hint)

    def popen(self, command: str, **kwargs) -> subprocess.Popen:
        """Start ``command`` on the device without waiting (stdin/stdout as in ``kwargs``).

        ssh runs in its own session so that a Ctrl-C in the terminal reaches edgesqueeze only, which then
        stops the remote work on purpose (and keeps partial results) instead of losing the connection.
        """
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(self.base_args() + [command], **kwargs)

    def send_files(self, command: str, items, *, timeout: float, chunk: int = 1 << 18,
                   progress: Optional[Callable[[int], None]] = None) -> int:
        """Stream several files into one remote ``command`` over a single ssh session; return bytes sent.

        ``items`` are ``(header, local_path, offset)``: ``header`` (bytes, e.g. one JSON line) is written, then
        ``local_path[offset:]``. The remote command decides what to do with the stream (deploy's receiver
        appends each file to its ``.part``). ``progress(n)`` is called after each chunk; it may raise (e.g.
        KeyboardInterrupt) to stop the transfer, which leaves whatever arrived on the device.

        Raises:
            DeviceError: connection failure, the remote command failed, or ``timeout`` seconds passed.
        """
        proc = self.popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sent = 0
        deadline = time.monotonic() + timeout
        try:
            for header, local_path, offset in items:
                proc.stdin.write(header)
                with open(local_path, "rb") as fh:
                    fh.seek(offset)
                    while True:
                        block = fh.read(chunk)
                        if not block:
                            break
                        proc.stdin.write(block)
                        sent += len(block)
                        if progress is not None:
                            progress(len(block))
                        if time.monotonic() > deadline:
                            raise DeviceError(f"upload to {self.address} timed out after {timeout:g} s")
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))  # closes stdin
        except BrokenPipeError:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise DeviceError(f"upload to {self.address} timed out after {timeout:g} s") from None
        except BaseException:
            # interrupted: end the stream so that what is in flight still lands in the .part (a later deploy
            # resumes from there), then stop the local ssh
            try:
                proc.stdin.close()
                proc.wait(timeout=3)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            self._kill(proc)
            raise
        stderr = err.decode("utf-8", "replace")
        if proc.returncode == 255:
            self.raise_connection_error(stderr, "upload")
        if proc.returncode != 0:
            raise DeviceError(f"upload to {self.address} failed (exit {proc.returncode}): "
                              f"{' '.join(stderr.strip().splitlines()[-2:])}",
                              hint="is the device's disk full or the folder read-only?")
        return sent

    def close(self) -> None:
        """Stop the shared master connection and remove its socket folder."""
        if self._control_dir is None:
            return
        with self._lock:
            if self._control_dir is None:
                return
            sock_dir, self._control_dir = self._control_dir, None
        if os.listdir(sock_dir):
            args = ["ssh", "-o", f"ControlPath={sock_dir}/%C", "-O", "exit"]
            if self.address.port:
                args += ["-p", str(self.address.port)]
            try:
                subprocess.run(args + ["--", self.address.destination], capture_output=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(sock_dir, ignore_errors=True)

    def __enter__(self) -> "SshTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # a forgotten close() must not leave a master process behind
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
