"""Signed bundles: the manifest signed with the user's SSH key, in OpenSSH's own signature format.

A bundle is code (``build_engine.sh``, a CMake project, the on-device runner): its sha256 manifest finds
accidents, but anyone who edits a script can update the hash. A signature over ``manifest.json`` (which holds
the sha256 of every other file) made with ``ssh-keygen -Y sign`` under the namespace ``edgesqueeze`` ties the
whole bundle to a key; ``ssh-keygen -Y verify`` against an *allowed signers* file (``man ssh-keygen``,
"ALLOWED SIGNERS") checks it. The signature lives next to the manifest as ``manifest.json.sig``.

>>> sign_bundle("bundle/", "~/.ssh/id_ed25519")                     # doctest: +SKIP
>>> verify_signature("bundle/", "~/.ssh/allowed_signers")           # doctest: +SKIP
'me@example.com'
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import InputError, MissingDependencyError, VerificationError
from ..fileio import PathLike, write_bytes_atomic
from .manifest import MANIFEST, verify_bundle

SIGNATURE = MANIFEST + ".sig"
NAMESPACE = "edgesqueeze"


def _ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise MissingDependencyError("ssh-keygen (OpenSSH 8.1 or newer) is needed to sign or check bundles",
                                     hint="install the OpenSSH client (e.g. apt-get install openssh-client)")
    return exe


def _run(args, *, stdin: bytes = b"", what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([_ssh_keygen(), *args], input=stdin, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"ssh-keygen timed out while {what} (a key with a passphrase needs ssh-agent)") from exc


def _first_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else f"exit status {proc.returncode}"


def _existing_file(path: PathLike, what: str) -> Path:
    """``path`` with ``~`` expanded; raises :class:`InputError` when it is not a file."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise InputError(f"no such {what}", path=str(p))
    return p


def is_signed(bundle: PathLike) -> bool:
    """True when the bundle folder carries a manifest signature."""
    return (Path(bundle) / SIGNATURE).is_file()


def sign_bundle(bundle: PathLike, key: PathLike) -> Path:
    """Check the bundle, then sign its manifest with the SSH private key ``key`` (or a public key whose private
    half is in ssh-agent); write ``manifest.json.sig`` atomically and return its path.

    Raises:
        InputError: no such key, or ssh-keygen could not sign with it (a passphrase without an agent).
        VerificationError: the bundle does not match its manifest (a changed bundle is never signed).
        MissingDependencyError: no ssh-keygen on PATH.
    """
    root = Path(bundle)
    key = _existing_file(key, "SSH key file")
    verify_bundle(root)
    with tempfile.TemporaryDirectory(prefix="edgesqueeze-sign-") as tmp:
        copy = Path(tmp) / MANIFEST
        copy.write_bytes((root / MANIFEST).read_bytes())
        proc = _run(["-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE, str(copy)], what="signing")
        sig = copy.with_name(SIGNATURE)
        if proc.returncode != 0 or not sig.is_file():
            raise InputError(f"ssh-keygen could not sign: {_first_line(proc)}", path=str(key))
        write_bytes_atomic(root / SIGNATURE, sig.read_bytes())
    return root / SIGNATURE


def verify_signature(bundle: PathLike, allowed_signers: PathLike) -> str:
    """Check the bundle's files against its manifest and the manifest's signature against ``allowed_signers``.

    Returns:
        The principal (as named in ``allowed_signers``) whose key signed the bundle.

    Raises:
        InputError: no such allowed-signers file.
        VerificationError: unsigned, a signature by no allowed key, a manifest changed since signing, or a
            file changed since the manifest was written.
        MissingDependencyError: no ssh-keygen on PATH.
    """
    root = Path(bundle)
    allowed = _existing_file(allowed_signers, "allowed-signers file")
    verify_bundle(root)
    sig = root / SIGNATURE
    if not sig.is_file():
        raise VerificationError("the bundle is not signed (no manifest.json.sig)", path=str(root),
                                hint="sign it with 'edgesqueeze sign BUNDLE --key KEY'")
    found = _run(["-Y", "find-principals", "-s", str(sig), "-f", str(allowed)], what="checking the signature")
    principals = found.stdout.decode("utf-8", "replace").split() if found.returncode == 0 else []
    if not principals:
        raise VerificationError("the bundle is signed by a key that the allowed-signers file does not list",
                                path=str(sig))
    manifest = (root / MANIFEST).read_bytes()
    for principal in principals:
        proc = _run(["-Y", "verify", "-f", str(allowed), "-I", principal, "-n", NAMESPACE, "-s", str(sig)],
                    stdin=manifest, what="checking the signature")
        if proc.returncode == 0:
            return principal
    raise VerificationError(f"the manifest signature does not verify: {_first_line(proc)}", path=str(sig),
                            hint="the manifest changed after it was signed")
