"""TensorRT calibration cache: the exact text format, TENSORRT.md's example, byte-exact round trips, bad files."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from edgesqueeze.errors import InputError
from edgesqueeze.quant import read_calibration_cache, write_calibration_cache
from edgesqueeze.quant.trtcache import format_calibration_cache, header_info, scale_to_hex, version_tag

TENSORRT_MD_EXAMPLE = "TRT-8203-EntropyCalibration2\ninput: 3c010a14\nconv1_out: 3d4a8f12\n"


def test_reads_the_tensorrt_md_example(tmp_path):
    path = tmp_path / "calibration.cache"
    path.write_text(TENSORRT_MD_EXAMPLE)
    header, amax = read_calibration_cache(path)
    assert header == "TRT-8203-EntropyCalibration2"
    assert header_info(header) == ("8203", "EntropyCalibration2")
    assert list(amax) == ["input", "conv1_out"]
    # 0x3c010a14 is the float32 scale 0.0078749...; amax = 127 x scale
    scale = struct.unpack(">f", bytes.fromhex("3c010a14"))[0]
    assert amax["input"] == pytest.approx(127 * scale, rel=1e-12)
    assert amax["input"] == pytest.approx(1.00024, rel=1e-5)


def test_writing_back_what_was_read_is_byte_identical(tmp_path):
    src = tmp_path / "a.cache"
    src.write_text(TENSORRT_MD_EXAMPLE)
    header, amax = read_calibration_cache(src)
    out = write_calibration_cache(tmp_path / "b.cache", amax, trt_version=header_info(header)[0])
    assert out.read_bytes() == src.read_bytes()


def test_round_trip_of_computed_ranges(tmp_path):
    rng = np.random.default_rng(0)
    amax = {f"layer{i}/out:0": float(v) for i, v in enumerate(rng.uniform(1e-3, 50, 40))}
    amax["all_zero"] = 0.0
    path = write_calibration_cache(tmp_path / "c.cache", amax, trt_version="10.3")
    header, back = read_calibration_cache(path)
    assert header == "TRT-100300-EntropyCalibration2"
    assert list(back) == list(amax)  # order kept (TensorRT writes network order)
    for k, v in amax.items():
        assert back[k] == pytest.approx(v, rel=1e-6)  # the scale is stored as float32
    again = write_calibration_cache(tmp_path / "d.cache", back, trt_version="100300")
    assert again.read_bytes() == path.read_bytes()
    assert "all_zero: 00000000" in path.read_text()


def test_header_versions_and_algorithms():
    assert version_tag("8.2.1") == "8201" and version_tag("8.5.2") == "8502"
    assert version_tag("10.3") == "100300" and version_tag("10.13") == "101300" and version_tag(8601) == "8601"
    text = format_calibration_cache({"x": 1.0}, "8.2.1", "MinMaxCalibration")
    assert text.splitlines()[0] == "TRT-8201-MinMaxCalibration"
    assert scale_to_hex(1.0 / 127) == "3c010204"
    with pytest.raises(InputError):
        format_calibration_cache({"x": 1.0}, "8.2.1", "Fancy")
    with pytest.raises(InputError):
        format_calibration_cache({"x": float("nan")})
    with pytest.raises(InputError):
        version_tag("eight")


def test_short_zero_scale_and_colons_in_names(tmp_path):
    path = tmp_path / "p.cache"
    path.write_text("TRT-8502-EntropyCalibration2\r\nimage:0: 0\r\nblock/conv: 3f800000\r\n\r\n")
    _, amax = read_calibration_cache(path)
    assert amax == {"image:0": 0.0, "block/conv": 127.0}


@pytest.mark.parametrize("content, words", [
    (b"", "first line"),
    (b"\x00\x01\x02\xff", "not text"),
    (b"TRT8203 EntropyCalibration2\nx: 3c010a14\n", "first line"),
    (b"TRT-8203-EntropyCalibration2\nx 3c010a14\n", "line 2"),
    (b"TRT-8203-EntropyCalibration2\nx: zz\n", "line 2"),
])
def test_bad_caches_are_clear_errors(tmp_path, content, words):
    path = tmp_path / "bad.cache"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_calibration_cache(path)
    assert words in str(err.value) and str(path) in str(err.value)
    with pytest.raises(InputError):
        read_calibration_cache(tmp_path / "missing.cache")
