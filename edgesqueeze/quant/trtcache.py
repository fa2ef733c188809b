"""TensorRT INT8 calibration cache (text): write ours, read ours and those of trtexec/Polygraphy.

Format (TENSORRT.md)::

    TRT-8201-EntropyCalibration2
    input: 3c010a14
    conv1_out: 3d4a8f12

The first line is ``TRT-<NV_TENSORRT_VERSION>-<algorithm>``; each following line is ``tensor: hex`` where hex is
the IEEE-754 float32 bit pattern of the scale (amax / 127), big-endian. TensorRT sets the tensor's dynamic range
to +-127 x scale, and skips a cache whose header does not match its own version and calibrator.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

import numpy as np

from ..errors import InputError
from ..fileio import PathLike, write_bytes_atomic

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")


def version_tag(trt_version: Union[str, int]) -> str:
    """``"8.2.1"`` -> ``"8201"``, ``"10.3"`` -> ``"100300"``; a tag of digits passes through."""
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


def format_calibration_cache(amax: Mapping[str, float], trt_version: Union[str, int] = "8.2.1",
                             algorithm: str = "EntropyCalibration2") -> str:
    """Return the cache text for ``{tensor: amax}`` (in the mapping's order)."""
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown calibration algorithm '{algorithm}'; choose one of {', '.join(ALGORITHMS)}")
    lines = [f"TRT-{version_tag(trt_version)}-{algorithm}"]
    for name, value in amax.items():
        if any(c in name for c in "\n\r"):
            raise InputError("a tensor name holds a line break and cannot go into a calibration cache", tensor=name)
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise InputError(f"amax {value} is not a finite non-negative number", tensor=name)
        lines.append(f"{name}: {scale_to_hex(value / 127.0)}")
    return "\n".join(lines) + "\n"


def write_calibration_cache(path: PathLike, amax: Mapping[str, float], trt_version: Union[str, int] = "8.2.1",
                            algorithm: str = "EntropyCalibration2") -> Path:
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
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not _HEADER.match(lines[0].strip()):
        head = lines[0][:60] if lines else ""
        raise InputError(f"not a TensorRT calibration cache: first line '{head}' is not TRT-<version>-<algorithm>",
                         path=source)
    amax: Dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not name or not re.fullmatch(r"[0-9a-fA-F]{1,8}", value):
            raise InputError(f"line {number} is not 'tensor: hex': '{line[:80]}'", path=source)
        amax[name] = float(np.float64(hex_to_scale(value)) * 127.0)
    return lines[0].strip(), amax


def read_calibration_cache(path: PathLike) -> Tuple[str, Dict[str, float]]:
    """Read a TensorRT calibration cache (ours, trtexec's or Polygraphy's).

    Returns:
        ``(header, {tensor name: amax})`` with amax = scale x 127 (float64, so writing it back gives the same file).

    Raises:
        InputError: the file is missing, binary, or not in the cache format (the message names the line).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the calibration cache: {exc.strerror}", path=str(path)) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("not a TensorRT calibration cache: the file is not text", path=str(path)) from exc
    return parse_calibration_cache(text, str(path))


def header_info(header: str) -> Tuple[str, str]:
    """``"TRT-8201-EntropyCalibration2"`` -> ``("8201", "EntropyCalibration2")``."""
    m = _HEADER.match(header.strip())
    if not m:
        raise InputError(f"bad calibration cache header '{header}'")
    return m.group(1), m.group(2)
