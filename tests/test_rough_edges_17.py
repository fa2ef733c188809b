"""Issue 17, the numbered complaints: each test reproduces one complaint and holds its fix."""
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("benchmarking ")]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("edgesqueeze: error: "), lines[0]
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


# ------------------------------------------------------------------ 1. --power tegrastats without tegrastats


def test_1_power_tegrastats_without_tegrastats_is_a_device_error(cli):
    if shutil.which("tegrastats"):
        pytest.skip("tegrastats exists here")
    code, out, err = cli("bench", DIGITS, "--power", "tegrastats", "--iterations", "2", "--warmup", "0")
    assert code == 6, err
    assert "tegrastats" in _one_error_line(err)


def test_1_unavailable_tegrastats_probe_stops_cleanly():
    from edgesqueeze.bench.probe_tegrastats import TegrastatsProbe
    from edgesqueeze.bench.probes import PowerSampler

    probe = TegrastatsProbe(command=None)
    if probe.available:
        pytest.skip("tegrastats exists here")
    assert PowerSampler(probe).start().stop() == []
    assert probe.describe()["skipped_lines"] == 0
