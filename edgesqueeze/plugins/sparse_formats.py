"""Compressed forms of a sparse convolution weight, as the ``SparseConv`` op and its CUDA kernels store them.

The dense weight ``W[M,C,kh,kw]`` is viewed as ``A[M,R]``, ``R = kh*kw*C``, reduction index
``r = (ky*kw + kx)*C + c`` (input channel fastest). ``"2:4"``: ``values [M, R/2]`` (the 2 kept weights of each
group of 4 consecutive ``r``) and int32 ``metadata [M, ceil(R/32)]`` (two 2-bit positions per group, 8 groups per
word, group ``g`` in bits ``4*(g%8)..+3``). ``"csr"``: ``values [nnz]``, int32 ``col [nnz]`` (``r``), int32
``row_ptr [M+1]``. See :mod:`edgesqueeze.plugins.sparse` for the op.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

FORMATS = ("2:4", "csr")


def _as_matrix(weight: np.ndarray) -> np.ndarray:
    """``W[M,C,kh,kw]`` → ``A[M, kh*kw*C]`` with the input channel fastest."""
    if weight.ndim != 4:
        raise InputError(f"SparseConv weight must be [M,C,kh,kw], got shape {list(weight.shape)}")
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(weight.shape[0], -1)


def _from_matrix(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    m, c, kh, kw = shape
    return np.ascontiguousarray(a.reshape(m, kh, kw, c).transpose(0, 3, 1, 2))


def is_2_4_sparse(weight: np.ndarray) -> bool:
    """True when ``weight [M,C,kh,kw]`` has C % 4 == 0 and at most 2 non-zeros per group of 4 input channels."""
    if weight.ndim != 4 or weight.shape[1] % 4:
        return False
    groups = _as_matrix(np.asarray(weight)).reshape(weight.shape[0], -1, 4)
    return bool((np.count_nonzero(groups, axis=2) <= 2).all())


def compress_2_4(weight: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Compress a 2:4-sparse weight.

    Args:
        weight: ``[M, C, kh, kw]`` with C % 4 == 0 and at most 2 non-zeros in each group of 4 input channels.

    Returns:
        ``(values [M, R/2] in weight's dtype, metadata int32 [M, ceil(R/32)])`` as described in the module doc.

    Raises:
        InputError: C % 4 != 0 or a group with more than 2 non-zeros (names the first one).
    """
    weight = np.asarray(weight)
    if weight.ndim != 4 or weight.shape[1] % 4:
        raise InputError(f"2:4 sparsity needs a [M,C,kh,kw] weight with C % 4 == 0, got {list(weight.shape)}")
    a = _as_matrix(weight)
    m, r = a.shape
    groups = a.reshape(m, r // 4, 4)
    nz = groups != 0
    bad = np.argwhere(nz.sum(axis=2) > 2)
    if len(bad):
        row, g = (int(v) for v in bad[0])
        raise InputError(f"weight is not 2:4 sparse: output channel {row}, group {g} (reduction indices "
                         f"{4 * g}..{4 * g + 3}) has {int(nz[row, g].sum())} non-zeros",
                         hint="prune with 'edgesqueeze compress --sparsity 2:4' first")
    # Kept positions: the non-zeros, padded with the lowest zero positions, in increasing order.
    order = np.argsort(~nz, axis=2, kind="stable")[:, :, :2]   # non-zeros first, each side in position order
    pos = np.sort(order, axis=2)
    values = np.take_along_axis(groups, pos, axis=2).reshape(m, r // 2)
    nibbles = (pos[:, :, 0] | (pos[:, :, 1] << 2)).astype(np.uint64)   # [M, G]
    words = -(-(r // 4) // 8)
    padded = np.zeros((m, words * 8), dtype=np.uint64)
    padded[:, :r // 4] = nibbles
    shifts = (4 * np.arange(8, dtype=np.uint64))[None, None, :]
    packed = (padded.reshape(m, words, 8) << shifts).sum(axis=2).astype(np.uint32)
    return np.ascontiguousarray(values), packed.view(np.int32)


def decompress_2_4(values: np.ndarray, metadata: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`compress_2_4`: the dense ``[M, C, kh, kw]`` weight."""
    m, c, kh, kw = (int(v) for v in shape)
    r = kh * kw * c
    words = metadata.view(np.uint32).astype(np.uint64)
    fields = (words[:, :, None] >> (2 * np.arange(16, dtype=np.uint64))[None, None, :]) & 3
    pos = fields.reshape(m, -1)[:, :r // 2].astype(np.int64) + 4 * (np.arange(r // 2) // 2)[None, :]
    a = np.zeros((m, r), dtype=values.dtype)
    np.put_along_axis(a, pos, values, axis=1)
    return _from_matrix(a, (m, c, kh, kw))


def compress_csr(weight: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compress any weight ``[M, C, kh, kw]`` to CSR over ``A[M, R]``.

    Returns:
        ``(values [nnz], col int32 [nnz], row_ptr int32 [M+1])``.
    """
    a = _as_matrix(np.asarray(weight))
    rows, cols = np.nonzero(a)
    row_ptr = np.zeros(a.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=a.shape[0]), out=row_ptr[1:])
    return np.ascontiguousarray(a[rows, cols]), cols.astype(np.int32), row_ptr.astype(np.int32)


def decompress_csr(values: np.ndarray, col: np.ndarray, row_ptr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`compress_csr`: the dense ``[M, C, kh, kw]`` weight."""
    m, c, kh, kw = (int(v) for v in shape)
    a = np.zeros((m, kh * kw * c), dtype=values.dtype)
    rows = np.repeat(np.arange(m), np.diff(row_ptr.astype(np.int64)))
    a[rows, col.astype(np.int64)] = values
    return _from_matrix(a, (m, c, kh, kw))


def compressed_bytes(weight: np.ndarray, sparse_format: str) -> int:
    """Bytes the compressed weight occupies (values + indices), to compare with ``weight.nbytes``."""
    if sparse_format == "2:4":
        return sum(a.nbytes for a in compress_2_4(weight))
    if sparse_format == "csr":
        return sum(a.nbytes for a in compress_csr(weight))
    raise InputError(f"unknown sparse_format '{sparse_format}'; expected one of: {', '.join(FORMATS)}")


def choose_format(weight: np.ndarray, csr_max_density: float = 0.25) -> Optional[str]:
    """The format worth using for ``weight``: ``"2:4"`` when it is 2:4 sparse, ``"csr"`` when at most
    ``csr_max_density`` of it is non-zero (CSR's 4-byte column index costs as much as an FP32 value), else None."""
    if is_2_4_sparse(weight):
        return "2:4"
    density = np.count_nonzero(weight) / max(1, weight.size)
    return "csr" if density <= csr_max_density else None


def sparse_conv_inputs(weight: np.ndarray, sparse_format: str, dtype=np.float32) -> Dict[str, np.ndarray]:
    """The compressed arrays of ``weight`` in node input order (after X, before B), keyed by function input name."""
    w = np.asarray(weight, dtype=dtype)
    if sparse_format == "2:4":
        values, meta = compress_2_4(w)
        return {"values": values, "metadata": meta}
    if sparse_format == "csr":
        values, col, row_ptr = compress_csr(w)
        return {"values": values, "col": col, "row_ptr": row_ptr}
    raise InputError(f"unknown sparse_format '{sparse_format}'; expected one of: {', '.join(FORMATS)}")
