"""Huffman coding and the .esq storage format: exact round trips, filler zeros, corrupt files."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from compress_nets import conv_net, mlp, residual_net
from edgesqueeze.compress import prune_magnitude, share_weights
from edgesqueeze.compress import huffman
from edgesqueeze.compress.esq import pack, to_entries, unpack
from edgesqueeze.errors import InputError
from edgesqueeze.model import random_feeds
from edgesqueeze.ortutil import run_model


def _roundtrip(symbols):
    lengths = huffman.code_lengths(np.bincount(symbols))
    data, nbits = huffman.encode(symbols, lengths)
    assert len(data) == (nbits + 7) // 8
    return huffman.decode(data, symbols.size, lengths), nbits


@pytest.mark.parametrize("kind", ["uniform", "skewed", "single", "fibonacci", "wide"])
def test_huffman_roundtrip(kind):
    rng = np.random.default_rng(0)
    if kind == "uniform":
        s = rng.integers(0, 32, 20000)
    elif kind == "skewed":
        s = rng.geometric(0.4, 30000) - 1
    elif kind == "single":
        s = np.full(100, 7)
    elif kind == "fibonacci":  # optimal code longer than 15 bits: the length limit kicks in
        fib = [1, 1]
        while len(fib) < 25:
            fib.append(fib[-1] + fib[-2])
        s = np.repeat(np.arange(25), fib)
        rng.shuffle(s)
    else:
        s = rng.integers(0, 4000, 20000)
    dec, nbits = _roundtrip(s)
    assert np.array_equal(dec, s)
    lengths = huffman.code_lengths(np.bincount(s))
    assert lengths.max() <= huffman.MAX_CODE_LENGTH
    used = lengths[lengths > 0].astype(float)
    assert np.sum(2.0 ** -used) <= 1.0 + 1e-12   # Kraft: a prefix code
    if kind == "skewed":
        p = np.bincount(s) / s.size
        entropy = -np.sum(p[p > 0] * np.log2(p[p > 0]))
        assert entropy * s.size <= nbits < (entropy + 1) * s.size


def test_huffman_rejects_bad_streams():
    lengths = huffman.code_lengths(np.array([5, 3, 1]))
    with pytest.raises(InputError):
        huffman.encode(np.array([3]), lengths)
    data, _ = huffman.encode(np.array([0, 1, 2, 0]), lengths)
    with pytest.raises(InputError):
        huffman.decode(data, 40, lengths)


def test_relative_index_fillers():
    flat = np.zeros(100, np.uint32)
    flat[[0, 3, 40, 99]] = 1
    gaps, pos = to_entries(flat, 3)   # at most 7 zeros per gap; a filler covers 8 positions
    assert gaps.max() <= 7
    assert np.array_equal(pos[pos >= 0], [0, 3, 40, 99])
    assert np.array_equal(np.cumsum(gaps + 1) - 1, np.where(pos >= 0, pos, np.cumsum(gaps + 1) - 1))
    assert (pos < 0).sum() == 36 // 8 + 58 // 8


def _weights(model):
    return {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}


@pytest.mark.parametrize("make", [mlp, conv_net, residual_net])
def test_pack_unpack_exact(make):
    m = make()
    pruned, _ = prune_magnitude(m, 0.9)
    shared, _ = share_weights(pruned)
    for model in (m, pruned, shared):
        data, rep = pack(model)
        back = unpack(data)
        assert _weights(back) == _weights(model)
        assert back.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)
        assert pack(back)[0] == data  # deterministic
    feeds = random_feeds(m)[0]
    np.testing.assert_array_equal(run_model(unpack(pack(shared)[0]), feeds)["y"], run_model(shared, feeds)["y"])


def test_size_breakdown_shrinks_at_every_stage():
    m = mlp((64, 300, 100, 10))   # LeNet-300-100 shape on 8x8 digits
    shared, _ = share_weights(prune_magnitude(m, 0.92)[0])
    data, rep = pack(shared, dense_onnx_bytes=m.ByteSize())
    t = rep["totals"]
    assert t["dense_bits"] > t["sparse_bits"] > t["shared_bits"] > t["huffman_bits"]
    assert rep["file_bytes"] == len(data)
    assert rep["file_ratio"] > 25


def test_pack_special_values_and_raw_mode(tmp_path):
    m = mlp((16, 600, 4))
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[np.random.default_rng(1).random(w.shape) < 0.8] = 0  # sparse enough that gap indices pay off
    w[0, :4] = [-0.0, np.nan, np.inf, 0.0]
    w[1, :] = 0
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, m.graph.initializer[0].name))
    data, rep = pack(m, fc_index_bits=2)
    assert rep["layers"][0]["codebook"] is None  # > 256 distinct values: raw float32 values
    assert rep["layers"][0]["stored"] == "sparse"
    assert rep["layers"][0]["fillers"] > 0
    path = tmp_path / "m.esq"
    path.write_bytes(data)
    assert _weights(unpack(path)) == _weights(m)


def test_unpack_errors(tmp_path):
    data, _ = pack(mlp())
    with pytest.raises(InputError, match="bad magic"):
        unpack(b"ONNX" + data[4:])
    with pytest.raises(InputError, match="truncated|corrupt|ends early"):
        unpack(data[: len(data) - 7])
    with pytest.raises(InputError, match="version"):
        unpack(data[:4] + b"\x09" + data[5:])
    with pytest.raises(InputError, match="cannot read"):
        unpack(tmp_path / "missing.esq")
    with pytest.raises(InputError):
        pack(mlp(), fc_index_bits=0)


def test_dense_layer_is_stored_plainly_not_larger(tmp_path):
    """A dense layer with > 256 distinct values would grow with gap indices: it is stored as raw float32."""
    m = mlp((16, 600, 4))
    data, rep = pack(m)
    layer = rep["layers"][0]
    assert layer["stored"] == "dense"
    assert layer["huffman_bits"] == layer["dense_bits"]
    path = tmp_path / "d.esq"
    path.write_bytes(data)
    assert _weights(unpack(path)) == _weights(m)
