"""TensorRT INT8 calibration cache: quantization's names for the one implementation of the format.

The format (reader, writer, header pattern, re-tagging) is defined once, in
:mod:`edgesqueeze.backends.calib_cache`, below quant in the import order because the TensorRT runner and
the bundle read it too.
"""
from __future__ import annotations

from ..backends.calib_cache import (ALGORITHMS, format_calibration_cache, header_info, hex_to_scale,
                                    parse_calibration_cache, read_calibration_cache, scale_to_hex, version_tag,
                                    write_calibration_cache)

__all__ = ["ALGORITHMS", "format_calibration_cache", "header_info", "hex_to_scale", "parse_calibration_cache",
           "read_calibration_cache", "scale_to_hex", "version_tag", "write_calibration_cache"]
