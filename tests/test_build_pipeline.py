"""`edgesqueeze build`: the main job end to end, precision policy per target, deterministic bundles, safe output."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgesqueeze.bundle import read_manifest, verify_bundle
from edgesqueeze.fileio import sha256_file

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
MODEL, CALIB, VAL = DIGITS / "digits_cnn.onnx", DIGITS / "calib.npz", DIGITS / "val.npz"


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    """The README's main job: INT8 for orin-nano with calibration and validation data (via the CLI)."""
    from click.testing import CliRunner

    from edgesqueeze.cli import main

    out = tmp_path_factory.mktemp("main") / "bundle"
    before = sha256_file(MODEL)
    code = main(["build", str(MODEL), "--target", "orin-nano", "--precision", "int8", "--calib", str(CALIB),
                 "--val", str(VAL), "-o", str(out), "--json"])
    assert code == 0
    assert sha256_file(MODEL) == before  # the input model is never modified
    return out


def test_main_job_bundle(int8_bundle):
    m = verify_bundle(int8_bundle)
    assert m["precision"] == "int8" and m["target"]["name"] == "orin-nano"
    assert m["models"]["deploy"] == "models/model.int8_qdq.onnx"
    assert {"fp32", "int8_qdq"} <= set(m["models"])
    cache = (int8_bundle / "calib" / "calibration.cache").read_text().splitlines()
    assert cache[0] == "TRT-100300-EntropyCalibration2"
    assert cache[1].startswith("input: ") and len(cache) > 5
    assert m["options"]["calibration"]["method"] == "auto"  # the default: per network, the closest to FP32
    assert m["options"]["calibration"]["data"] == "calib.npz"
    script = (int8_bundle / "build_engine.sh").read_text()
    assert "--memPoolSize=workspace:" in script and "KIND=int8_qdq" in script
    assert m["tensorrt"]["model"] == "int8_qdq" and m["tensorrt"]["version_tag"] == "100300"


def test_main_job_accuracy_is_measured_not_assumed(int8_bundle):
    """The bundle's INT8 model, run here on onnxruntime, keeps the FP32 accuracy within 3 points."""
    from edgesqueeze.ortutil import make_session

    m = read_manifest(int8_bundle)
    data = np.load(VAL)
    x, y = data["input"], data["label"]
    acc = {}
    for kind in ("fp32", "int8_qdq"):
        sess = make_session(str(int8_bundle / m["models"][kind]))
        pred = np.array([sess.run(None, {"input": x[i:i + 1]})[0].argmax() for i in range(len(x))])
        acc[kind] = float((pred == y).mean())
    assert acc["fp32"] > 0.9
    assert acc["int8_qdq"] >= acc["fp32"] - 0.03
    recorded = m["options"]["validation"]
    assert recorded["int8_qdq"]["top1"] == pytest.approx(acc["int8_qdq"])
    assert recorded["reference_top1"] == pytest.approx(acc["fp32"])


def test_summary_table(cli, tmp_path):
    code, out, err = cli("build", MODEL, "-t", "orin-nano", "-p", "int8", "--calib", CALIB, "--val", VAL,
                         "-o", tmp_path / "b")
    assert code == 0, err
    assert "int8 (QDQ) *" in out and "predicted ms (orin-nano)" in out and "top-1 (val, n=400)" in out
    assert "build_engine.sh for TensorRT 10.3" in out
    for stage in ("load", "optimize", "compress", "quantize", "validate", "engine", "bundle"):
        assert f"] {stage}" in err


def test_json_summary(cli, tmp_path):
    code, out, _ = cli("build", MODEL, "-t", "xavier-nx", "-p", "fp16", "-o", tmp_path / "b", "--json")
    assert code == 0
    s = json.loads(out)
    assert s["precision"] == "fp16" and s["models"]["deploy"] == "models/model.fp16.onnx"
    assert s["latency_ms"]["fp16"] > 0 and s["latency_ms"]["fp16"] < s["latency_ms"]["fp32"]
    assert s["stages"]["engine"]["status"] == "skipped"


def test_two_builds_are_byte_identical(tmp_path):
    from edgesqueeze.pipeline import build

    outs = []
    for run in ("one", "two"):
        out = tmp_path / run / "bundle"
        build(MODEL, "agx-orin", out, precision="int8", calib=str(CALIB), val=str(VAL), sparsity="2:4",
              archive=True, progress=False, calib_limit=64, val_limit=64)
        outs.append(out)
    files = [sorted(p.relative_to(o).as_posix() for p in o.rglob("*") if p.is_file()) for o in outs]
    assert files[0] == files[1] and "manifest.json" in files[0]
    for rel in files[0]:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    a, b = (o.parent / "bundle.tar.gz" for o in outs)
    assert a.read_bytes() == b.read_bytes()


