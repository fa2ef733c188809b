"""The TensorRT INT8 calibration cache (text): the one reader, writer and re-tagger of the format.

Quantization writes it, the TensorRT runner and the bundle read it; it lives here, below both in the
import order. The on-device runner (``deploy/device_runner.py``, standard library only) carries a copy
of :data:`HEADER_PATTERN` and of :func:`retag_text`; a test pins that copy to this module.

Format (TENSORRT.md)::

    TRT-8201-EntropyCalibration2
    input: 3c010a14
    conv1_out: 3d4a8f12

The first line is ``TRT-<NV_TENSORRT_VERSION>-<algorithm>``; each following line is ``tensor: hex`` where hex
is the IEEE-754 float32 bit pattern of the scale (amax / 127), big-endian. TensorRT sets the tensor's
dynamic range to +-127 x scale, and skips a cache whose header does not match its own version and calibrator.
Names keep the order they are given in (a cache read and written back is the same file).
"""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Dict, List, Mapping, Tuple, Union

import numpy as np

from ..errors import InputError
from ..fileio import PathLike, write_bytes_atomic

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
DEFAULT_ALGORITHM = "EntropyCalibration2"  # trtexec's --calib reads a cache with an EntropyCalibrator2
HEADER_PATTERN = r"^TRT-(\d+)-([A-Za-z0-9]+)$"
_HEADER = re.compile(HEADER_PATTERN)
_HEX = re.compile(r"[0-9a-fA-F]{1,8}")


def version_tag(trt_version: Union[str, int]) -> str:
    """``"8.2.1"`` -> ``"8201"``, ``"10.3"`` -> ``"100300"``; a tag of digits passes through.

    Raises:
        InputError: not a version.
    """
    text = str(trt_version).strip()
    if text.isdigit():
        return text
    from ..devices import trt_version_tag

    try:
        return trt_version_tag(text)
    except Exception as exc:  # noqa: BLE001 - packaging raises InvalidVersion
        raise InputError(f"bad TensorRT version '{trt_version}' (expected e.g. 8.2.1 or 10.3)") from exc


def scale_to_hex(scale: float) -> str:
    """Big-endian float32 bit pattern of ``scale`` as 8 lowercase hex digits."""
    return struct.pack(">f", np.float32(scale)).hex()


def hex_to_scale(text: str) -> float:
    """Inverse of :func:`scale_to_hex`; also accepts short forms such as ``0``."""
    return struct.unpack(">f", struct.pack(">I", int(text, 16)))[0]


def header_info(header: str) -> Tuple[str, str]:
    """``"TRT-8201-EntropyCalibration2"`` -> ``("8201", "EntropyCalibration2")``.

    Raises:
        InputError: not a cache header.
    """
    m = _HEADER.match(header.strip())
    if not m:
        raise InputError(f"bad calibration cache header '{header}'")
    return m.group(1), m.group(2)


def _lines(text: str) -> List[str]:
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return lines


def parse_cache(text: str, path: str = "") -> Tuple[str, str, Dict[str, float]]:
    """Parse cache text into ``(version_tag, algorithm, {tensor: scale})`` (names in file order).

    Raises:
        InputError: the header or a line is malformed (naming the line).
    """
    source = path or None
    lines = _lines(text)
    m = _HEADER.match(lines[0].strip()) if lines else None
    if not m:
        head = lines[0][:60] if lines else ""
        raise InputError(f"not a TensorRT calibration cache: first line '{head}' is not TRT-<version>-<algorithm>",
                         path=source)
    scales: Dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not _HEX.fullmatch(value):
            raise InputError(f"line {number} is not 'tensor: hex': '{line[:80]}'", path=source)
        scales[name] = hex_to_scale(value)
    return m.group(1), m.group(2), scales


def format_cache(scales: Mapping[str, float], trt_version: Union[str, int],
                 algorithm: str = DEFAULT_ALGORITHM) -> str:
    """Return the cache text for ``{tensor: scale}`` (in the mapping's order).

    ``trt_version`` is a version (``"8.2.1"``) or a tag (``"8201"``).

    Raises:
        InputError: a bad version, algorithm, scale or tensor name.
    """
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown calibration algorithm '{algorithm}'; choose one of {', '.join(ALGORITHMS)}")
    lines = [f"TRT-{version_tag(trt_version)}-{algorithm}"]
    for name, value in scales.items():
        if any(c in name for c in "\n\r"):
            raise InputError("a tensor name holds a line break and cannot go into a calibration cache", tensor=name)
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise InputError(f"scale {value} is not a finite non-negative number", tensor=name)
        lines.append(f"{name}: {scale_to_hex(value)}")
    return "\n".join(lines) + "\n"


