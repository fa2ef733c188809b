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


# ------------------------------------------------------------------ 3. compress has an accuracy guard

VAL = ROOT / "examples" / "digits" / "val.npz"


def test_3_compress_names_the_step_that_lost_the_accuracy(cli, tmp_path):
    out = tmp_path / "small.onnx"
    code, stdout, err = cli("compress", DIGITS, "--prune", "0.95", "--share", "8,5", "--val", VAL, "-o", out)
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if "warning:" in ln]
    assert len(warning) == 1 and "compression step 'prune' loses" in warning[0], err
    assert out.exists()


def test_3_compress_strict_exits_7_and_writes_nothing(cli, tmp_path):
    out = tmp_path / "small.onnx"
    code, _, err = cli("compress", DIGITS, "--prune", "0.95", "--share", "8,5", "--val", VAL, "--strict",
                       "-o", out)
    assert code == 7
    assert "'prune'" in _one_error_line(err) and "--max-drop 1" in err
    assert not out.exists()
    code, _, err = cli("compress", DIGITS, "--share", "8,5", "--val", VAL, "--strict", "--max-drop", "5", "-o", out)
    assert code == 0 and "warning" not in err and out.exists()


def test_3_compress_guard_sums_small_losses():
    from edgesqueeze.cli.compress import accuracy_warnings

    acc = {"before": 0.90, "after": 0.88}
    steps = [{"step": "prune", "top1": 0.89}, {"step": "share", "top1": 0.88}]
    (w,) = accuracy_warnings(acc, steps, 0.015)
    assert "the compressed model loses 2.00 top-1 points" in w and "prune -> share" in w
    assert accuracy_warnings({"before": None, "after": None}, [], 0.01) == []


# ------------------------------------------------------------------ 4. no silent family aliases; did-you-mean


@pytest.mark.parametrize("family, boards", [("orin", {"orin-nano", "orin-nx", "agx-orin"}),
                                            ("xavier", {"xavier-nx", "agx-xavier"})])
def test_4_family_name_is_ambiguous_and_lists_the_boards(cli, family, boards):
    code, _, err = cli("inspect", DIGITS, "--target", family)
    assert code == 3
    line = _one_error_line(err)
    assert f"ambiguous target '{family}'" in line and all(b in line for b in boards)


def test_4_unambiguous_aliases_still_work_and_misspellings_get_a_suggestion():
    from edgesqueeze.devices import get_profile
    from edgesqueeze.errors import InputError

    assert get_profile("Jetson_Nano").name == "nano" and get_profile("agxorin").name == "agx-orin"
    with pytest.raises(InputError, match=r"did you mean orin-nano"):
        get_profile("oirn-nano")
    with pytest.raises(InputError, match=r"did you mean orin-nano-super\?"):
        get_profile("super")


def test_4_misspelled_verb_suggests_the_verb(cli):
    code, _, err = cli("biuld", DIGITS)
    assert code == 2 and "did you mean build?" in err
    code, _, err = cli("frobnicate")
    assert code == 2 and "did you mean" not in err
