"""Hostile inputs: seeded mutations of every file format the CLI reads, .npz bombs, non-regular files and a
corrupt calibration cache. Every run must end with a documented exit code (never 1), within a memory bound,
leaving its inputs unchanged and writing nothing outside its output folder."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import resource
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgesqueeze.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"
CALIB = ROOT / "examples" / "digits" / "calib.npz"
ALLOWED = {0, 2, 3, 4, 5, 6, 7}
RSS_BOUND_MB = 600  # growth of the process's peak RSS one run may cause
CASES = 24  # mutations per format


# ------------------------------------------------------------------------------------------ helpers
def _sha(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256("".join(f"{p.relative_to(path)}:{_sha(p)}" for p in sorted(path.rglob("*"))
                                      if p.is_file()).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(work: Path):
    return sorted(str(p.relative_to(work)) for p in work.rglob("*") if "out" not in p.relative_to(work).parts)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_hostile(args, work: Path, inputs, capsys, allowed=ALLOWED) -> tuple:
    """Run ``edgesqueeze args`` in-process; check exit code, memory growth, inputs and what was written."""
    sums = {p: _sha(p) for p in inputs}
    before = _listing(work)
    rss = _maxrss_mb()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc in allowed, f"edgesqueeze {' '.join(map(str, args))} exited {rc}: {err[-1500:]}"
    assert _maxrss_mb() - rss < RSS_BOUND_MB, f"{args}: peak RSS grew by {_maxrss_mb() - rss:.0f} MB"
    assert {p: _sha(p) for p in inputs} == sums, f"{args}: an input changed"
    assert _listing(work) == before, f"{args}: wrote outside the output folder"
    return rc, err


def _mutate(data: bytes, rng: random.Random, kind: str) -> bytes:
    """One mutation: bit flips, truncation, byte insertion or a huge declared size (0xffffffff)."""
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del buf[rng.randrange(1, len(buf)):]
    elif kind == "insert":
        i = rng.randrange(len(buf))
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:  # huge: a protobuf varint or a little-endian length of ~4 G / 2^63
        i = rng.randrange(max(1, min(len(buf), 4096) - 10))
        buf[i:i + 10] = rng.choice([b"\xff" * 9 + b"\x7f", b"\xff\xff\xff\xff\x0f" * 2, b"\xff\xff\xff\xff" * 2 + b"\0\0"])
    return bytes(buf)


def _huge_zip_sizes(data: bytes) -> bytes:
    """Declare every member of a zip 0xfffffff0 bytes uncompressed (local headers and central directory)."""
    buf = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = buf.find(sig)
        while i >= 0:
            buf[i + off:i + off + 4] = struct.pack("<L", 0xFFFFFFF0)
            i = buf.find(sig, i + 4)
    return bytes(buf)


def _huge_tar_size(data: bytes) -> bytes:
    """Declare the first tar member of a .tar.gz 8 GiB long (its octal size field), checksum kept valid."""
    tar = bytearray(gzip.decompress(data))
    tar[124:136] = b"77777777777\0"
    tar[148:156] = b" " * 8
    tar[148:156] = b"%06o\0 " % sum(tar[:512])
    return gzip.compress(bytes(tar), mtime=0)


KINDS = ("flip", "truncate", "insert", "huge")


def _cases(name: str):
    rng = random.Random(f"fuzz-{name}")
    return [(i, KINDS[i % len(KINDS)], rng.randrange(1 << 30)) for i in range(CASES)]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def artefacts(tmp_path_factory):
    """The digits model packed as .esq and built as a CPU bundle with its archive, once per session."""
    base = tmp_path_factory.mktemp("fuzz-artefacts")
    os.environ.setdefault("EDGESQUEEZE_CACHE", str(base / "cache"))
    assert main(["-q", "pack", str(DIGITS), "-o", str(base / "digits.esq")]) == 0
    assert main(["-q", "build", str(DIGITS), "--target", "cpu", "-o", str(base / "bundle"), "--archive"]) == 0
    return {"esq": base / "digits.esq", "bundle": base / "bundle", "archive": base / "bundle.tar.gz"}


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESQUEEZE_CACHE", str(tmp_path / "out" / "cache"))
    (tmp_path / "out").mkdir()
    return tmp_path


# ------------------------------------------------------------------------------------------ fuzzing
@pytest.mark.parametrize("fmt", ["onnx", "npz", "esq", "archive"])
def test_mutated_files(fmt, work, artefacts, capsys):
    """Mutated .onnx/.npz/.esq/.tar.gz files: the matching verb exits with a documented code."""
    source = {"onnx": DIGITS, "npz": CALIB, "esq": artefacts.get("esq"), "archive": artefacts.get("archive")}[fmt]
    original = source.read_bytes()
    for i, kind, seed in _cases(fmt):
        data = _mutate(original, random.Random(seed), kind)
        if kind == "huge" and fmt == "npz" and i % 2:
            data = _huge_zip_sizes(original)
        if kind == "huge" and fmt == "archive" and i % 2:
            data = _huge_tar_size(original)
        path = work / f"case{i}{''.join(source.suffixes)}"
        path.write_bytes(data)
        out = work / "out" / f"o{i}"
        args = {"onnx": ["inspect", path] if i % 2 else ["optimize", path, "-o", out.with_suffix(".onnx")],
                "npz": ["quantize", DIGITS, "-p", "int8", "--calib", path, "--limit", "10", "--no-cache",
                        "-o", out.with_suffix(".onnx")],
                "esq": ["unpack", path, "-o", out.with_suffix(".onnx")],
                "archive": ["verify", path]}[fmt]
        run_hostile(["-q"] + args, work, [path, DIGITS], capsys)


def test_mutated_bundles(work, artefacts, capsys):
    """A bundle folder with a mutated manifest or model: verify exits with a documented code."""
    for i, kind, seed in _cases("bundle"):
        bundle = work / f"bundle{i}"
        shutil.copytree(artefacts["bundle"], bundle)
        target = bundle / "manifest.json" if i % 2 else next((bundle / "models").glob("*.onnx"))
        text = target.read_bytes()
        if kind == "huge" and target.name == "manifest.json":
            data = json.loads(text)
            data["files"] = {name: dict(entry, size=2 ** 62) for name, entry in data["files"].items()}
            mutated = json.dumps(data).encode()
        else:
            mutated = _mutate(text, random.Random(seed), kind)
        target.write_bytes(mutated)
        run_hostile(["-q", "verify", bundle], work, [bundle], capsys)


# ------------------------------------------------------------------------------------------ .npz bombs
def _deflate_zeros(prefix: bytes, total: int) -> bytes:
    """A raw deflate stream of ``prefix`` then zeros up to ``total`` bytes, built without inflating it."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    chunk = 1 << 24
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = z.compress(bytes(chunk)) + z.flush(zlib.Z_FULL_FLUSH)
    return head + block * ((total - len(prefix)) // chunk) + b"\x03\x00"  # an empty final block


def _npy_header(dtype: str, shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _write_zip(path: Path, members) -> None:
    """A zip of ``{name: (raw deflate bytes, uncompressed size, crc)}``, written by hand."""
    out, central = bytearray(), bytearray()
    for name, (raw, size, crc) in members.items():
        n = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(raw), size, len(n),
                               0, 0, 0, 0, 0, len(out)) + n
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(raw), size, len(n), 0) + n + raw
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central),
                                 len(out), 0)
    path.write_bytes(bytes(out))


