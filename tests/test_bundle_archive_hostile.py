"""Bundle archives from someone else: streamed extraction, capped sizes and entry counts."""
from __future__ import annotations

import io
import tarfile
import tracemalloc

import pytest

from edgesqueeze.bundle.archive import extract_archive
from edgesqueeze.errors import InputError


class _Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def _bomb(path, size, with_manifest=True):
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        if with_manifest:
            ti = tarfile.TarInfo("b/manifest.json")
            ti.size = 2
            tar.addfile(ti, io.BytesIO(b"{}"))
        ti = tarfile.TarInfo("b/models/model.onnx")
        ti.size = size
        tar.addfile(ti, _Zeros(size))


def test_a_member_is_copied_in_a_stream(tmp_path):
    """A 300 MiB member (a few hundred kB compressed) unpacks without holding it in memory."""
    arc = tmp_path / "big.tar.gz"
    _bomb(arc, 300 << 20)
    assert arc.stat().st_size < 2 << 20
    tracemalloc.start()
    root = extract_archive(arc, tmp_path / "x")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (root / "models" / "model.onnx").stat().st_size == 300 << 20
    assert peak < 32 << 20


def test_the_declared_size_is_capped_before_writing(tmp_path):
    arc = tmp_path / "bomb.tar.gz"
    _bomb(arc, 64 << 20)
    with pytest.raises(InputError, match="unpacks to more than"):
        extract_archive(arc, tmp_path / "x", limit=16 << 20)
    assert not (tmp_path / "x" / "b" / "models").exists()


def test_too_many_entries_are_refused(tmp_path):
    arc = tmp_path / "many.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        for i in range(10001):
            ti = tarfile.TarInfo(f"b/f{i}")
            tar.addfile(ti, io.BytesIO(b""))
    with pytest.raises(InputError, match="entries"):
        extract_archive(arc, tmp_path / "x")


def test_a_truncated_stream_is_bad_input(tmp_path):
    arc = tmp_path / "cut.tar.gz"
    _bomb(arc, 8 << 20)
    arc.write_bytes(arc.read_bytes()[:-200])
    with pytest.raises(InputError, match="cannot read the bundle archive"):
        extract_archive(arc, tmp_path / "x")
