"""The ``.esq`` storage format: pruned + shared weights as relative-index sparse streams, codebooks and Huffman
codes (Deep Compression, Han et al. 2016), with the rest of the ONNX model alongside, zlib-compressed.

Layout (all integers are unsigned LEB128 varints unless marked; floats little-endian IEEE-754 binary32)::

    file      := "ESQ1" version(=2) skel_len skeleton crc32 n_tensors tensor*
    skeleton  := zlib(ONNX ModelProto, packed initializers with their data removed)
    tensor    := record_len crc32 record    # crc32 (u32 little-endian, zlib's) of the bytes it follows/precedes
    record    := str(name) u8 data_type(=1, float32) rank dim* u8 index_bits u8 mode entries
                 [mode 0: K  K x f32 codebook]  stream(gaps)  [mode 0: stream(values) | mode 1: entries x f32]
               | ... u8 index_bits u8 mode(=2) size  size x f32     # dense: smaller than mode 1 would be
    stream    := table nbytes byte*             # Huffman-coded, most significant bit first
    table     := min_symbol n_symbols ceil(n_symbols / 2) bytes of 4-bit code lengths (high nibble first, 0 = unused)
    str       := len utf-8 byte*

Version 1 files (no checksums, a tensor is its bare record) are still read. Reading is bounded: every count
and shape is checked against the bytes that remain and against the skeleton before anything is allocated,
the skeleton inflates to at most :data:`MAX_SKELETON_BYTES`, the weights to at most ``max_bytes`` (default
:data:`MAX_WEIGHT_BYTES`), and a flipped bit is an error naming the tensor (or the skeleton) it hit.

A tensor is flattened (C order) into *entries*: every non-zero weight, and a *filler zero* whenever a run of
zeros is longer than the index can express. Entry ``i`` has a gap ``g_i`` (zeros skipped before it, at most
``2**index_bits - 1``) and a value; positions are ``cumsum(g + 1) - 1``. In mode 0 (codebook) the value symbol
``s`` is ``codebook[s]``, and symbol ``K`` is the filler zero; in mode 1 (more than 256 distinct values, or a
codebook that would not save space) values are raw float32 and a filler is 0.0; a tensor for which mode 1 would
take more room than plain float32 (a dense layer) is stored as mode 2, every element raw, with no gap stream. "Non-zero" means a bit pattern other than +0.0, so unpacking
reproduces every weight bit for bit (-0.0 and NaN included).
"""
from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import onnx
from onnx import ModelProto

from ..errors import InputError
from . import huffman
from ._layers import copy_model, find_layers

MAGIC = b"ESQ1"
VERSION = 2
READS = (1, 2)
MAX_SKELETON_BYTES = 256 << 20    # the ONNX skeleton holds no packed weights: far above real models
MAX_WEIGHT_BYTES = 16 << 30       # default cap on the unpacked weights (``unpack(..., max_bytes=...)`` raises it)
MAX_CODEBOOK = 256
MODE_DENSE = 2  # every element as raw float32, no gaps: for tensors where sparse storage would be larger


# ----------------------------------------------------------------------------- varints
def _uv(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes, path: Optional[str]):
        self.buf, self.pos, self.path = data, 0, path

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise InputError("truncated .esq file", path=self.path)
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uv(self) -> int:
        n = shift = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n
            if shift > 63:
                raise InputError("corrupt varint in .esq file", path=self.path)

    def u8(self) -> int:
        return self.take(1)[0]

    def str(self) -> str:
        return self.take(self.uv()).decode("utf-8")


# ----------------------------------------------------------------------------- streams
def _table_bytes(lengths: np.ndarray) -> bytes:
    used = np.flatnonzero(lengths)
    lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 0)
    nib = np.asarray(lengths[lo:hi], np.uint8)
    if nib.size % 2:
        nib = np.append(nib, 0)
    packed = (nib[0::2] << 4) | nib[1::2]
    return _uv(lo) + _uv(hi - lo) + packed.astype(np.uint8).tobytes()