def _member(arr: np.ndarray):
    data = io.BytesIO()
    np.save(data, arr)
    raw = data.getvalue()
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(raw) + c.flush(), len(raw), zlib.crc32(raw)


def _bomb(rows: int):
    """A ~3 MB member that inflates to ~3 GB of float32 [rows, 1, 8, 8] zeros (its CRC is never reached)."""
    header = _npy_header("<f4", (rows, 1, 8, 8))
    total = len(header) + rows * 256
    return _deflate_zeros(header, total) + b"", total, 0


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bombs")
    with np.load(CALIB) as z:
        x, y = z["input"], z["label"]
    rows = (3 << 30) // 256 // (1 << 16) * (1 << 16)  # whole 16 MiB chunks
    _write_zip(base / "unused.npz", {"input.npy": _member(x), "label.npy": _member(y), "junk.npy": _bomb(rows)})
    _write_zip(base / "used.npz", {"input.npy": _bomb(rows)})
    assert (base / "used.npz").stat().st_size < 4 << 20
    return base


@pytest.mark.parametrize("name,limit", [("unused", None), ("unused", 10), ("used", 10)])
def test_npz_bomb_is_not_inflated(name, limit, bombs, work, capsys):
    """A 3 MB .npz inflating to 3 GB: a member never used is never decompressed; --limit reads only its rows."""
    path = bombs / f"{name}.npz"
    args = ["-q", "quantize", DIGITS, "-p", "int8", "--calib", path, "--no-cache", "-o", work / "out" / "q.onnx"]
    rc, err = run_hostile(args + (["--limit", str(limit)] if limit else []), work, [path], capsys)
    assert rc in (0, 3, 4), err