def test_tx2_int8_is_a_clear_error(cli, tmp_path):
    code, out, err = cli("build", MODEL, "-t", "tx2", "-p", "int8", "--calib", CALIB, "-o", tmp_path / "b")
    assert code == 4
    assert "INT8" in err and "tx2" in err.lower() and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_tx2_auto_builds_fp16(tmp_path):
    from edgesqueeze.pipeline import build

    s = build(MODEL, "tx2", tmp_path / "b", calib=str(CALIB), progress=False)
    assert s["precision"] == "fp16"
    script = (tmp_path / "b" / "build_engine.sh").read_text()
    assert "--fp16" in script and "--int8" not in script and '"--workspace=${WORKSPACE_MIB}"' in script


def test_int8_needs_calibration_data(cli, tmp_path):
    code, _, err = cli("build", MODEL, "-t", "orin-nano", "-p", "int8", "-o", tmp_path / "b")
    assert code == 3 and "--calib" in err
    code, out, err = cli("build", MODEL, "-t", "orin-nano", "-o", tmp_path / "c", "--json")
    assert code == 0 and json.loads(out)["precision"] == "fp16"
    assert "auto chose fp16" in err


def test_thor_bundle_relies_on_the_qdq_model(tmp_path):
    from edgesqueeze.pipeline import build

    build(MODEL, "thor", tmp_path / "b", precision="int8", calib=str(CALIB), progress=False)
    m = read_manifest(tmp_path / "b")
    assert m["tensorrt"]["strongly_typed"] and m["tensorrt"]["model"] == "int8_qdq_fp16"  # QDQ on an FP16 base
    body = [ln for ln in (tmp_path / "b" / "build_engine.sh").read_text().splitlines() if not ln.startswith("#")]
    assert "PREC_FLAGS=(--stronglyTyped)" in body
    assert not any("--calib" in ln or "--int8" in ln for ln in body)


def test_sparsity_and_dla(cli, tmp_path):
    code, out, err = cli("build", MODEL, "-t", "agx-orin", "-p", "fp16", "--sparsity", "2:4", "--dla",
                         "-o", tmp_path / "a", "--json")
    assert code == 0, err
    m = read_manifest(tmp_path / "a")
    assert m["options"]["sparsity"] == "2:4" and m["tensorrt"]["dla"]
    script = (tmp_path / "a" / "build_engine.sh").read_text()
    assert "--sparsity=enable" in script and "--useDLACore" in script
    code, _, err = cli("build", MODEL, "-t", "orin-nano", "--dla", "-o", tmp_path / "b")
    assert code == 4 and "DLA" in err
    code, _, err = cli("build", MODEL, "-t", "tx2", "--sparsity", "2:4", "-o", tmp_path / "c")
    assert code == 0 and "no 2:4 sparse tensor cores" in err
    assert "--sparsity" not in (tmp_path / "c" / "build_engine.sh").read_text()


def test_cpu_target_has_no_engine_script(tmp_path):
    from edgesqueeze.pipeline import build

    build(MODEL, "cpu", tmp_path / "b", precision="fp32", progress=False)
    m = verify_bundle(tmp_path / "b")
    assert m["tensorrt"] is None and "build_engine.sh" not in m["files"]
    assert not (tmp_path / "b" / "calib").exists()


