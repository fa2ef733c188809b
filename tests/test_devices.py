import json

import pytest

from edgesqueeze.devices import cpu_profile, get_profile, list_profiles, trt_version_tag
from edgesqueeze.errors import InputError, UnsupportedError


def test_every_jetson_in_the_table_is_there():
    names = {p.name for p in list_profiles()}
    for n in ["tk1", "tx1", "nano", "tx2", "xavier-nx", "agx-xavier", "orin-nano", "orin-nx", "agx-orin", "thor", "cpu"]:
        assert n in names


@pytest.mark.parametrize("name,int8,fp16,trt,best", [
    ("tk1", False, False, None, "fp32"),
    ("nano", False, True, "8.2.1", "fp16"),
    ("tx2", False, True, "8.2.1", "fp16"),
    ("xavier-nx", True, True, "8.5.2", "int8"),
    ("orin-nano", True, True, "10.3", "int8"),
    ("thor", True, True, "10.13", "int8"),
])
def test_capabilities(name, int8, fp16, trt, best):
    p = get_profile(name)
    assert p.supports("int8") is int8
    assert p.supports("fp16") is fp16
    assert p.tensorrt_version == trt
    assert p.best_precision() == best


def test_peaks_follow_cores_times_clock():
    tx2 = get_profile("tx2")
    assert tx2.peak_flops("fp32") == pytest.approx(256 * 2 * 1300e6)
    assert tx2.peak_flops("fp16") == pytest.approx(1.3312e12)
    tk1 = get_profile("tk1")
    assert tk1.peak_flops("fp32") == pytest.approx(192 * 2 * 852e6, rel=1e-3)
    orin = get_profile("orin-nano")
    assert orin.peak_flops("int8", sparse=True) == pytest.approx(2 * orin.peak_flops("int8"))
    assert orin.peak_flops("int8", sparse=True) / 1e12 == pytest.approx(40.96)


def test_emc_bandwidth_reaches_table_peak():
    tx2 = get_profile("tx2")
    assert tx2.emc_bandwidth(100.0, 1866) / 1e9 == pytest.approx(59.7, rel=1e-3)
    assert tx2.emc_bandwidth(50.0, 1866) == pytest.approx(tx2.emc_bandwidth(100.0, 1866) / 2)


def test_trt_version_tags():
    assert trt_version_tag("8.2.3") == "8203"
    assert trt_version_tag("8.5.1") == "8501"
    assert trt_version_tag("10.3") == "100300"
    assert get_profile("tx2").trt_version_tag() == "8201"


def test_unsupported_precision_says_why():
    with pytest.raises(UnsupportedError, match="no INT8"):
        get_profile("tx2").require("int8")


def test_unknown_target_lists_names():
    with pytest.raises(InputError, match="known targets: .*orin-nano"):
        get_profile("orin-mega")


def test_cpu_profile_reads_host():
    p = cpu_profile()
    assert p.kind == "cpu" and p.extra["cores"] >= 1 and p.peak_flops("fp32") > 0


def test_devices_cli_json(cli):
    code, out, _ = cli("devices", "--json")
    assert code == 0
    data = json.loads(out)
    assert {d["name"] for d in data} >= {"tx2", "orin-nano", "cpu"}
    code, out, _ = cli("devices", "tx2", "--json")
    (d,) = json.loads(out)
    assert d["compute_capability"] == "6.2" and d["int8"] is False and d["trt_version_tag"] == "8201"


def test_devices_cli_unknown_target_exit_code(cli):
    code, _, err = cli("devices", "nope")
    assert code == 3 and "unknown target 'nope'" in err and "Traceback" not in err


def test_onnx_limits_are_data():
    from edgesqueeze.devices import get_profile, list_profiles

    tx2 = get_profile("tx2")
    assert (tx2.onnx_max_opset, tx2.onnx_max_ir) == (13, 8)  # TensorRT 8.2 parser, onnxruntime 1.10
    assert tx2.onnx_limits == {"opset": 13, "ir": 8}
    assert tx2.loads_onnx(13, 8) and not tx2.loads_onnx(18, 8) and not tx2.loads_onnx(13, 10)
    assert get_profile("xavier-nx").onnx_max_opset == 17 and get_profile("orin-nano").onnx_max_ir == 10
    assert "onnx_max_opset" in get_profile("thor").unverified
    for name in ("tk1", "cpu", "h100"):
        p = get_profile(name)
        assert p.onnx_limits == {"opset": None, "ir": None} and p.loads_onnx(23, 11)
    for p in list_profiles():
        d = p.to_dict()
        assert "onnx_max_opset" in d and "onnx_max_ir" in d and "onnx_max_opset" not in p.extra
        if p.jetpack == "4.6":
            assert (p.onnx_max_opset, p.onnx_max_ir) == (13, 8)