def format_calibration_cache(amax: Mapping[str, float], trt_version: Union[str, int] = "8.2.1",
                             algorithm: str = DEFAULT_ALGORITHM) -> str:
    """Return the cache text for ``{tensor: amax}`` (scale = amax / 127, in the mapping's order).

    Raises:
        InputError: a bad version, algorithm, amax value or tensor name.
    """
    scales = {}
    for name, value in amax.items():
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise InputError(f"amax {value} is not a finite non-negative number", tensor=name)
        scales[name] = value / 127.0
    return format_cache(scales, trt_version, algorithm)


def write_calibration_cache(path: PathLike, amax: Mapping[str, float], trt_version: Union[str, int] = "8.2.1",
                            algorithm: str = DEFAULT_ALGORITHM) -> Path:
    """Write a TensorRT calibration cache atomically.

    Args:
        path: output file (e.g. ``calibration.cache``).
        amax: ``{tensor name: amax}``; the scale written is amax / 127 as float32.
        trt_version: the TensorRT version that will read it (``"8.2.1"``, ``"10.3"`` or a tag like ``"8201"``).
        algorithm: the calibrator name in the header.

    Returns:
        The written path.

    Raises:
        InputError: a bad version, algorithm, amax value or tensor name.
    """
    path = Path(path)
    write_bytes_atomic(path, format_calibration_cache(amax, trt_version, algorithm).encode("utf-8"))
    return path


def parse_calibration_cache(text: str, source: str = "<text>") -> Tuple[str, Dict[str, float]]:
    """Parse cache text into ``(header, {tensor: amax})``; see :func:`read_calibration_cache`."""
    tag, algorithm, scales = parse_cache(text, source)
    return f"TRT-{tag}-{algorithm}", {k: float(np.float64(v) * 127.0) for k, v in scales.items()}


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the calibration cache: {exc.strerror}", path=str(path)) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("not a TensorRT calibration cache: the file is not text", path=str(path)) from exc


def read_calibration_cache(path: PathLike) -> Tuple[str, Dict[str, float]]:
    """Read a TensorRT calibration cache (ours, trtexec's or Polygraphy's).

    Returns:
        ``(header, {tensor name: amax})`` with amax = scale x 127 (float64, so writing it back gives the same file).

    Raises:
        InputError: the file is missing, binary, or not in the cache format (the message names the line).
    """
    path = Path(path)
    return parse_calibration_cache(_read_text(path), str(path))


def retag_text(text: str, tag: str, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """Return ``text`` with its header replaced by ``TRT-<tag>-<algorithm>``; the scale lines stay as they are.

    Text whose first line is not a cache header comes back unchanged (the device runner's copy relies on
    this; :func:`retag_cache` validates first).
    """
    lines = text.split("\n")
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None or not _HEADER.match(lines[first].strip()):
        return text
    lines[first] = f"TRT-{tag}-{algorithm}" + ("\r" if lines[first].endswith("\r") else "")
    return "\n".join(lines)


def retag_cache(text: str, trt_version: Union[str, int], algorithm: str = DEFAULT_ALGORITHM,
                path: str = "") -> str:
    """Re-label a valid cache for another TensorRT version (the scales do not depend on the version).

    Raises:
        InputError: the text is not a calibration cache, or the version or algorithm is bad.
    """
    parse_cache(text, path)
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown calibration algorithm '{algorithm}'; choose one of {', '.join(ALGORITHMS)}")
    return retag_text(text, version_tag(trt_version), algorithm)


def cache_bytes_for(source: Union[str, Path, Mapping[str, float]], version_tag: str,
                    algorithm: str = DEFAULT_ALGORITHM) -> Tuple[bytes, str]:
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
        return format_calibration_cache(source, version_tag, algorithm).encode(), \
            f"calibration scales from {len(source)} amax values"
    path = Path(source)
    text = _read_text(path)
    tag, algo, scales = parse_cache(text, str(path))
    if tag == version_tag and algo == algorithm:
        return text.encode(), f"calibration cache {path.name} (TRT-{tag}-{algo})"
    return retag_cache(text, version_tag, algorithm, str(path)).encode(), (
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