def test_output_folder_safety(cli, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    code, _, err = cli("build", MODEL, "-t", "cpu", "-o", other, "--force")
    assert code == 3 and "not a bundle" in err
    assert (other / "keep.txt").read_text() == "precious"
    code, _, _ = cli("build", MODEL, "-t", "cpu", "-o", tmp_path / "b")
    assert code == 0
    code, _, err = cli("build", MODEL, "-t", "cpu", "-o", tmp_path / "b")
    assert code == 3 and "--force" in err
    code, _, _ = cli("build", MODEL, "-t", "orin-nano", "-p", "fp16", "-o", tmp_path / "b", "--force")
    assert code == 0 and read_manifest(tmp_path / "b")["precision"] == "fp16"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_bad_inputs_exit_3(cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello")
    code, _, err = cli("build", bad, "-t", "orin-nano", "-o", tmp_path / "b")
    assert code == 3 and "bad.onnx" in err
    code, _, err = cli("build", MODEL, "-t", "no-such-board", "-o", tmp_path / "b")
    assert code == 3 and "unknown target" in err
    code, _, err = cli("build", MODEL, "-o", tmp_path / "b")
    assert code == 2 and "--target" in err  # issue 17: a missing option is a usage error, as the exit-code table says
    code, _, err = cli("build", MODEL, "-t", "orin-nano", "-p", "int8", "--calib", tmp_path / "none.npz",
                       "-o", tmp_path / "b")
    assert code == 3 and "none.npz" in err
    assert not (tmp_path / "b").exists()


def test_main_job_from_a_fresh_process_under_60s(tmp_path):
    """The README's commands, as a user runs them: build, then bench on the CPU default."""
    pytest.importorskip("edgesqueeze.cli.bench", reason="the bench verb has not landed")
    t0 = time.perf_counter()
    out = tmp_path / "bundle"
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "build", str(MODEL), "--target", "orin-nano",
                        "--precision", "int8", "--calib", str(CALIB), "--val", str(VAL), "-o", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "int8 (QDQ)" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "bench", str(out)], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert time.perf_counter() - t0 < 60


def test_accuracy_drop_warnings():
    from edgesqueeze.pipeline.stages import accuracy_warnings

    labelled = {"reference_top1": 0.98, "models": {"int8_qdq": {"top1": 0.90, "outputs": {}}}}
    (msg,) = accuracy_warnings(labelled, "int8_qdq", max_drop=0.02)
    assert "loses 8.00 top-1 points" in msg and "minmax" in msg
    assert accuracy_warnings(labelled, "int8_qdq", max_drop=0.1) == []
    unlabelled = {"reference_top1": None,
                  "models": {"fp16": {"top1": None, "outputs": {"logits": {"top1_agreement": 0.95}}}}}
    assert "95.00% of top-1" in accuracy_warnings(unlabelled, "fp16")[0]
    assert accuracy_warnings(unlabelled, "fp16", max_drop=0.1) == []


def test_dynamic_inputs_take_shapes_and_bad_shapes_fail_early(cli, tmp_path):
    import onnx

    m = onnx.load(MODEL)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    dyn = tmp_path / "dyn.onnx"
    onnx.save(m, dyn)
    code, _, err = cli("build", dyn, "-t", "orin-nano", "-o", tmp_path / "a")  # the batch is checked at 1
    assert code == 0, err
    assert read_manifest(tmp_path / "a")["inputs"]["input"]["shape"] == ["N", 1, 8, 8]
    # the example's Reshape hard-codes batch 1: batch 4 cannot run, and says so before any work
    code, _, err = cli("build", dyn, "-t", "orin-nano", "-i", "input:4x1x8x8", "-o", tmp_path / "b")
    assert code == 4 and "cannot run the model at its input shapes" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    code, out, err = cli("build", dyn, "-t", "orin-nano", "-i", "input:1x1x8x8", "--static", "-o", tmp_path / "c",
                         "--json")
    assert code == 0, err
    mf = read_manifest(tmp_path / "c")
    assert mf["inputs"]["input"]["shape"] == [1, 1, 8, 8] and mf["options"]["input_shapes"] == {"input": [1, 1, 8, 8]}


def test_existing_archive_needs_force(cli, tmp_path):
    (tmp_path / "b.tar.gz").write_bytes(b"old")
    code, _, err = cli("build", MODEL, "-t", "cpu", "-o", tmp_path / "b", "--archive")
    assert code == 3 and "archive already exists" in err and not (tmp_path / "b").exists()
    code, _, err = cli("build", MODEL, "-t", "cpu", "-o", tmp_path / "b", "--archive", "--force")
    assert code == 0 and (tmp_path / "b.tar.gz").read_bytes() != b"old"


@pytest.mark.parametrize("target,precision,rtol", [("thor", "fp16", 1e-2), ("orin-nano", "fp16", 1e-2),
                                                   ("orin-nano", "int8", None)])
def test_every_bundle_model_runs_and_matches(tmp_path, target, precision, rtol):
    """Each model of the bundle runs on onnxruntime; FP16 stays within 1e-2 of FP32, the TensorRT variants
    with the functions inlined match the model they come from."""
    from edgesqueeze.ortutil import compare_outputs, run_model
    from edgesqueeze.pipeline import build

    build(MODEL, target, tmp_path / "b", precision=precision, calib=str(CALIB), calib_limit=32, progress=False)
    m = read_manifest(tmp_path / "b")
    x = {"input": np.load(VAL)["input"][:8]}
    outs = {}
    for kind, rel in m["models"].items():
        outs[kind] = [run_model(str(tmp_path / "b" / rel), {"input": x["input"][i:i + 1]}) for i in range(8)]
    if rtol is not None:
        for ref, act in zip(outs["fp32"], outs[precision]):
            assert compare_outputs(ref, act)["logits"]["max_rel"] < rtol
    assert m["custom_nodes"]  # the digits CNN has a depthwise-separable block: the variants exist
    for key, rel in m["tensorrt"]["engine_models"].items():
        if key.endswith(".inlined"):
            kind = key.split(".")[0]
            for i, ref in enumerate(outs[kind]):
                act = run_model(str(tmp_path / "b" / rel), {"input": x["input"][i:i + 1]})
                assert compare_outputs(ref, act)["logits"]["max_rel"] < 1e-5


@pytest.mark.skipif(sys.platform != "linux", reason="needs a Linux pseudo-terminal")
def test_progress_bar_per_stage_on_a_terminal(tmp_path):
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "edgesqueeze", "build", str(MODEL), "-t", "orin-nano", "-p", "int8",
                          "--calib", str(CALIB), "--calib-limit", "20", "-o", str(tmp_path / "b")],
                         stdin=slave, stdout=subprocess.DEVNULL, stderr=slave, cwd=REPO, close_fds=True)
    os.close(slave)
    buf = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    assert p.wait(timeout=60) == 0
    text = buf.decode("utf-8", "replace")
    stages = ("load", "optimize", "compress", "quantize", "compat", "validate", "engine", "bundle")
    for i, stage in enumerate(stages, 1):
        assert f"[{i}/{len(stages)}] {stage}" in text
    assert "\u2588" in text and "20/20" in text  # drawn bars; the calibration bar counts batches
