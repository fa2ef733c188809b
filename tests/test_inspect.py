"""inspect: MAC counts match published figures; roofline marks compute- vs memory-bound layers."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.inspect import inspect_model
from edgesqueeze.model import infer_shapes, load_model


@pytest.mark.parametrize("name,gmacs,mparams", [
    ("light_resnet50.onnx", 4.09, 25.6),      # He et al. / torchvision: 4.1 GMACs, 25.6 M params
    ("light_squeezenet.onnx", 0.35, 1.24),    # SqueezeNet 1.1: 0.35 GMACs
    ("light_inception_v1.onnx", 1.43, 7.0),   # GoogLeNet: ~1.4-1.5 GMACs, 7 M params
    ("light_vgg19.onnx", 19.6, 143.7),        # VGG-19: 19.6 GMACs, 143.7 M params
])
def test_published_mac_counts(light_models_dir, name, gmacs, mparams):
    r = inspect_model(load_model(light_models_dir / name))
    assert r["totals"]["macs"] / 1e9 == pytest.approx(gmacs, rel=0.03)
    assert r["totals"]["params"] / 1e6 == pytest.approx(mparams, rel=0.03)


def _conv_model(cin, cout, hw, k, group=1):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.zeros((cout, cin // group, k, k), np.float32), "w")
    n = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[k // 2] * 4, group=group)
    r = helper.make_node("Relu", ["c"], ["y"], name="relu")
    g = helper.make_graph([n, r], "g", [x], [y], [w])
    return infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


def test_conv_macs_and_bytes_exact():
    r = inspect_model(_conv_model(16, 32, 10, 3), target="tx2")
    conv = r["layers"][0]
    assert conv["macs"] == 32 * 10 * 10 * 16 * 3 * 3
    assert conv["weight_bytes"] == 32 * 16 * 9 * 4
    assert conv["act_in_bytes"] == 16 * 100 * 4 and conv["act_out_bytes"] == 32 * 100 * 4
    relu = r["layers"][1]
    assert relu["fused"] and relu["macs"] == 0
    assert r["totals"]["roofline_fused_ms"] < r["totals"]["roofline_ms"]


def test_roofline_bound_flips_with_intensity():
    big = inspect_model(_conv_model(256, 256, 28, 3), target="orin-nano", precision="fp16")["layers"][0]
    dw = inspect_model(_conv_model(256, 256, 28, 3, group=256), target="orin-nano", precision="fp16")["layers"][0]
    assert big["bound"] == "compute"
    assert dw["bound"] == "memory"
    assert dw["time_ms"] == pytest.approx(max(dw["compute_ms"], dw["memory_ms"]))


def test_precision_changes_bytes_and_peak():
    a = inspect_model(_conv_model(16, 16, 8, 3), target="xavier-nx", precision="fp32")
    b = inspect_model(_conv_model(16, 16, 8, 3), target="xavier-nx", precision="int8")
    assert b["totals"]["bytes"] * 4 == a["totals"]["bytes"]
    assert b["totals"]["peak_flops"] > a["totals"]["peak_flops"]


def test_dwsep_blocks_unfused_vs_fused():
    # dw 3x3 -> relu -> pw 1x1: the depthwise output (written + read) is what fusion saves
    c, m, hw = 32, 64, 14
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    wd = numpy_helper.from_array(np.zeros((c, 1, 3, 3), np.float32), "wd")
    wp = numpy_helper.from_array(np.zeros((m, c, 1, 1), np.float32), "wp")
    nodes = [helper.make_node("Conv", ["x", "wd"], ["d"], name="dw", group=c, pads=[1] * 4),
             helper.make_node("Relu", ["d"], ["r"], name="act"),
             helper.make_node("Conv", ["r", "wp"], ["y"], name="pw")]
    model = infer_shapes(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [wd, wp]),
                                           opset_imports=[helper.make_opsetid("", 13)]))
    r = inspect_model(model, target="orin-nano")
    (b,) = r["dwsep_blocks"]
    assert b["nodes"] == ["dw", "act", "pw"]
    assert b["bytes_saved"] == 2 * c * hw * hw * 4
    assert b["unfused_bytes"] - b["fused_bytes"] == b["bytes_saved"]
    assert b["fused_ms"] < b["unfused_ms"]


def test_inspect_cli_json_on_light_resnet(cli, light_models_dir):
    import json

    code, out, err = cli("inspect", light_models_dir / "light_resnet50.onnx", "--target", "tx2", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["target"] == "tx2" and r["totals"]["macs"] / 1e9 == pytest.approx(4.09, rel=0.01)
    assert {l["bound"] for l in r["layers"]} - {"-"} == {"compute", "memory"}
    assert all(not l["flops"] and not (l["weight_bytes"] + l["act_in_bytes"] + l["act_out_bytes"])
               for l in r["layers"] if l["bound"] == "-")  # issue 17: a layer that moves nothing is bound by neither


def test_predicted_latency_adds_launch_overhead_per_executed_layer():
    from edgesqueeze.devices import get_profile

    r = inspect_model(_conv_model(16, 32, 10, 3), target="orin-nano")
    t = r["totals"]
    assert t["kernels"] == 1  # the Relu is fused into the Conv
    launch = get_profile("orin-nano").kernel_launch_s * 1e3
    assert t["predicted_ms"] == pytest.approx(t["roofline_fused_ms"] + launch)
    assert t["predicted_ms"] > t["roofline_ms"]


def test_resnet50_int8_prediction_is_near_published_mlperf(light_models_dir):
    """Predictions stay within 2x of MLPerf Inference SingleStream (JETSON.md): a sanity bound, not a claim."""
    from edgesqueeze.passes import optimize

    model, _ = optimize(load_model(light_models_dir / "light_resnet50.onnx", opset=13), verify=False)
    for target, published_ms in (("agx-orin", 0.640), ("orin-nx", 1.082), ("agx-xavier", 1.98), ("xavier-nx", 2.585)):
        predicted = inspect_model(model, target=target, precision="int8")["totals"]["predicted_ms"]
        assert published_ms / 2 < predicted < published_ms * 2, (target, predicted)


def test_qdq_nodes_cost_no_launches(tmp_path):
    """A QDQ model predicts no slower than its FP32 source: TensorRT folds Q/DQ into the INT8 kernels."""
    from pathlib import Path

    from edgesqueeze.quant import calibrate, quantize_qdq
    from edgesqueeze.data import open_data

    digits = Path(__file__).resolve().parents[1] / "examples" / "digits"
    fp32 = load_model(digits / "digits_cnn.onnx")
    amax = calibrate(fp32, open_data(str(digits / "calib.npz"), fp32, limit=8), method="minmax",
                     cache_dir=str(tmp_path))
    qdq = infer_shapes(quantize_qdq(fp32, amax))
    a = inspect_model(fp32, target="orin-nano", precision="int8")["totals"]
    b = inspect_model(qdq, target="orin-nano", precision="int8")["totals"]
    assert b["kernels"] == a["kernels"]
    assert b["predicted_ms"] == pytest.approx(a["predicted_ms"], rel=0.05)
