"""Protobuf wire format, the few pieces that let a model be written and measured without serialising it whole:
varints, length-delimited fields, and a walk over a serialised message's fields by their tags alone (issue 15).
Standard library only."""
from __future__ import annotations

from typing import Iterator, Optional, Tuple


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it."""
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def fields(data: bytes, pos: int = 0, end: Optional[int] = None) -> Iterator[Tuple[int, int, int, int]]:
    """The fields of the serialised message ``data[pos:end]``, read from their tags alone (no copy):
    ``(number, start of the field, start of its value, end of its value)``; a length-delimited value's start is
    after its length."""
    end = len(data) if end is None else end
    while pos < end:
        start = pos
        key, pos = read_varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, stop = read_varint(data, pos)
        elif wire == 2:
            size, pos = read_varint(data, pos)
            stop = pos + size
        elif wire in (1, 5):
            stop = pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if stop > end:
            raise ValueError("truncated protobuf field")
        yield key >> 3, start, pos, stop
        pos = stop


def split_fields(data: bytes, number: int) -> Tuple[bytes, bytes]:
    """Split the serialised message ``data`` before its first field numbered above ``number`` (protobuf writes
    fields in the order of their numbers)."""
    for field, start, _, _ in fields(data):
        if field > number:
            return data[:start], data[start:]
    return data, b""


def length_field(number: int, size: int) -> bytes:
    """The tag and length of a length-delimited field ``number`` of ``size`` bytes."""
    return varint(number << 3 | 2) + varint(size)
