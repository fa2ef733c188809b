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


# ------------------------------------------------------------------ 5. errors that name what the file is


def _save(tmp_path, name, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    p = tmp_path / name
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    return p


def test_5_pytorch_checkpoint_is_named_with_the_export_command(cli, tmp_path):
    import pickle
    import zipfile

    pt = tmp_path / "net.pt"
    with zipfile.ZipFile(pt, "w") as z:  # the layout of torch.save since 1.6
        z.writestr("net/data.pkl", pickle.dumps({"w": 1}))
    legacy = tmp_path / "old.pth"
    legacy.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    for f in (pt, legacy):
        code, _, err = cli("inspect", f)
        line = _one_error_line(err)
        assert code == 3 and "PyTorch checkpoint" in line and "edgesqueeze export" in line, line
        assert "truncated" not in line


def test_5_archives_are_named(cli, tmp_path):
    import tarfile
    import zipfile

    tgz = tmp_path / "bundle.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(DIGITS, arcname="model.onnx")
    zp = tmp_path / "model.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.write(DIGITS, "model.onnx")
    for f, needle in ((tgz, "tar.gz archive"), (zp, "zip archive")):
        code, _, err = cli("inspect", f)
        line = _one_error_line(err)
        assert code == 3 and needle in line and "truncated" not in line, line
    code, _, err = cli("bench", tgz, "--iterations", "1")
    assert code == 3 and "bundle archive" in _one_error_line(err)


def test_5_zero_sized_dim_is_not_called_dynamic(cli, tmp_path):
    p = _save(tmp_path, "zero.onnx", [helper.make_node("Relu", ["x"], ["y"])],
              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 0, 8])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 0, 8])])
    code, _, err = cli("inspect", p)
    line = _one_error_line(err)
    assert code == 3 and "zero-sized" in line and "1x0x8" in line and "dynamic" not in line


def test_5_nan_weights_are_named_not_blamed_on_a_log(cli, tmp_path):
    w = np.ones((4, 3), np.float32)
    w[1, 1] = np.nan
    p = _save(tmp_path, "nan.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])],
              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [numpy_helper.from_array(w, "w")])
    code, _, err = cli("build", p, "-t", "tx2", "-o", tmp_path / "b")
    line = [ln for ln in err.splitlines() if "error:" in ln][0]
    assert code == 7 and "NaN in initializer 'w'" in line and "Log, Sqrt" not in line, err
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------ 7. README, .gitignore, exit codes

README = (ROOT / "README.md").read_text()


def test_7_quickstart_build_runs_twice(tmp_path):
    import re
    import shlex
    import subprocess
    import sys

    main = re.findall(r"```bash\n(.*?)```", README, re.S)[0]
    build = shlex.split(main.split("&&")[1])
    assert build[:2] == ["edgesqueeze", "build"] and "--force" in build
    shutil.copytree(ROOT / "examples" / "digits", tmp_path / "examples" / "digits")
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "edgesqueeze", "-q", *build[1:]], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    assert "`--force` replaces the `bundle/`" in README


def test_7_gitignore_readme_claims():
    import subprocess

    ignored = subprocess.run(["git", "check-ignore", "bundle/manifest.json", "edgesqueeze/bundle/new.py"],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == ["bundle/manifest.json"]
    quick = README.split("## The workflow")[0]
    assert "Python ≥ 3.10" in quick and "torch" in quick and "openssh-server" in quick


def test_7_missing_target_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("build", DIGITS, "-o", tmp_path / "b")
    assert code == 2 and "--target" in err


def test_7_plugins_check_help_states_the_exit_code_it_uses(cli):
    from edgesqueeze.cli.plugins import check

    doc = " ".join(check.help.split())
    assert "4 when no compiler can target an architecture" in doc and "5 when those NVRTC wheels" in doc


# ------------------------------------------------------------------ 8. a TK1 bundle says what it is


def test_8_tk1_bundle_says_it_has_no_tensorrt_and_does_not_run_on_the_board(cli, tmp_path):
    import json

    code, out, err = cli("build", DIGITS, "-t", "tk1", "-o", tmp_path / "tk")
    assert code == 0, err
    assert "pip install" not in out and "build_engine.sh)" not in out
    assert "tk1 has no TensorRT" in out and "does not run on the Jetson TK1 itself" in out
    manifest = json.loads((tmp_path / "tk" / "manifest.json").read_text())
    assert "32-bit ARM" in manifest["options"]["device_runtime"]
    assert not (tmp_path / "tk" / "build_engine.sh").exists()


def test_8_other_targets_carry_no_device_runtime_note():
    from edgesqueeze.devices import get_profile
    from edgesqueeze.pipeline.support import device_runtime, engine_skip_reason

    assert device_runtime(get_profile("nano")) is None and device_runtime(get_profile("cpu")) is None
    assert engine_skip_reason(get_profile("nano"), "no GPU here") == "no GPU here"


# ------------------------------------------------------------------ 9. labels, logs, plots


def test_9_inspect_labels_a_layer_that_moves_nothing_as_bound_by_neither():
    from edgesqueeze.inspect import inspect_model

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "s"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12])],
                          [numpy_helper.from_array(np.array([1, 12], np.int64), "s")])
    layers = inspect_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "orin-nano")["layers"]
    bound = {layer["op"]: layer["bound"] for layer in layers}
    assert bound["Reshape"] == "-" and bound["Relu"] == "memory"


