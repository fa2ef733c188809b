"""End-to-end rough edges found by using the CLI as a Jetson developer would: each test is a regression test.

Every user error is one line on stderr with the documented exit code, names the file/tensor, leaves no output
behind, and a bad output place is found before the work is done.
"""
import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("edgesqueeze: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ model arguments


@pytest.mark.parametrize("argv", [
    ["optimize", "-o", "OUT.onnx"], ["quantize", "-p", "fp16", "-o", "OUT.onnx"],
    ["compress", "--sparsity", "2:4", "-o", "OUT.onnx"], ["pack", "-o", "OUT.esq"],
    ["build", "-t", "tx2", "-o", "OUTDIR"], ["convert", "-t", "tx2", "-o", "OUT.onnx"],
    ["eval", "-d", "random"], ["inspect"], ["unpack", "-o", "OUT.onnx"],
])
def test_directory_given_as_model_is_bad_input_exit_3(cli, tmp_path, argv):
    folder = tmp_path / "adir"
    folder.mkdir()
    argv = [str(tmp_path / a) if a.startswith("OUT") else a for a in argv]
    code, out, err = cli(*argv, folder)
    assert code == 3, err
    assert "adir" in _one_error_line(err)
    assert list(tmp_path.iterdir()) == [folder]


def test_build_missing_model_is_one_line_before_the_precision_fallback_warning(cli, tmp_path):
    # orin-nano auto = int8, no --calib: the fp16 fallback warning must not precede the input error
    code, out, err = cli("build", tmp_path / "missing.onnx", "-t", "orin-nano", "-o", tmp_path / "b")
    assert code == 3
    assert "missing.onnx" in _one_error_line(err)
    assert not (tmp_path / "b").exists()


def test_build_fallback_warning_still_said_and_recorded(tmp_path):
    from edgesqueeze.pipeline import build

    summary = build(DIGITS, "orin-nano", tmp_path / "b", precision="auto")
    assert summary["precision"] == "fp16"
    assert any("INT8 needs calibration data" in w for w in summary["warnings"])


@pytest.mark.parametrize("argv", [["optimize", "-o", "OUT.onnx"], ["bench", "-n", "2"]])
def test_progress_line_not_printed_before_a_missing_input_error(cli, tmp_path, argv):
    argv = [str(tmp_path / a) if a.startswith("OUT") else a for a in argv]
    code, out, err = cli(*argv, tmp_path / "missing.onnx")
    assert code == 3
    assert "missing.onnx" in _one_error_line(err)


def test_bench_bad_data_is_one_line(cli, tmp_path):
    data = tmp_path / "bad.npz"
    np.savez(data, input=np.zeros((2, 1, 5, 5), np.float32))
    code, out, err = cli("bench", DIGITS, "-n", "2", "--data", data)
    assert code == 3
    assert "bad.npz" in _one_error_line(err)


# ------------------------------------------------------------------------------------------ output places


def _blocked(tmp_path: Path) -> Path:
    """A path whose parent is a regular file: unwritable even for root."""
    f = tmp_path / "a_file.txt"
    f.write_text("not a folder")
    return f


@pytest.mark.parametrize("argv", [
    ["build", DIGITS, "-t", "tx2", "-o", "BLOCKED/bundle"],
    ["pack", DIGITS, "-o", "BLOCKED/x.esq"],
    ["optimize", DIGITS, "-o", "BLOCKED/x.onnx"],
    ["bench", DIGITS, "-n", "2", "-o", "BLOCKED/r.json"],
    ["bench", DIGITS, "-n", "2", "--report", "BLOCKED/rep"],
    ["bench", DIGITS, "-n", "2", "--report", "FILE"],
])
def test_unwritable_output_is_bad_input_not_internal_error(cli, tmp_path, argv):
    blocked = _blocked(tmp_path)
    argv = [str(blocked) + a[len("BLOCKED"):] if str(a).startswith("BLOCKED") else
            (str(blocked) if a == "FILE" else a) for a in argv]
    before = _digest(DIGITS)
    code, out, err = cli(*argv)
    assert code == 3, err
    line = _one_error_line(err)
    assert "a_file.txt" in line and "internal error" not in line
    assert _digest(DIGITS) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file.txt"]  # no staging folder or temp file left


def test_bench_output_folder_given_as_results_file(cli, tmp_path):
    code, out, err = cli("bench", DIGITS, "-n", "2", "-o", tmp_path)
    assert code == 3
    assert "is a directory" in _one_error_line(err)


def test_report_into_a_file_is_bad_input(cli, tmp_path):
    res = tmp_path / "r.json"
    code, _, err = cli("bench", DIGITS, "-n", "3", "-o", res)
    assert code == 0, err
    blocked = _blocked(tmp_path)
    for out_dir in (blocked, blocked / "rep"):
        code, out, err = cli("report", res, "-o", out_dir)
        assert code == 3, err
        assert "a_file.txt" in _one_error_line(err)


def test_atomic_write_into_a_directory_names_it(tmp_path):
    from edgesqueeze.errors import InputError
    from edgesqueeze.fileio import write_bytes_atomic

    with pytest.raises(InputError, match="is a directory"):
        write_bytes_atomic(tmp_path, b"x")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ verify


def test_verify_missing_bundle_names_it_not_dot(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("verify", "nosuch")
    assert code == 3
    line = _one_error_line(err)
    assert line.startswith("edgesqueeze: error: nosuch: no such bundle folder"), line


def test_verify_a_model_file_says_not_a_bundle_without_tar_internals(cli):
    code, out, err = cli("verify", DIGITS)
    assert code == 3
    line = _one_error_line(err)
    assert "cannot read the bundle archive" in line and "method gz" not in line and "ReadError" not in line


def test_verify_accepts_the_manifest_path(cli, tmp_path):
    from edgesqueeze.pipeline import build

    build(DIGITS, "tx2", tmp_path / "b", precision="fp16")
    code, out, err = cli("verify", tmp_path / "b" / "manifest.json")
    assert code == 0, err
    assert "OK" in out


# ------------------------------------------------------------------------------------------ build warnings


def _log_model(path: Path) -> Path:
    """Conv -> Log -> Conv: NaN wherever the first conv is negative (which random inputs make happen)."""
    r = np.random.default_rng(0)
    w1 = numpy_helper.from_array(r.standard_normal((4, 4, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(r.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
         helper.make_node("Log", ["c1"], ["l"], name="log"),
         helper.make_node("Conv", ["l", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_build_routes_calibration_warnings_and_names_the_nonfinite_output(cli, tmp_path):
    model = _log_model(tmp_path / "log.onnx")
    code, out, err = cli("build", model, "-t", "xavier-nx", "--calib", "random", "-o", tmp_path / "b")
    assert "UserWarning" not in err and "builder.py" not in err  # no raw Python warning on stderr
    assert "edgesqueeze: warning: " in err and "NaN/Inf on the calibration data" in err
    assert code == 7
    assert "tensor 'y'" in err.splitlines()[-1]
    assert not (tmp_path / "b").exists()


def test_build_random_calibration_warns_once(cli, tmp_path):
    code, out, err = cli("build", DIGITS, "-t", "xavier-nx", "--calib", "random", "-o", tmp_path / "b")
    assert code == 0, err
    assert "UserWarning" not in err
    assert err.count("random data") == 1


# ------------------------------------------------------------------------------------------ inputs never written


def _data_npz(path: Path) -> Path:
    r = np.random.default_rng(0)
    np.savez(path, input=r.standard_normal((4, 1, 8, 8)).astype(np.float32), label=np.arange(4))
    return path


@pytest.mark.parametrize("argv", [
    ["quantize", DIGITS, "-p", "int8", "--calib", "DATA", "-o", "DATA"],
    ["quantize", DIGITS, "-p", "int8", "--calib", "DATA", "-o", "OUT.onnx", "--calib-cache", "DATA"],
    ["quantize", DIGITS, "-p", "fp16", "--val", "DATA", "-o", "DATA"],
    ["compress", DIGITS, "--prune", "0.5", "--val", "DATA", "-o", "DATA"],
    ["bench", "MODEL", "-n", "2", "-o", "MODEL"],
])
def test_output_onto_an_input_data_file_is_refused(cli, tmp_path, argv):
    data = _data_npz(tmp_path / "data.npz")
    model = tmp_path / "m.onnx"
    model.write_bytes(DIGITS.read_bytes())
    before = {p: _digest(p) for p in (data, model)}
    argv = [{"DATA": data, "MODEL": model}.get(a, a) for a in argv]
    argv = [str(tmp_path / a) if str(a).startswith("OUT") else a for a in argv]
    code, out, err = cli(*argv)
    assert code == 3, err
    assert "would overwrite the input" in _one_error_line(err)
    assert {p: _digest(p) for p in (data, model)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "m.onnx"]


def test_quantize_cache_and_model_on_the_same_path_is_refused(cli, tmp_path):
    out = tmp_path / "q.onnx"
    code, _, err = cli("quantize", DIGITS, "-p", "int8", "--calib", "random", "-o", out, "--calib-cache", out)
    assert code == 3
    assert "same file" in _one_error_line(err)
    assert not out.exists()


@pytest.mark.torch
def test_export_never_overwrites_the_model_source(cli, tmp_path):
    src = tmp_path / "net.py"
    src.write_text("import torch\n\ndef make():\n    return torch.nn.Linear(4, 2)\n")
    before = _digest(src)
    code, out, err = cli("export", f"{src}:make", "--input", "1x4", "-o", src)
    assert code == 3, err
    assert "would overwrite" in _one_error_line(err)
    assert _digest(src) == before


# ------------------------------------------------------------------------------------------ --json


def _unary(path: Path, op: str) -> Path:
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_compare_json_is_strict_json_when_the_reference_is_all_zero(cli, tmp_path):
    import json

    data = tmp_path / "neg.npz"
    np.savez(data, x=-np.ones((3, 4), np.float32))  # Relu gives zeros, Abs ones: relative error is inf
    a, b = _unary(tmp_path / "relu.onnx", "Relu"), _unary(tmp_path / "abs.onnx", "Abs")
    code, out, err = cli("compare", a, b, "-d", data, "--json")
    assert code == 0, err

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    result = json.loads(out, parse_constant=reject)
    assert result["outputs"]["y"]["max_rel"] is None and result["outputs"]["y"]["max_abs"] == 1.0
    code, out, err = cli("compare", a, b, "-d", data)
    assert code == 0 and "inf" in out


# ------------------------------------------------------------------------------------------ inspect


def test_inspect_does_not_count_int64_axes_as_parameters():
    from edgesqueeze.inspect import inspect_model

    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("ReduceMean", ["c", "axes"], ["y"], keepdims=0, name="mean")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w, axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    layers = {l["name"]: l for l in inspect_model(onnx.shape_inference.infer_shapes(m))["layers"]}
    assert layers["mean"]["params"] == 0 and layers["mean"]["weight_bytes"] == 0
    assert layers["conv"]["params"] == 16


# ------------------------------------------------------------------------------------------ report


def test_report_tells_apart_runs_with_the_same_model_name(cli, tmp_path):
    for name in ("a.json", "b.json"):
        code, _, err = cli("bench", DIGITS, "-n", "3", "-o", tmp_path / name)
        assert code == 0, err
    code, out, err = cli("report", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "rep", "--no-plots")
    assert code == 0, err
    assert "1: digits_cnn" in out and "2: digits_cnn" in out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| run | model |" in md and "| 2 | digits_cnn |" in md
    assert "digits/digits_cnn.onnx`" in md  # the model path tells bundles of one model apart (relative: no user name)


# ------------------------------------------------------------------------------------------ INT8 + custom nodes


def test_int8_says_which_fused_custom_nodes_stay_float(cli, tmp_path):
    import json

    from edgesqueeze.pipeline import build

    fused = tmp_path / "fused.onnx"
    code, _, err = cli("optimize", DIGITS, "-t", "orin-nano", "-o", fused)
    assert code == 0, err
    code, out, err = cli("quantize", fused, "-p", "int8", "--calib", "random", "-o", tmp_path / "q.onnx", "--json")
    assert code == 0, err
    custom = json.loads(out)["quantized"]["custom_not_quantized"]
    assert len(custom) == 1 and "DepthwiseSeparableConv" in next(iter(custom.values()))
    code, out, err = cli("quantize", fused, "-p", "int8", "--calib", "random", "-o", tmp_path / "q2.onnx")
    assert "not quantized: 1 custom node(s) (DepthwiseSeparableConv)" in out

    summary = build(DIGITS, "orin-nano", tmp_path / "b", precision="int8", calib="random")
    assert any("DepthwiseSeparableConv" in w and "--skip fuse_depthwise_separable" in w for w in summary["warnings"])
    assert summary["stages"]["quantize"]["custom_not_quantized"] == 1
    summary = build(DIGITS, "orin-nano", tmp_path / "b2", precision="int8", calib="random",
                    skip_passes=["fuse_depthwise_separable"])
    assert not any("DepthwiseSeparableConv" in w for w in summary["warnings"])
    assert summary["stages"]["quantize"]["custom_not_quantized"] == 0


# ------------------------------------------------------------------------------------------ --batch-size


@pytest.mark.parametrize("verb", [["quantize", "-p", "int8", "--calib", "DATA", "-o", "OUT.onnx"],
                                  ["eval", "-d", "DATA"]])
def test_batch_size_that_cannot_apply_warns(cli, tmp_path, verb):
    data = _data_npz(tmp_path / "data.npz")
    argv = [{"DATA": data}.get(a, a) for a in verb]
    argv = [str(tmp_path / a) if str(a).startswith("OUT") else a for a in argv]
    code, out, err = cli(argv[0], DIGITS, *argv[1:], "--batch-size", "4")
    assert code == 0, err
    assert "--batch-size 4 has no effect: the model's batch is fixed at 1" in err
    code, out, err = cli(argv[0], DIGITS, *[str(a).replace("OUT", "OUT2") for a in argv[1:]])
    assert "--batch-size" not in err


def test_compare_models_with_different_inputs_names_b(cli, tmp_path):
    other = _unary(tmp_path / "relu.onnx", "Relu")
    code, out, err = cli("compare", DIGITS, other)
    assert code == 3
    line = _one_error_line(err)
    assert "relu.onnx" in line and "B takes inputs x but A takes input" in line


def test_deploy_missing_bundle_is_exit_3(cli, tmp_path):
    code, out, err = cli("deploy", tmp_path / "nosuch", "--device", "user@127.0.0.1")
    assert code == 3
    assert "nosuch: no such bundle folder" in _one_error_line(err)


@pytest.mark.torch
def test_export_bad_example_shape_and_bad_weights_are_user_errors(cli, tmp_path):
    import torch

    src = tmp_path / "net.py"
    src.write_text("import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), "
                   "torch.nn.Flatten(), torch.nn.LazyLinear(2))\n\ndef lin():\n    return torch.nn.Linear(4, 2)\n")
    code, out, err = cli("export", f"{src}:make", "--input", "1x1x8x8", "-o", tmp_path / "a.onnx")
    assert code == 3, err
    assert "fails on an example input of shape 1x1x8x8" in err and "internal error" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1  # no "exporting ..." line before it
    weights = tmp_path / "w.pt"
    torch.save({"weight": torch.zeros(3, 4), "bias": torch.zeros(2), "extra": torch.zeros(1)}, weights)
    code, out, err = cli("export", f"{src}:lin", "--input", "1x4", "--weights", weights, "-o", tmp_path / "b.onnx")
    assert code == 3
    line = _one_error_line(err)
    assert "1 unexpected key(s) (first: extra)" in line and "weight: file [3, 4], model [2, 4]" in line
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_build_checks_the_data_files_before_the_work(cli, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 1, 8, 8), np.float32), label=np.arange(3))
    for opt in ("--val", "--calib"):
        code, out, err = cli("build", DIGITS, "-t", "orin-nano", "-p", "int8", "--calib", "random", opt, bad,
                             "-o", tmp_path / "b")
        assert code == 3, err
        assert "bad.npz" in _one_error_line(err)  # no '[1/8] load' / optimize lines first
        assert not (tmp_path / "b").exists()


def test_compress_a_model_whose_weights_are_computed_says_so(cli, tmp_path, light_models_dir):
    out = tmp_path / "sq.onnx"
    code, _, err = cli("compress", light_models_dir / "light_squeezenet.onnx", "--sparsity", "2:4", "-o", out)
    assert code == 3
    line = _one_error_line(err)
    assert "compute it at run time" in line and "edgesqueeze optimize" in line
    assert not out.exists()


def test_inspect_defaults_to_the_models_own_precision(cli, tmp_path):
    import json

    fp16, qdq = tmp_path / "h.onnx", tmp_path / "q.onnx"
    assert cli("quantize", DIGITS, "-p", "fp16", "-o", fp16)[0] == 0
    assert cli("quantize", DIGITS, "-p", "int8", "--calib", "random", "-o", qdq)[0] == 0
    for path, want in ((DIGITS, "fp32"), (fp16, "fp16"), (qdq, "int8")):
        code, out, err = cli("inspect", path, "--json")
        assert code == 0, err
        assert json.loads(out)["precision"] == want, path
    code, out, _ = cli("inspect", fp16, "-p", "fp32", "--json")
    assert json.loads(out)["precision"] == "fp32"


def test_fp16_quantize_of_a_fused_model_runs(cli, tmp_path):
    """Custom nodes' local functions must follow the FP16 weights (FP32 Clip bounds fail the checker)."""
    from edgesqueeze.model import load_model, random_feeds
    from edgesqueeze.ortutil import run_model

    fused, half = tmp_path / "fused.onnx", tmp_path / "half.onnx"
    assert cli("optimize", DIGITS, "-t", "orin-nano", "-o", fused)[0] == 0
    code, _, err = cli("quantize", fused, "-p", "fp16", "-o", half)
    assert code == 0, err
    a, b = load_model(fused), load_model(half)  # the full checker passes
    assert any(n.op_type == "DepthwiseSeparableConv" for n in b.graph.node)
    feeds = random_feeds(a, seed=0)[0]
    ref, got = run_model(a, feeds)["logits"], run_model(b, feeds)["logits"]
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()
    code, out, err = cli("compare", fused, half)
    assert code == 0, err
