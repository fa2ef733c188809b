"""`.esq` files from someone else: bounded decoding, checksums that name the tensor a flipped bit hit."""
from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compress_nets import conv_net
from edgesqueeze.cli import main
from edgesqueeze.compress import prune_magnitude, share_weights
from edgesqueeze.compress.esq import MAGIC, _uv, pack, unpack
from edgesqueeze.errors import InputError


@pytest.fixture(scope="module")
def packed():
    model = share_weights(prune_magnitude(conv_net(), 0.8)[0])[0]
    data, _ = pack(model)
    return model, data


def _peak_mb(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


def _skeleton(dims):
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims)
    g = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], [w])
    return zlib.compress(helper.make_model(g).SerializeToString())


def _v1_file(skeleton: bytes, record: bytes) -> bytes:
    return MAGIC + _uv(1) + _uv(len(skeleton)) + skeleton + _uv(1) + record


def test_small_header_declaring_a_huge_tensor_allocates_nothing():
    """A ~100-byte file declaring a 16384x16384 tensor whose records cannot hold it."""
    skel = _skeleton([16384, 16384])
    record = _uv(1) + b"w" + bytes([1]) + _uv(2) + _uv(16384) + _uv(16384) + bytes([8, 0]) + _uv(16384 * 16384)
    data = _v1_file(skel, record)
    assert len(data) < 200

    def run():
        with pytest.raises(InputError):
            unpack(data)
    assert _peak_mb(run) < 16


def test_the_weight_budget_is_enforced_before_allocating():
    skel = _skeleton([4096, 4096])  # 64 MiB of float32, stored as "all zeros" (no entries)
    record = _uv(1) + b"w" + bytes([1]) + _uv(2) + _uv(4096) + _uv(4096) + bytes([8, 1]) + _uv(0)
    with pytest.raises(InputError, match="more than the limit"):
        unpack(_v1_file(skel, record), max_bytes=1 << 20)


def test_zlib_bomb_in_the_skeleton_is_capped():
    bomb = zlib.compress(b"\0" * (600 << 20), 9)  # ~0.6 MB that would inflate to 600 MiB
    data = MAGIC + _uv(1) + _uv(len(bomb)) + bomb + _uv(0)

    def run():
        with pytest.raises(InputError, match="inflates to more than"):
            unpack(data)
    assert _peak_mb(run) < 300


def test_every_single_bit_flip_is_an_error(packed):
    """400 seeded flips anywhere in the file: each one is refused, none unpacks to changed weights."""
    _, data = packed
    rng = np.random.default_rng(0)
    named = 0
    for pos in rng.integers(0, len(data), 400):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(InputError) as exc:
            unpack(bytes(bad))
        named += exc.value.tensor is not None
    assert named > 100  # most of the file is tensor bodies: the error says which tensor


def test_v2_roundtrip_still_exact(packed):
    model, data = packed
    assert data[4] == 2
    back = unpack(data)
    for a, b in zip(model.graph.initializer, back.graph.initializer):
        assert onnx.numpy_helper.to_array(a).tobytes() == onnx.numpy_helper.to_array(b).tobytes()


def test_cli_unpack_of_corrupt_file_exits_3(tmp_path, packed):
    _, data = packed
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x10
    src = tmp_path / "bad.esq"
    src.write_bytes(bytes(bad))
    out = tmp_path / "out.onnx"
    assert main(["unpack", str(src), "-o", str(out)]) == 3
    assert not out.exists() and src.read_bytes() == bytes(bad)


def test_unpack_refuses_a_fifo(tmp_path):
    import os
    fifo = tmp_path / "pipe.esq"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        unpack(fifo)