def test_9_power_from_log_of_a_text_file_is_exit_3(cli):
    code, _, err = cli("power", "--from-log", ROOT / "README.md")
    assert code == 3 and "tegrastats" in err.splitlines()[-1]


def test_9_trtexec_import_without_device_is_labelled_as_an_import():
    from edgesqueeze.bench.plots import label
    from edgesqueeze.bench.trtexec import import_trtexec

    times = ROOT / "tests" / "data" / "trtexec" / "times.json"
    text = label(import_trtexec(times))
    assert "unknown" not in text and text.endswith("trtexec import")
    assert label(import_trtexec(times, device="orin-nano", precision="int8")).endswith("trtexec/int8 @orin-nano")


def test_9_log_plot_time_axis_uses_the_log_timestamps():
    from edgesqueeze.bench.plots import log_times

    t, xlabel = log_times([{"timestamp": "12-02-2026 22:00:00"}, {"timestamp": "12-02-2026 22:00:05"}], 1000.0)
    assert list(t) == [0.0, 5.0] and "timestamp" in xlabel
    t, xlabel = log_times([{"timestamp": None}, {"timestamp": None}], 500.0)
    assert list(t) == [0.0, 0.5] and "interval" in xlabel


def test_9_many_histograms_are_outlines_and_roofline_dots_have_their_own_colours(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from edgesqueeze.bench import plots

    made = []
    real_subplots = plt.subplots

    def spy(*a, **k):
        fig, axes = real_subplots(*a, **k)
        made.append(axes)
        return fig, axes

    def result(i):
        rf = {"intensity_flop_per_byte": 2.0 + i, "achieved_gflops": 10.0 + i, "precision": "fp32",
              "ridge_flop_per_byte": 20.0, "peak_gflops": 500.0, "peak_gbs": 25.0, "fraction_of_attainable": 0.2,
              "bound": "memory"}
        run = {"batch": 1, "latency_ms": {"samples": list(np.linspace(1, 2, 50) + i)},
               "bandwidth": {"analytic": {"roofline": rf}}}
        return {"model": {"name": f"m{i}"}, "backend": {"name": "ort", "precision": "fp32"},
                "device": {"profile": "orin-nano"}, "runs": [run]}

    results = [result(i) for i in range(5)]
    plt.subplots = spy
    try:
        plots.latency_plot(results, tmp_path / "lat.png")
        plots.roofline_plot(results, tmp_path / "roof.png")
    finally:
        plt.subplots = real_subplots
    ax_h = made[0][0]
    assert all(not p.get_fill() for p in ax_h.patches)
    ax = made[1]
    roof_colours = {line.get_color() for line in ax.lines}
    dot_colours = {tuple(c.get_facecolor()[0]) for c in ax.collections}
    from matplotlib.colors import to_rgba
    assert len(dot_colours) == 5 and not {tuple(to_rgba(c)) for c in roof_colours} & dot_colours


def test_image_folder_preprocessing_is_a_flag_and_is_said(tmp_path, capsys):
    """#17 item 6: --preprocess on quantize/build/eval, and one line saying what was done to the images."""
    pytest.importorskip("PIL")
    import numpy as np
    from PIL import Image
    from onnx import TensorProto, helper

    from edgesqueeze.cli import main

    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / f"p{k}.png")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 14, 14])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32))
    model = helper.make_model(helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    spec = "resize=20&crop=16&mean=0.485,0.456,0.406&std=0.229,0.224,0.225&channels=bgr"
    code = main(["quantize", str(path), "-p", "int8", "-t", "cpu", "--calib", str(folder), "--preprocess", spec,
                 "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "channels reversed to BGR" in err and "shorter side resized to 20" in err and "centre-cropped to 16x16" in err
    assert "mean 0.485,0.456,0.406 subtracted" in err and "NCHW" in err
    code = main(["quantize", str(path), "-p", "int8", "-t", "cpu", "--calib", str(folder), "-o", str(tmp_path / "q2.onnx")])
    assert "resized to 16x16 (bilinear, aspect ratio not kept)" in capsys.readouterr().err  # the default, said too
    assert main(["eval", str(path), "--data", str(tmp_path / "q.onnx"), "--preprocess", spec]) == 3  # not a folder
