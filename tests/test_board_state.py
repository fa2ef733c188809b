"""Board state, throttling, energy from log timestamps, the DLA report and export --dynamic-axes."""
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgesqueeze.bench.boardstate import (board_state_differences, describe_board_state, detect_throttling,
                                          interpret_board_state)
from edgesqueeze.bench.schema import validate_result
from edgesqueeze.bench.tegrastats import parse_log, sample_times
from edgesqueeze.deploy.device_probe import board_state
from edgesqueeze.deploy.probe import interpret

DATA = Path(__file__).parent / "data" / "boardstate"
TEGRA = Path(__file__).parent / "data" / "tegrastats"


def _state(board):
    root = DATA / board
    return interpret_board_state(board_state(str(root), (root / "nvpmodel_q.txt").read_text()))


def test_tx2_maxn_without_jetson_clocks():
    bs = _state("tx2_jp46")
    assert bs["nvpmodel"]["name"] == "MAXN" and bs["nvpmodel"]["id"] == 0 and bs["nvpmodel"]["power_budget_w"] is None
    assert bs["jetson_clocks"] is False
    assert bs["cpu_mhz"]["max"] == pytest.approx(2035.2) and bs["cpu_mhz"]["min"] == pytest.approx(345.6)
    assert bs["gpu_mhz"]["max"] == pytest.approx(1300.5) and bs["gpu_mhz"]["devfreq"] == "17000000.gp10b"
    assert bs["emc_mhz"]["max"] == pytest.approx(1866) and bs["emc_mhz"]["cap"] is None
    assert bs["fan_pwm"] == 0


def test_xavier_mode_15w_with_jetson_clocks():
    bs = _state("agx_xavier_jp51")
    assert bs["nvpmodel"] == {"name": "MODE_15W", "id": 2, "power_budget_w": 15.0}
    assert bs["jetson_clocks"] is True and bs["cpu_mhz"]["cores"] == 4
    assert bs["fan_pct"] == 100.0
    assert "jetson_clocks on" in describe_board_state(bs) and "EMC <= 1331.2 MHz" in describe_board_state(bs)


def test_orin_jp6_without_root_or_nvpmodel_output():
    raw = board_state(str(DATA / "agx_orin_jp6"), nvpmodel_output="")
    bs = interpret_board_state(raw)
    # no nvpmodel -q: the mode comes from nvpmodel.conf's default, and says so
    assert bs["nvpmodel"]["id"] == 2 and bs["nvpmodel"]["name"] == "MODE_30W" and "default" in bs["nvpmodel"]["source"]
    assert bs["gpu_mhz"]["devfreq"] == "17000000.gpu" and bs["emc_mhz"]["max"] is None
    assert bs["jetson_clocks"] is False and bs["fan_pwm"] == 89


def test_probe_interprets_and_result_records_board_state():
    raw = {"nv_tegra_release": "# R36 (release), REVISION: 3.0", "device_tree_compatible": ["nvidia,tegra234"],
           "board_state": board_state(str(DATA / "agx_orin_jp6"), "NV Power Mode: MAXN\n0\n")}
    info = interpret(raw)
    assert info["board_state"]["nvpmodel"]["name"] == "MAXN"
    result = {"schema": "edgesqueeze.bench/1", "model": {"name": "m", "sha256": "ab"},
              "device": {"profile": "agx-orin", "probe": {"board_state": info["board_state"]}},
              "backend": {"name": "trt"}, "runs": [{"batch": 1, "latency_ms": {"samples": [1.0, 2.0]}}]}
    out = validate_result(result)  # an old /1 result still reads; the probe's board state is lifted
    assert out["device"]["board_state"]["nvpmodel"]["name"] == "MAXN"


def test_board_state_differences_warn():
    a, b = _state("tx2_jp46"), _state("agx_xavier_jp51")
    warns = board_state_differences([a, b, None])
    assert any("nvpmodel mode" in w and "MAXN" in w and "MODE_15W" in w for w in warns)
    assert any("jetson_clocks" in w for w in warns) and any("run(s) 3" in w for w in warns)
    assert board_state_differences([a, _state("tx2_jp46")]) == []


def test_throttling_from_tegrastats_marks_samples():
    samples = parse_log((DATA / "agx_orin_jp6_throttle.log").read_text())["samples"]
    v = detect_throttling(samples, "agx-orin")
    assert v["throttled"] and len(v["reasons"]) == 2
    assert v["samples"] == [11, 12, 13, 14]
    assert samples[11]["throttle"] and "samples" not in samples[0].get("throttle", "")
    assert "99" in v["reasons"][0] and "GPU" in v["reasons"][1]
    calm = parse_log((TEGRA / "agx_orin_jp6.log").read_text())["samples"]
    assert detect_throttling(calm, "agx-orin")["throttled"] is False


