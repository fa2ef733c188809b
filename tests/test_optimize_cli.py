"""``edgesqueeze optimize`` on real files: output, report, JSON, determinism, errors and exit codes."""
from __future__ import annotations

import json
import shutil

import onnx
import pytest

from edgesqueeze.cli.optimize import run_optimize
from edgesqueeze.fileio import sha256_file
from netzoo import mobilenet_v2


@pytest.fixture
def inception(tmp_path, light_models_dir):
    path = tmp_path / "inception_v1.onnx"
    shutil.copy(light_models_dir / "light_inception_v1.onnx", path)
    return path


@pytest.fixture
def mobilenet(tmp_path):
    path = tmp_path / "mbv2.onnx"
    onnx.save(mobilenet_v2(width=0.35, input_size=64, num_classes=10), str(path))
    return path


def test_cli_prints_fusions_histogram_and_verification(cli, inception, tmp_path):
    before = sha256_file(inception)
    out = tmp_path / "out.onnx"
    code, stdout, stderr = cli("optimize", inception, "-o", out, "--report", tmp_path / "r.json")
    assert code == 0, stderr
    assert "horizontal:conv" in stdout and "ConstantOfShape" in stdout
    assert "verified on onnxruntime CPU" in stdout
    assert sha256_file(inception) == before  # the input is never modified
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["fusions"]["horizontal:conv"]["count"] == 9
    assert report["sha256"] == sha256_file(out)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_cli_json_and_gpu_target(cli, mobilenet, tmp_path):
    code, stdout, _ = cli("optimize", mobilenet, "-o", tmp_path / "o.onnx", "--target", "orin-nano", "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["ops_after"]["edgesqueeze::DepthwiseSeparableConv"] == 17
    assert report["verification"]["status"] == "passed"


def test_cli_output_is_byte_identical_across_runs(cli, mobilenet, tmp_path):
    for name in ("a.onnx", "b.onnx"):
        assert cli("optimize", mobilenet, "-o", tmp_path / name, "-t", "xavier-nx", "--no-verify")[0] == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_cli_passes_skip_and_list(cli, mobilenet, tmp_path):
    code, stdout, _ = cli("optimize", mobilenet, "-o", tmp_path / "o.onnx", "--passes",
                          "fold_batchnorm,fuse_conv_activation", "--json")
    report = json.loads(stdout)
    assert [p["name"] for p in report["passes"]] == ["fold_batchnorm", "fuse_conv_activation"]
    code, stdout, _ = cli("optimize", mobilenet, "-o", tmp_path / "o2.onnx", "--skip", "fold_batchnorm", "--json")
    assert "BatchNormalization" in json.loads(stdout)["ops_after"]
    code, stdout, _ = cli("optimize", "--list", "--json")
    names = [p["name"] for p in json.loads(stdout)]
    assert names[0] == "fold_constants" and "fuse_depthwise_separable" in names


@pytest.mark.parametrize("args,code,text", [
    (["missing.onnx", "-o", "o.onnx"], 3, "no such file"),
    (["IN", "-o", "IN"], 3, ""),
    (["IN", "-o", "o.onnx", "--passes", "fold_all"], 3, "unknown pass 'fold_all'"),
    (["IN", "-o", "o.onnx", "--target", "jetson-tx9"], 3, "jetson-tx9"),
    (["IN"], 3, "missing -o/--output"),
])
def test_cli_errors_are_one_line_with_exit_codes(cli, mobilenet, tmp_path, args, code, text):
    args = [str(mobilenet) if a == "IN" else str(tmp_path / a) if a.endswith(".onnx") else a for a in args]
    before = sha256_file(mobilenet)
    got, stdout, stderr = cli("optimize", *args)
    assert got == code
    assert text in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) <= 2
    assert sha256_file(mobilenet) == before


def test_python_twin_matches_cli(mobilenet, tmp_path):
    report = run_optimize(mobilenet, tmp_path / "o.onnx", target="orin-nano")
    assert report["output"] == str(tmp_path / "o.onnx") and report["opset"] == 13


def test_cli_fp16_model_gets_fp16_tolerance(cli, tmp_path):
    import numpy as np

    from netzoo import NetBuilder

    b = NetBuilder(seed=2, dtype=np.float16)
    x = b.input("x", [1, 8, 8, 8])
    y = b.act(b.bn(b.conv(b.act(b.bn(b.conv(x, 8, 8, 3, group=8), 8), "relu6"), 8, 16, 1), 16), "relu")
    path = tmp_path / "half.onnx"
    onnx.save(b.model([y]), str(path))
    code, stdout, stderr = cli("optimize", path, "-o", tmp_path / "o.onnx", "-t", "orin-nano", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["verification"]["rtol"] == 1e-2
    assert report["ops_after"] == {"edgesqueeze::DepthwiseSeparableConv": 1}


def test_cli_on_the_digits_example(cli, tmp_path):
    from conftest import EXAMPLES

    model = EXAMPLES / "digits" / "digits_cnn.onnx"
    if not model.exists():
        pytest.skip("examples/digits/digits_cnn.onnx not built yet")
    code, stdout, stderr = cli("optimize", model, "-o", tmp_path / "d.onnx", "--target", "orin-nano", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["verification"]["status"] == "passed"
    assert report["nodes_after"] < report["nodes_before"]


def test_cli_dynamic_input_kept_and_checked_at_batch_1(cli, tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    code, stdout, stderr = cli("optimize", path, "-o", tmp_path / "o.onnx", "--json")
    assert code == 0 and json.loads(stdout)["verification"]["status"] == "passed", stderr
    assert "checks run at x:1x3x8x8 (N=1 by default)" in stderr
    assert onnx.load(str(tmp_path / "o.onnx")).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    code, stdout, _ = cli("optimize", path, "-o", tmp_path / "o2.onnx", "--input", "x:2x3x8x8", "--json")
    assert code == 0 and json.loads(stdout)["verification"]["status"] == "passed"
    # spatial dims nothing gives: one line, exit 3, a realistic suggestion
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    onnx.save(model, str(path))
    code, _, stderr = cli("optimize", path, "-o", tmp_path / "o3.onnx")
    assert code == 3 and "--input x:1x3x640x8" in stderr