def test_npz_size_limit(bombs, work, capsys, monkeypatch):
    """A used member above the documented limit is refused from the zip directory, before inflating it."""
    monkeypatch.setenv("EDGESQUEEZE_MAX_DATA_BYTES", str(1 << 20))
    path = bombs / "used.npz"
    rc, err = run_hostile(["quantize", DIGITS, "-p", "int8", "--calib", path, "-o", work / "out" / "q.onnx"],
                          work, [path], capsys)
    assert rc == 3 and "above the limit" in err and "EDGESQUEEZE_MAX_DATA_BYTES" in err


# ------------------------------------------------------------------------------------------ non-regular files
def test_non_regular_files_are_refused(work, capsys):
    """A FIFO (which would block) and /dev/zero (endless) as a model or as data: exit 3 at once."""
    fifo = work / "model.onnx"
    os.mkfifo(fifo)
    data_fifo = work / "calib.npz"
    os.mkfifo(data_fifo)
    for args in (["inspect", fifo], ["inspect", "/dev/zero"], ["optimize", "/dev/zero", "-o", work / "out/o.onnx"],
                 ["quantize", DIGITS, "-p", "int8", "--calib", data_fifo, "-o", work / "out/q.onnx"]):
        rc, err = run_hostile(args, work, [], capsys)
        assert rc == 3 and "not a regular file" in err, err


def test_memory_error_names_the_file(work, capsys, monkeypatch):
    """A MemoryError while reading an input becomes exit 3 naming the file, not an internal error."""
    import edgesqueeze.model as model_mod

    def boom(path):
        raise MemoryError()

    monkeypatch.setattr(model_mod, "_parse_bytes", boom)
    rc, err = run_hostile(["inspect", DIGITS], work, [DIGITS], capsys)
    assert rc == 3 and str(DIGITS) in err and "MemoryError" in err


# ------------------------------------------------------------------------------------------ calibration cache
def _cache_entry(cache: Path) -> Path:
    entries = list((cache / "calib").glob("*.json"))
    assert len(entries) == 1
    return entries[0]


@pytest.mark.parametrize("damage", ["partial", "truncated", "nan", "foreign"])
def test_corrupt_calibration_cache_is_a_miss(damage, work, capsys):
    """A partial, truncated, non-finite or foreign cache entry is recomputed with a warning: same model out."""
    args = ["quantize", DIGITS, "-p", "int8", "--calib", CALIB, "--limit", "20"]
    out = work / "out"
    assert main([str(a) for a in args + ["-o", out / "a.onnx"]]) == 0
    entry = _cache_entry(out / "cache")
    data = json.loads(entry.read_text())
    if damage == "partial":
        data["amax"] = data["amax"][:2]
    elif damage == "nan":
        data["amax"][0][1] = float("nan")
    elif damage == "foreign":
        data["key"] = "0" * 64
    text = json.dumps(data) if damage != "truncated" else entry.read_text()[:100]
    entry.write_text(text)
    capsys.readouterr()
    assert main([str(a) for a in args + ["-o", out / "b.onnx"]]) == 0
    err = capsys.readouterr().err
    assert "calibration cache entry" in err and "ignored" in err and "(cached)" not in err
    assert (out / "a.onnx").read_bytes() == (out / "b.onnx").read_bytes()
    assert json.loads(_cache_entry(out / "cache").read_text())["count"] > 2  # rewritten whole


def test_negative_labels_are_an_input_error(work, capsys):
    """Labels are class indices: a negative one is exit 3, not a silent 0 % top-1."""
    with np.load(CALIB) as z:
        x = z["input"][:10]
    path = work / "neg.npz"
    np.savez(path, input=x, label=-np.ones(10, np.int64))
    rc, err = run_hostile(["eval", DIGITS, "--data", path], work, [path], capsys)
    assert rc == 3 and "class indices >= 0" in err
