"""Canonical Huffman coding of integer symbol streams (numpy-vectorised encoder, table-driven decoder).

Codes are limited to 15 bits so that a code-length table fits in 4-bit nibbles and the decoder's lookup table
has at most 32768 entries; when the optimal code is longer the symbol counts are halved (rounding up) until it
fits, which costs a fraction of a percent on real streams.
"""
from __future__ import annotations

import heapq
from typing import Tuple

import numpy as np

from ..errors import InputError

MAX_CODE_LENGTH = 15


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code length of every symbol from its count (0 for symbols that never occur).

    Ties are broken by symbol order, so equal counts always give the same code. A stream of one distinct symbol
    gets a 1-bit code.
    """
    counts = np.asarray(counts, dtype=np.int64).copy()
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, np.uint8)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    if used.size > 2 ** max_length:
        raise InputError(f"{used.size} symbols cannot be coded in {max_length} bits")
    while True:
        heap = [(int(counts[s]), i, [int(s)]) for i, s in enumerate(used)]
        heapq.heapify(heap)
        depth = {int(s): 0 for s in used}
        tie = len(heap)
        while len(heap) > 1:
            c1, _, s1 = heapq.heappop(heap)
            c2, _, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                depth[s] += 1
            heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
            tie += 1
        if max(depth.values()) <= max_length:
            for s, d in depth.items():
                lengths[s] = d
            return lengths
        counts[used] = (counts[used] + 1) // 2


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values for the given lengths (shorter codes first, then by symbol)."""
    lengths = np.asarray(lengths)
    codes = np.zeros(lengths.size, np.uint32)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (int(lengths[s]), int(s))):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> Tuple[bytes, int]:
    """Encode ``symbols`` (non-negative ints) with the canonical code of ``lengths``.

    Returns:
        ``(data, nbits)``: the bit stream, most significant bit first, padded with zeros to whole bytes.

    Raises:
        InputError: a symbol has no code (length 0 or outside the table).
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if symbols.size == 0:
        return b"", 0
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.min() < 0 or symbols.max() >= lengths.size or (lengths[symbols] == 0).any():
        raise InputError("symbol without a Huffman code")
    codes = canonical_codes(lengths).astype(np.int64)
    sl, sc = lengths[symbols], codes[symbols]
    width = int(sl.max())
    chunks = []
    for start in range(0, symbols.size, 1 << 16):  # bounded memory for long streams
        ln, cd = sl[start:start + (1 << 16)], sc[start:start + (1 << 16)]
        shifts = ln[:, None] - 1 - np.arange(width)[None, :]
        chunks.append(((cd[:, None] >> np.maximum(shifts, 0)) & 1)[shifts >= 0].astype(np.uint8))
    bits = np.concatenate(chunks)
    return np.packbits(bits).tobytes(), int(bits.size)


def decode(data: bytes, count: int, lengths: np.ndarray) -> np.ndarray:
    """Decode ``count`` symbols from ``data`` with the canonical code of ``lengths``.

    Raises:
        InputError: the stream ends early or holds a bit pattern that is no code.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, np.int64)
    width = int(lengths.max()) if lengths.size else 0
    if width == 0:
        raise InputError("Huffman table is empty")
    codes = canonical_codes(lengths)
    table_sym = np.full(1 << width, -1, np.int64)
    table_len = np.zeros(1 << width, np.int64)
    for s in np.flatnonzero(lengths):
        lo = int(codes[s]) << (width - int(lengths[s]))
        hi = (int(codes[s]) + 1) << (width - int(lengths[s]))
        table_sym[lo:hi] = s
        table_len[lo:hi] = lengths[s]
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    bits = np.concatenate([bits, np.zeros(width, np.uint8)])
    limit = bits.size - width
    windows = np.zeros(limit, np.uint32)  # the next `width` bits at every bit position
    for b in range(width):
        windows <<= 1
        windows |= bits[b:b + limit]
    win = windows.tolist()
    tsym, tlen = table_sym.tolist(), table_len.tolist()
    out = [0] * count
    pos = 0
    for i in range(count):
        if pos >= limit:
            raise InputError("Huffman stream ends early")
        w = win[pos]
        s = tsym[w]
        if s < 0:
            raise InputError("invalid Huffman code in stream")
        out[i] = s
        pos += tlen[w]
    if pos > limit:
        raise InputError("Huffman stream ends early")
    return np.asarray(out, dtype=np.int64)
