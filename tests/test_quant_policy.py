"""Precision policy per target: auto picks INT8/FP16/FP32 by the target's GPU; impossible requests say why."""
from __future__ import annotations

import pytest

from edgesqueeze.devices import get_profile
from edgesqueeze.errors import InputError, UnsupportedError
from edgesqueeze.quant import resolve_precision


@pytest.mark.parametrize("target, expected", [
    ("xavier-nx", "int8"), ("agx-xavier", "int8"), ("orin-nano", "int8"), ("agx-orin", "int8"),
    ("tx1", "fp16"), ("nano", "fp16"), ("tx2", "fp16"), ("tk1", "fp32"),
])
def test_auto_follows_the_target(target, expected):
    assert resolve_precision(target, "auto") == expected
    assert resolve_precision(get_profile(target), "AUTO") == expected


def test_explicit_requests():
    assert resolve_precision("orin-nano", "fp16") == "fp16"
    assert resolve_precision("tx2", "fp32") == "fp32"
    with pytest.raises(UnsupportedError, match="sm_62") as err:
        resolve_precision("tx2", "int8")
    assert err.value.exit_code == 4
    with pytest.raises(UnsupportedError, match="fp16"):
        resolve_precision("nano", "int8")
    with pytest.raises(UnsupportedError):
        resolve_precision("tk1", "fp16")
    with pytest.raises(InputError, match="unknown precision"):
        resolve_precision("tx2", "int4")
    assert resolve_precision(None, "int8") == "int8"  # this CPU runs INT8 QDQ models in onnxruntime