def test_result_with_raw_tegrastats_is_flagged_throttled():
    raw = (DATA / "agx_orin_jp6_throttle.log").read_text().splitlines()
    result = {"schema": "edgesqueeze.bench/2", "model": {"name": "m", "sha256": "ab"},
              "device": {"profile": "agx-orin"}, "backend": {"name": "trt"}, "power": {"raw": raw},
              "runs": [{"batch": 1, "latency_ms": {"samples": [1.0]}}]}
    out = validate_result(result)
    assert out["throttled"] is True and out["throttling"]["samples"] == [11, 12, 13, 14]
    assert any(w.startswith("throttled:") for w in out["warnings"])


def test_sample_times_from_timestamps_and_interval():
    samples = parse_log((DATA / "agx_orin_jp6_throttle.log").read_text())["samples"]
    assert sample_times(samples) == ([float(i) for i in range(15)], "timestamps")
    fast = [dict(s) for s in samples[:3] for _ in range(4)]  # 4 lines a second (250 ms)
    times, src = sample_times(fast)
    assert src == "timestamps" and times[4] == pytest.approx(1.0) and times[1] == pytest.approx(0.25)
    tx2 = parse_log((TEGRA / "tx2_jp4.log").read_text())["samples"] * 3
    assert sample_times(tx2, 100)[0][2] == pytest.approx(0.2)
    assert sample_times(tx2)[1] == "assumed 1000 ms"


def _power(*args):
    return subprocess.run([sys.executable, "-m", "edgesqueeze", "power", *args, "--json"], capture_output=True,
                          text=True)


def test_power_energy_idle_and_per_inference(tmp_path):
    log = str(DATA / "agx_orin_jp6_throttle.log")
    r = _power("--from-log", log, "--idle-seconds", "5", "--inferences", "1000", "--target", "agx-orin")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)["energy"]
    load_w, idle_w = 20.0 + 3.0 + 4.968 + 1.091, 2.0 + 1.0 + 4.968 + 1.091
    assert e["duration_s"] == pytest.approx(9.0) and e["energy_j"] == pytest.approx(load_w * 9)
    assert e["idle_mw"] == pytest.approx(idle_w * 1000)
    assert e["energy_per_inference_mj"] == pytest.approx(load_w * 9)
    assert e["energy_per_inference_above_idle_mj"] == pytest.approx((load_w - idle_w) * 9)
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"schema": "edgesqueeze.bench/2", "model": {"name": "m", "sha256": "ab"},
                               "device": {"profile": "agx-orin"}, "backend": {"name": "trt"},
                               "runs": [{"batch": 2, "inferences": 500, "latency_ms": {"samples": [1.0]}}]}))
    r = _power("--from-log", log, "--result", str(res))
    assert json.loads(r.stdout)["energy"]["inferences"] == 500


def _conv_model(dynamic=False, kernel=3, pads=1, axis=1):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n" if dynamic else 1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, kernel, kernel], [0.1] * (4 * 3 * kernel * kernel))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[kernel, kernel],
                              pads=[pads] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Concat", ["r", "r"], ["cat"], name="cat", axis=axis),
             helper.make_node("Erf", ["cat"], ["y"], name="erf")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])


def test_dla_report_predicts_fallbacks():
    from edgesqueeze.dla import dla_report

    r = dla_report(_conv_model(kernel=33, pads=1, axis=2), "agx-orin", "fp16")
    by = {x["name"]: x for x in r["layers"]}
    assert not r["blocking"] and by["relu"]["engine"] == "DLA"
    assert by["conv"]["engine"] == "GPU" and "kernel 33" in by["conv"]["reason"]
    assert "axis 2" in by["cat"]["reason"] and "Erf is not a DLA layer" in by["erf"]["reason"]
    ok = dla_report(_conv_model(), "agx-orin", "int8")
    assert {x["name"] for x in ok["layers"] if x["engine"] == "DLA"} == {"conv", "relu", "cat"}
    blocked = dla_report(_conv_model(dynamic=True), "orin-nano", "fp32")
    assert len(blocked["blocking"]) == 3 and blocked["on_dla"] == 0


def test_inspect_dla_cli(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_conv_model(kernel=3, pads=3), str(path))
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "inspect", str(path), "--target", "agx-orin", "--dla"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "padding not smaller than the kernel" in r.stdout and "2 layer(s) on DLA" in r.stdout


def test_parse_dynamic_axes():
    from edgesqueeze.errors import InputError
    from edgesqueeze.export import parse_dynamic_axes

    assert parse_dynamic_axes(["input:0,2,3"], ["input"], [4]) == {
        "input": {0: "input_dim0", 2: "input_dim2", 3: "input_dim3"}}
    assert parse_dynamic_axes(["batch,height,width"], ["x"], [4]) == {"x": {0: "batch", 2: "height", 3: "width"}}
    with pytest.raises(InputError, match="no input named"):
        parse_dynamic_axes(["y:0"], ["x"], [4])
    with pytest.raises(InputError, match="outside"):
        parse_dynamic_axes(["x:4"], ["x"], [4])


@pytest.mark.slow
def test_export_dynamic_axes(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    net = tmp_path / "net.py"
    net.write_text("import torch\ndef make_model():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), "
                   "torch.nn.ReLU())\n")
    out = tmp_path / "net.onnx"
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "export", f"{net}:make_model", "--input",
                        "input:1x3x16x16", "--dynamic-axes", "input:batch,height,width", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
