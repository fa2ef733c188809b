"""Bundle manifest and verification: hashes of every file, a flipped byte or a missing file is caught,
reproducible archives, safe extraction."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from edgesqueeze.bundle import (SCHEMA, archive_bytes, check_bundle, extract_archive, read_manifest, verify_bundle,
                                write_archive)
from edgesqueeze.errors import InputError, VerificationError
from edgesqueeze.fileio import sha256_file

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A real FP16 bundle of the digits model for orin-nano (fast: no calibration)."""
    from edgesqueeze.pipeline import build

    out = tmp_path_factory.mktemp("b") / "bundle"
    build(DIGITS, "orin-nano", out, precision="fp16", progress=False)
    return out


@pytest.fixture
def copy(bundle_dir, tmp_path):
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_manifest_lists_every_file_with_its_sha256(bundle_dir):
    m = read_manifest(bundle_dir)
    assert m["schema"] == SCHEMA
    on_disk = sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*")
                     if p.is_file() and p.name != "manifest.json")
    assert sorted(m["files"]) == on_disk
    for rel, entry in m["files"].items():
        assert entry["sha256"] == sha256_file(bundle_dir / rel)
        assert entry["size"] == (bundle_dir / rel).stat().st_size
    assert m["models"]["deploy"] == "models/model.fp16.onnx"
    assert m["target"]["name"] == "orin-nano" and m["precision"] == "fp16"
    assert set(m["versions"]) >= {"edgesqueeze", "onnx", "onnxruntime"}
    assert m["inputs"] == {"input": {"shape": [1, 1, 8, 8], "dtype": "float32"}}
    assert "build_engine.sh" in m["files"] and "run_on_device.py" in m["files"]
    text = (bundle_dir / "manifest.json").read_text()
    assert str(bundle_dir) not in text and str(DIGITS.parent) not in text  # no absolute paths


def test_verify_accepts_an_intact_bundle(bundle_dir):
    assert verify_bundle(bundle_dir)["schema"] == SCHEMA


def test_a_flipped_byte_is_detected_and_named(copy):
    f = copy / "models" / "model.fp32.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as e:
        verify_bundle(copy)
    assert "models/model.fp32.onnx" in str(e.value) and "sha256" in str(e.value)


def test_a_missing_file_is_detected_and_named(copy):
    (copy / "build_engine.sh").unlink()
    with pytest.raises(VerificationError) as e:
        verify_bundle(copy)
    assert "build_engine.sh" in str(e.value) and "missing" in str(e.value)


def test_a_truncated_file_is_a_size_problem(copy):
    f = copy / "run_on_device.py"
    f.write_bytes(f.read_bytes()[:-1])
    report = check_bundle(copy)
    assert not report["ok"] and report["problems"][0]["path"] == "run_on_device.py"
    assert "size" in report["problems"][0]["problem"]


def test_device_outputs_are_ignored_and_other_extras_listed(copy):
    (copy / "engines").mkdir()
    (copy / "engines" / "model.trt100300.fp16.abc.engine").write_bytes(b"engine")
    (copy / "notes.txt").write_text("mine")
    report = check_bundle(copy)
    assert report["ok"] and report["extra"] == ["notes.txt"]


def test_bad_manifests(copy, tmp_path):
    with pytest.raises(InputError):
        verify_bundle(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="manifest.json is missing"):
        verify_bundle(empty)
    m = json.loads((copy / "manifest.json").read_text())
    m["schema"] = "edgesqueeze.bundle/99"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(VerificationError, match="unknown bundle schema"):
        verify_bundle(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(VerificationError, match="not valid JSON"):
        verify_bundle(copy)
    m["schema"] = SCHEMA
    m["files"]["../escape"] = {"sha256": "0", "size": 0}
    (copy / "manifest.json").write_text(json.dumps(m))
    assert any(p["problem"] == "unsafe path in the manifest" for p in check_bundle(copy)["problems"])


def test_archive_is_reproducible_and_verifies(bundle_dir, tmp_path):
    a = archive_bytes(bundle_dir, "bundle")
    assert a == archive_bytes(bundle_dir, "bundle")
    assert a[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "bundle/manifest.json" in names
    assert {m.mtime for m in members} == {315532800} and {m.uid for m in members} == {0}
    assert next(m for m in members if m.name == "bundle/build_engine.sh").mode == 0o755
    path = write_archive(bundle_dir, tmp_path / "bundle.tar.gz")
    assert path.read_bytes() == a
    root = extract_archive(path, tmp_path / "x")
    assert verify_bundle(root)["models"]["deploy"] == "models/model.fp16.onnx"


def test_extract_refuses_unsafe_entries(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"x"
        ti = tarfile.TarInfo("../outside.txt")
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    with pytest.raises(InputError, match="unsafe archive entry"):
        extract_archive(evil, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(InputError, match="cannot read the bundle archive"):
        extract_archive(junk, tmp_path / "out2")


def test_verify_cli(cli, bundle_dir, copy):
    code, out, err = cli("verify", str(bundle_dir))
    assert code == 0 and "OK" in out
    code, out, _ = cli("verify", str(bundle_dir), "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    (copy / "models" / "model.fp16.onnx").unlink()
    code, out, _ = cli("verify", str(write_archive(bundle_dir, copy.parent / "b.tar.gz")))
    assert code == 0 and "OK" in out
    code, out, err = cli("verify", str(copy))
    assert code == 7
    assert "model.fp16.onnx" in err and "missing" in err and "Traceback" not in err