def _write_stream(symbols: np.ndarray, alphabet: int) -> Tuple[bytes, int]:
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet)) if symbols.size else \
        np.zeros(0, np.uint8)
    data, _ = huffman.encode(symbols, lengths)
    table = _table_bytes(lengths)
    return table + _uv(len(data)) + data, len(table)


def _read_stream(r: _Reader, count: int, alphabet: int, tensor: str) -> np.ndarray:
    lo, n = r.uv(), r.uv()
    if lo + n > alphabet:
        raise InputError(f"corrupt .esq stream: a code table of {lo + n} symbols for an alphabet of {alphabet}",
                         path=r.path, tensor=tensor)
    packed = np.frombuffer(r.take((n + 1) // 2), np.uint8)
    nib = np.empty(packed.size * 2, np.uint8)
    nib[0::2], nib[1::2] = packed >> 4, packed & 0x0F
    lengths = np.zeros(lo + n, np.uint8)
    lengths[lo:] = nib[:n]
    data = r.take(r.uv())
    if count > 8 * len(data):  # every symbol takes at least one bit
        raise InputError(f"corrupt .esq stream: {count} symbols declared in {len(data)} bytes", path=r.path,
                         tensor=tensor)
    try:
        return huffman.decode(data, count, lengths)
    except InputError as exc:
        raise InputError(f"corrupt .esq stream: {exc.message}", path=r.path) from exc


# ----------------------------------------------------------------------------- entries
def to_entries(flat_bits: np.ndarray, index_bits: int) -> Tuple[np.ndarray, np.ndarray]:
    """Relative-index entries of a flattened tensor given as uint32 bit patterns.

    Returns:
        ``(gaps, positions)``: the gap of every entry and the flat position of every entry's value, ``-1`` for a
        filler zero.
    """
    pos = np.flatnonzero(flat_bits)
    span = 1 << index_bits                     # a filler covers 2**b - 1 zeros and itself
    gaps = np.diff(np.concatenate([[-1], pos])) - 1
    fillers = gaps // span
    rest = gaps - fillers * span
    n = pos.size + int(fillers.sum())
    out_gaps = np.full(n, span - 1, np.int64)
    out_pos = np.full(n, -1, np.int64)
    ends = np.cumsum(fillers + 1) - 1          # index of each real entry after its fillers
    out_gaps[ends] = rest
    out_pos[ends] = pos
    return out_gaps, out_pos


# ----------------------------------------------------------------------------- pack
def pack(model: ModelProto, *, conv_index_bits: int = 8, fc_index_bits: int = 5,
         index_bits: Optional[Dict[str, int]] = None, dense_onnx_bytes: Optional[int] = None) -> Tuple[bytes, dict]:
    """Serialise ``model`` to ``.esq`` bytes: every Conv / Gemm / MatMul float32 weight (and bias) as sparse, shared,
    Huffman-coded streams; the rest of the model as a zlib-compressed ONNX skeleton.

    Args:
        model: the (pruned and/or shared) ONNX model.
        conv_index_bits: relative-index width for Conv weights (Han et al.: 8).
        fc_index_bits: relative-index width for Gemm / MatMul weights (Han et al.: 5).
        index_bits: per-weight overrides ``{weight or layer name: bits}``.
        dense_onnx_bytes: size of the dense fp32 ONNX file to compare with (default: this model serialised).

    Returns:
        ``(data, report)``: the file contents and a size breakdown per layer and in total (dense, sparse,
        + sharing, + Huffman bits, as in Table 1 of Han et al.).

    Raises:
        InputError: an index width outside 1..16.
    """
    overrides = dict(index_bits or {})
    for b in [conv_index_bits, fc_index_bits, *overrides.values()]:
        if not 1 <= int(b) <= 16:
            raise InputError(f"index bits must be in 1..16, got {b}")
    skel = copy_model(model)
    inits = {t.name: t for t in skel.graph.initializer}
    chosen: Dict[str, Tuple[str, int]] = {}
    for ly in find_layers(skel):
        t = inits[ly.weight]
        if t.data_type == onnx.TensorProto.FLOAT and ly.weight not in chosen:
            b = overrides.get(ly.weight, overrides.get(ly.name, conv_index_bits if ly.kind == "conv"
                                                       else fc_index_bits))
            chosen[ly.weight] = (ly.name, int(b))
        if ly.bias is not None and inits[ly.bias].data_type == onnx.TensorProto.FLOAT and ly.bias not in chosen:
            chosen[ly.bias] = (ly.name + ".bias", int(overrides.get(ly.bias, 4)))  # dense: gaps are all 0
    body = io.BytesIO()
    rows = []
    for name in chosen:  # graph order
        t = inits[name]
        arr = onnx.numpy_helper.to_array(t).astype(np.float32, copy=False)
        record = io.BytesIO()
        rows.append(_pack_tensor(record, name, chosen[name][0], arr, chosen[name][1]))
        body.write(_uv(record.tell()) + _crc(record.getvalue()) + record.getvalue())
        t.ClearField("raw_data")
        t.ClearField("float_data")
        if t.data_location == onnx.TensorProto.EXTERNAL:
            t.ClearField("data_location")
            t.ClearField("external_data")
    skeleton = zlib.compress(skel.SerializeToString(deterministic=True), 9)
    head = MAGIC + _uv(VERSION) + _uv(len(skeleton)) + skeleton + _crc(skeleton) + _uv(len(rows))
    data = head + body.getvalue()
    dense = dense_onnx_bytes if dense_onnx_bytes is not None else model.ByteSize()
    report = _size_report(rows, len(data), len(skeleton), dense)
    return data, report


def _pack_tensor(out: io.BytesIO, name: str, layer: str, arr: np.ndarray, index_bits: int) -> dict:
    flat = np.ascontiguousarray(arr).ravel().view(np.uint32)
    gaps, pos = to_entries(flat, index_bits)
    values_bits = flat[pos[pos >= 0]]
    codebook = np.unique(values_bits)
    fillers = int((pos < 0).sum())
    out.write(_uv(len(name.encode())) + name.encode() + bytes([onnx.TensorProto.FLOAT]) + _uv(arr.ndim)
              + b"".join(_uv(d) for d in arr.shape) + bytes([index_bits]))
    # a codebook pays off when the shared values plus their indices take less room than raw floats
    k_bits = max(1, math.ceil(math.log2(codebook.size + 1))) if codebook.size else 1
    mode = 0 if codebook.size <= MAX_CODEBOOK and codebook.size * 32 + gaps.size * k_bits < gaps.size * 32 else 1
    if mode == 1:  # no codebook: a mostly dense tensor is smaller stored plainly than with gap indices
        gap_stream_probe, _ = _write_stream(gaps, 1 << index_bits)
        if flat.size * 4 <= len(gap_stream_probe) + gaps.size * 4:
            out.write(bytes([MODE_DENSE]) + _uv(flat.size))
            start = out.tell()
            out.write(flat.astype("<u4").tobytes())
            return {"weight": name, "layer": layer, "shape": list(arr.shape), "params": int(arr.size),
                    "nonzero": int(values_bits.size), "entries": int(flat.size), "fillers": 0,
                    "index_bits": index_bits, "codebook": None, "value_bits": 32, "dense_bits": int(arr.size) * 32,
                    "sparse_bits": int(arr.size) * 32, "shared_bits": int(arr.size) * 32,
                    "huffman_bits": (out.tell() - start) * 8, "tables_bytes": 0, "stored": "dense"}
    out.write(bytes([mode]) + _uv(gaps.size))
    start = out.tell()
    if mode == 0:
        out.write(_uv(codebook.size) + codebook.astype("<u4").tobytes())
    gap_stream, gap_table = _write_stream(gaps, 1 << index_bits)
    out.write(gap_stream)
    if mode == 0:
        symbols = np.full(gaps.size, codebook.size, np.int64)
        symbols[pos >= 0] = np.searchsorted(codebook, values_bits)
        val_stream, val_table = _write_stream(symbols, codebook.size + 1)
        out.write(val_stream)
    else:
        raw = np.zeros(gaps.size, np.uint32)
        raw[pos >= 0] = values_bits
        out.write(raw.astype("<u4").tobytes())
        val_table = 0
    entries, k = int(gaps.size), int(codebook.size)
    value_bits = max(1, math.ceil(math.log2(k + (1 if fillers else 0)))) if mode == 0 and entries else 32
    return {"weight": name, "layer": layer, "shape": list(arr.shape), "params": int(arr.size),
            "nonzero": int(values_bits.size), "entries": entries, "fillers": fillers, "index_bits": index_bits,
            "codebook": k if mode == 0 else None, "value_bits": value_bits,
            "dense_bits": int(arr.size) * 32,
            "sparse_bits": entries * (32 + index_bits),
            "shared_bits": entries * (value_bits + index_bits) + (k * 32 if mode == 0 else 0),
            "huffman_bits": (out.tell() - start) * 8, "tables_bytes": gap_table + val_table,
            "stored": "codebook" if mode == 0 else "sparse"}


def _size_report(rows, file_bytes: int, skeleton_bytes: int, dense_bytes: int) -> dict:
    tot = {k: sum(r[k] for r in rows) for k in ("params", "nonzero", "entries", "dense_bits", "sparse_bits",
                                               "shared_bits", "huffman_bits")}
    for r in rows:
        r["ratio"] = round(r["dense_bits"] / max(r["huffman_bits"], 1), 2)
    return {"layers": rows, "totals": tot, "file_bytes": file_bytes, "skeleton_bytes": skeleton_bytes,
            "dense_onnx_bytes": dense_bytes, "weights_ratio": round(tot["dense_bits"] / max(tot["huffman_bits"], 1), 2),
            "file_ratio": round(dense_bytes / max(file_bytes, 1), 2)}


# ----------------------------------------------------------------------------- unpack
def _crc(data: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(data) & 0xFFFFFFFF)


def _inflate(data: bytes, limit: int, path: Optional[str], chunk: int = 16 << 20) -> bytes:
    """zlib-decompress ``data`` in chunks, refusing more than ``limit`` bytes of output."""
    inflater, parts, total = zlib.decompressobj(), [], 0
    while data:
        part = inflater.decompress(data, chunk)
        total += len(part)
        if total > limit:
            raise InputError(f"the .esq skeleton inflates to more than {limit >> 20} MiB", path=path)
        parts.append(part)
        data = inflater.unconsumed_tail
    return b"".join(parts) + inflater.flush()


def _read_skeleton(r: _Reader, version: int) -> ModelProto:
    compressed = r.take(r.uv())
    if version >= 2 and r.take(4) != _crc(compressed):
        raise InputError("corrupt .esq skeleton: checksum mismatch", path=r.path)
    try:
        model = ModelProto()
        model.ParseFromString(_inflate(compressed, MAX_SKELETON_BYTES, r.path))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, zlib its own
        raise InputError(f"corrupt .esq skeleton: {exc}", path=r.path) from exc
    return model


def unpack(source: Union[bytes, str, Path], *, max_bytes: int = MAX_WEIGHT_BYTES) -> ModelProto:
    """Rebuild the ONNX model from ``.esq`` bytes or a ``.esq`` file path.

    Args:
        source: the file's bytes, or its path.
        max_bytes: refuse a file whose weights unpack to more than this many bytes.

    Returns:
        The model with every packed weight restored bit for bit (as ``raw_data``).

    Raises:
        InputError: the file is missing, not an ``.esq`` file, of a newer version, truncated, corrupt (a
            checksum names the tensor), or declares more than ``max_bytes`` of weights.
    """
    path = None
    if not isinstance(source, (bytes, bytearray)):
        path = str(source)
        if Path(source).exists() and not Path(source).is_file():
            raise InputError("not a regular file (a folder, FIFO or device cannot be an .esq file)", path=path)
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", path=path) from exc
    r = _Reader(bytes(source), path)
    if r.take(4) != MAGIC:
        raise InputError("not an .esq file (bad magic)", path=path)
    version = r.uv()
    if version not in READS:
        raise InputError(f".esq version {version} is not supported (this edgesqueeze reads {READS[-1]})", path=path)
    model = _read_skeleton(r, version)
    inits = {t.name: t for t in model.graph.initializer}
    budget = [max_bytes]
    for _ in range(r.uv()):
        rec = r
        if version >= 2:
            size = r.uv()
            crc = r.take(4)
            body = r.take(size)
            if _crc(body) != crc:
                raise InputError("corrupt .esq tensor: checksum mismatch", path=path, tensor=_peek_name(body))
            rec = _Reader(body, path)
        name, arr = _read_tensor(rec, inits, budget)
        if rec is not r and rec.remaining():
            raise InputError("trailing bytes in a tensor record", path=path, tensor=name)
        inits[name].raw_data = arr.astype("<f4").tobytes()
    if r.pos != len(r.buf):
        raise InputError("trailing bytes after the last tensor", path=path)
    return model


def _peek_name(body: bytes) -> Optional[str]:
    try:
        return _Reader(body, None).str()
    except (InputError, UnicodeDecodeError):
        return None


def _read_header(r: _Reader, inits: dict, budget: list) -> Tuple[str, list, int, int, int]:
    """Name, shape, index bits, mode and entry count of a tensor, checked against the skeleton and the budget."""
    name = r.str()
    dtype = r.u8()
    if dtype != onnx.TensorProto.FLOAT:
        raise InputError(f"unsupported data type {dtype}", path=r.path, tensor=name)
    rank = r.uv()
    if rank > r.remaining():
        raise InputError("corrupt tensor header (rank)", path=r.path, tensor=name)
    shape = [r.uv() for _ in range(rank)]
    t = inits.get(name)
    if t is None or list(t.dims) != shape:
        raise InputError("packed tensor does not match the skeleton", path=r.path, tensor=name)
    size = math.prod(shape)
    if 4 * size > budget[0]:
        raise InputError(f"the weights unpack to more than the limit of {budget[0]} bytes left "
                         "(unpack(..., max_bytes=N) raises it)", path=r.path, tensor=name)
    budget[0] -= 4 * size
    index_bits, mode, n = r.u8(), r.u8(), r.uv()
    if not 1 <= index_bits <= 16 or mode not in (0, 1, MODE_DENSE):
        raise InputError("corrupt tensor header", path=r.path, tensor=name)
    if n > max(size, 1) * 2 + 8 * r.remaining():
        raise InputError(f"corrupt tensor header: {n} entries for {size} elements", path=r.path, tensor=name)
    return name, shape, index_bits, mode, n


def _read_tensor(r: _Reader, inits: dict, budget: list) -> Tuple[str, np.ndarray]:
    name, shape, index_bits, mode, n = _read_header(r, inits, budget)
    size = math.prod(shape)
    if mode == MODE_DENSE:
        if n != size:
            raise InputError("dense tensor length does not match its shape", path=r.path, tensor=name)
        return name, np.frombuffer(r.take(4 * n), "<u4").astype(np.uint32).view(np.float32).reshape(shape)
    codebook = None
    if mode == 0:
        k = r.uv()
        codebook = np.frombuffer(r.take(4 * k), "<u4").astype(np.uint32)
    gaps = _read_stream(r, n, 1 << index_bits, name)
    if mode == 0:
        symbols = _read_stream(r, n, codebook.size + 1, name)
        if n and symbols.max() > codebook.size:
            raise InputError("value symbol outside the codebook", path=r.path, tensor=name)
        values = np.append(codebook, np.uint32(0))[symbols]
    else:
        values = np.frombuffer(r.take(4 * n), "<u4").astype(np.uint32)
    pos = np.cumsum(gaps + 1) - 1
    if n and (pos[-1] >= size or gaps.max() >= (1 << index_bits)):
        raise InputError("entries run past the end of the tensor", path=r.path, tensor=name)
    flat = np.zeros(size, np.uint32)
    flat[pos] = values
    return name, flat.view(np.float32).reshape(shape)
