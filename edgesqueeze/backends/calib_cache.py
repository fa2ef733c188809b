"""A minimal TensorRT calibration-cache reader/writer for the TensorRT runner.

The full cache tooling lives in :mod:`edgesqueeze.quant`; the runner sits below it in the import
order, so it carries this small parser of the same text format (TENSORRT.md):

    TRT-8201-EntropyCalibration2
    input: 3c010a14

Each value is the big-endian IEEE-754 float32 bit pattern of the scale (amax / 127).
"""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

from ..errors import InputError

_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")


def parse_cache(text: str, path: str = "") -> Tuple[str, str, Dict[str, float]]:
    """Parse cache text into ``(version_tag, algorithm, {tensor: scale})``.

    Raises:
        InputError: the header or a line is malformed (naming the line).
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError("the calibration cache is empty", path=path or None)
    m = _HEADER.match(lines[0])
    if not m:
        raise InputError(f"line 1: expected a header like 'TRT-8201-EntropyCalibration2', got '{lines[0][:60]}'",
                         path=path or None)
    scales: Dict[str, float] = {}
    for i, line in enumerate(lines[1:], start=2):
        name, sep, hexval = line.rpartition(":")
        hexval = hexval.strip()
        if not sep or not name.strip() or not re.fullmatch(r"[0-9a-fA-F]{1,8}", hexval):
            raise InputError(f"line {i}: expected 'tensor: <8 hex digits>', got '{line[:60]}'", path=path or None)
        scales[name.strip()] = struct.unpack(">f", struct.pack(">I", int(hexval, 16)))[0]
    return m.group(1), m.group(2), scales


def format_cache(scales: Mapping[str, float], version_tag: str, algorithm: str = "EntropyCalibration2") -> str:
    """Write ``{tensor: scale}`` as cache text with header ``TRT-<version_tag>-<algorithm>`` (sorted names)."""
    out = [f"TRT-{version_tag}-{algorithm}"]
    for name in sorted(scales):
        out.append(f"{name}: {struct.unpack('>I', struct.pack('>f', float(scales[name])))[0]:08x}")
    return "\n".join(out) + "\n"


def cache_bytes_for(source: Union[str, Path, Mapping[str, float]], version_tag: str,
                    algorithm: str = "EntropyCalibration2") -> Tuple[bytes, str]:
    """Return cache bytes whose header matches the running TensorRT, and a note saying what was done.

    TensorRT ignores a cache whose header names another version and then asks the calibrator for data,
    which a cache-only calibrator does not have. The scales do not depend on the TensorRT version, so a
    cache from another version is re-labelled (the note says so).

    Args:
        source: a cache file path, or ``{tensor: amax}`` (scales are amax / 127).
        version_tag: NV_TENSORRT_VERSION digits of the running TensorRT (``"8201"``, ``"100300"``).

    Raises:
        InputError: the file is missing or malformed.
    """
    if isinstance(source, Mapping):
        return format_cache({k: float(v) / 127.0 for k, v in source.items()}, version_tag, algorithm).encode(), \
            f"calibration scales from {len(source)} amax values"
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the calibration cache: {exc.strerror}", path=str(path)) from exc
    tag, algo, scales = parse_cache(text, str(path))
    if tag == version_tag and algo == algorithm:
        return text.encode(), f"calibration cache {path.name} (TRT-{tag}-{algo})"
    return format_cache(scales, version_tag, algorithm).encode(), (
        f"calibration cache {path.name} was written for TRT-{tag}-{algo}; its {len(scales)} scales are "
        f"re-labelled TRT-{version_tag}-{algorithm} for this TensorRT")


def make_cache_calibrator(trt, cache: bytes):
    """An ``IInt8EntropyCalibrator2`` that only reads ``cache`` (it has no data to calibrate with).

    TensorRT calls ``read_calibration_cache`` first; when the header matches it never asks for batches.
    ``cache_bytes_for`` makes the header match, so ``get_batch`` returning None is a last resort that makes
    TensorRT report a calibration failure rather than hang.
    """

    class CacheOnlyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._cache = cache

        def get_batch_size(self):
            return 1

        def get_batch(self, names):  # noqa: ARG002 - TensorRT's signature
            return None

        def read_calibration_cache(self):
            return self._cache

        def write_calibration_cache(self, cache):  # noqa: ARG002 - the cache is ours, never overwritten
            return None

    return CacheOnlyCalibrator()
