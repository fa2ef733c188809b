"""TensorRT optimization profiles for dynamic-shape models: derivation and validation (pure), ``build`` flags,
``build_engine.sh`` per TensorRT version, the on-device runner's choices, ``bench --shapes`` on onnxruntime,
and the TensorRT runner itself (``trt`` marker: skips without TensorRT)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.backends.trt_plan import (buffer_bytes, context_plan, needs_calibration_profile,
                                           parse_shape_profiles, plan_build)
from edgesqueeze.backends.trt_profile import (calibration_profile, check_profile, covering_profile,
                                              default_profile, dynamic_profile, parse_profile_flags,
                                              parse_shape_sweep, profile_lines, shapes_spec)
from edgesqueeze.bundle.assemble import assemble_bundle
from edgesqueeze.bundle.engine_plan import TRTEXEC_FLAGS, calib_profile_flag, profile_flags
from edgesqueeze.deploy import device_runner
from edgesqueeze.devices import get_profile
from edgesqueeze.errors import InputError
from edgesqueeze.model import input_specs

BASH = shutil.which("bash")
DYN = {"images": {"shape": ["batch", 3, "h", "w"]}}


def _p(lo, opt, hi):
    return {"min": list(lo), "opt": list(opt), "max": list(hi)}


def _dynamic_model(dims=("batch", 3, "h", "w")):
    w = numpy_helper.from_array(np.random.RandomState(0).randn(4, 3, 3, 3).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["out"])], "dyn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [dims[0], 4, 1, 1])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


# ------------------------------------------------------------------------------------------- derivation (pure)
def test_default_profile_fixes_static_dims_and_ranges_the_batch():
    specs = {"images": {"shape": ["batch", 3, 320, 320]}, "scale": {"shape": [1, 2]}}
    p = default_profile(specs)
    assert p["images"] == _p([1, 3, 320, 320], [1, 3, 320, 320], [8, 3, 320, 320])
    assert p["scale"] == _p([1, 2], [1, 2], [1, 2])
    assert dynamic_profile(specs, p) == {"images": p["images"]}  # only dynamic inputs go to trtexec
    # the data's batch is the opt, max never below it
    assert default_profile(specs, {"images": [16, 3, 320, 320]})["images"]["max"] == [16, 3, 320, 320]
    assert default_profile(specs, max_batch=4, opt_batch=2)["images"] == _p([1, 3, 320, 320], [2, 3, 320, 320],
                                                                             [4, 3, 320, 320])


def test_default_profile_takes_spatial_dims_from_the_data_or_asks_for_them():
    p = default_profile(DYN, {"images": [2, 3, 224, 256]})
    assert p["images"] == _p([1, 3, 224, 256], [2, 3, 224, 256], [8, 3, 224, 256])
    with pytest.raises(InputError, match=r"dynamic dimension 'h' \(axis 2\)") as e:
        default_profile(DYN)
    assert "--opt-shapes images:" in e.value.hint
    given = {"images": _p([1, 3, 320, 320], [1, 3, 640, 640], [8, 3, 1280, 1280])}
    assert default_profile(DYN, {"images": [2, 3, 224, 256]}, given=given) == given  # the user's range wins


def test_profile_flags_parse_like_trtexec():
    assert parse_profile_flags(opt_shapes="images:1x3x640x640") == {"images": _p([1, 3, 640, 640], [1, 3, 640, 640],
                                                                                  [1, 3, 640, 640])}
    p = parse_profile_flags("images:1x3x320x320,mask:1x320x320", "images:1x3x640x640,mask:1x640x640",
                            "images:8x3x1280x1280,mask:8x1280x1280")
    assert p["mask"] == _p([1, 320, 320], [1, 640, 640], [8, 1280, 1280])
    with pytest.raises(InputError, match="only --opt-shapes or all of"):
        parse_profile_flags(min_shapes="images:1x3x3x3", opt_shapes="images:1x3x3x3")
    with pytest.raises(InputError, match="min <= opt <= max at axis 2"):
        parse_profile_flags("x:1x3x9x9", "x:1x3x4x4", "x:1x3x9x9")
    with pytest.raises(InputError, match="NAME:DIMS"):
        parse_profile_flags(opt_shapes="1x3x4x4")


def test_check_profile_holds_the_profile_against_the_model():
    ok = {"images": _p([1, 3, 8, 8], [1, 3, 16, 16], [4, 3, 32, 32])}
    assert check_profile(DYN, ok) == ok
    with pytest.raises(InputError, match="model's inputs are: images"):
        check_profile(DYN, {"img": ok["images"]})
    with pytest.raises(InputError, match="rank 3, the model's input has rank 4"):
        check_profile(DYN, {"images": _p([1, 3, 8], [1, 3, 8], [1, 3, 8])})
    with pytest.raises(InputError, match="axis 1 is fixed at 3"):
        check_profile(DYN, {"images": _p([1, 4, 8, 8], [1, 4, 8, 8], [1, 4, 8, 8])})


def test_shape_specs_sweeps_and_calibration_profile():
    p = {"b": _p([1, 4], [2, 4], [8, 4]), "a:0": _p([1], [1], [1])}
    assert shapes_spec(p, "max") == "'a:0':1,b:8x4"
    assert calibration_profile(p)["b"] == _p([2, 4], [2, 4], [2, 4])
    assert profile_lines({"images": _p([1, 3], [2, 3], [8, 3])}) == ["images: min 1x3, opt 2x3, max 8x3"]
    sweep = parse_shape_sweep("images:1x3x320x320,images:1x3x640x640")
    assert sweep == [{"images": [1, 3, 320, 320]}, {"images": [1, 3, 640, 640]}]
    assert len(parse_shape_sweep("a:1x3,b:1x4,a:2x3,b:2x4")) == 2
    assert covering_profile(sweep)["images"] == _p([1, 3, 320, 320], [1, 3, 320, 320], [1, 3, 640, 640])
    # the runner takes the manifest's dict form as well as (min, opt, max)
    assert parse_shape_profiles({"x": _p([1, 3], [2, 3], [4, 3])}) == {"x": ((1, 3), (2, 3), (4, 3))}


# ------------------------------------------------------------------------------------ TensorRT versions (pure)
@pytest.mark.parametrize("version,api,set_shape,execute", [
    ("8.2.1", "bindings", "set_binding_shape", "execute_async_v2"),
    ("8.4.3", "bindings", "set_binding_shape", "execute_async_v2"),
    ("8.5.2", "tensors", "set_input_shape", "execute_async_v3"),
    ("10.3", "tensors", "set_input_shape", "execute_async_v3"),
    ("10.13", "tensors", "set_input_shape", "execute_async_v3")])
def test_context_plan_per_version_matches_the_device_runner(version, api, set_shape, execute):
    plan = context_plan(version)
    assert (plan.io_api, plan.set_shape, plan.execute) == (api, set_shape, execute)
    assert plan.select_profile == "set_optimization_profile_async"
    major, minor = (int(x) for x in version.split(".")[:2])
    assert device_runner.io_api((major, minor)) == api == plan_build(version, "fp32").io_api


def test_calibration_profile_only_for_implicit_int8_with_dynamic_inputs():
    cache = plan_build("8.5.2", "int8", has_calibration=True)
    assert needs_calibration_profile(cache, True) and not needs_calibration_profile(cache, False)
    assert not needs_calibration_profile(plan_build("8.5.2", "int8", has_qdq=True), True)
    assert not needs_calibration_profile(plan_build("10.13", "int8", has_qdq=True), True)
    assert buffer_bytes((8, 3, 4, 4), 4, 0) == 1536 and buffer_bytes((1, 3, 4, 4), 4, 1536) == 1536
    assert buffer_bytes((0,), 4, 0) == 1


@pytest.mark.parametrize("version,calib", [("8.2.1", "--optShapesCalib"), ("8.5.2", "--optShapesCalib"),
                                           ("10.3", "--optShapesCalib"), ("10.13", None), ("11.0", None)])
def test_profile_flags_per_tensorrt_version(version, calib):
    p = {"images": _p([1, 3, 320, 320], [1, 3, 640, 640], [8, 3, 1280, 1280])}
    assert profile_flags(version, p) == ["--minShapes=images:1x3x320x320", "--optShapes=images:1x3x640x640",
                                         "--maxShapes=images:8x3x1280x1280"]
    assert profile_flags(version, {}) == [] and calib_profile_flag(version, {}) is None
    assert calib_profile_flag(version, p) == (f"{calib}=images:1x3x640x640" if calib else None)


# --------------------------------------------------------------------------------------------- build_engine.sh
def _bundle(tmp_path, target, precision, model, profile):
    prof = get_profile(target)
    models = {"fp32": model, **({"int8_qdq": model} if precision == "int8" else {}),
              **({"fp16": model} if precision == "fp16" else {})}
    deploy = {"int8": "int8_qdq", "fp16": "fp16", "fp32": "fp32"}[precision]
    cache = f"TRT-{prof.trt_version_tag()}-EntropyCalibration2\nimages: 3c010a14\n" if precision == "int8" else None
    out = tmp_path / f"{target}-{precision}"
    manifest, _ = assemble_bundle(out, profile=prof, precision=precision, models=models, deploy=deploy,
                                  source={"name": "m.onnx"}, options={}, versions={"edgesqueeze": "t"},
                                  inputs={}, cache_text=cache, shape_profile=profile)
    return out, manifest


PROFILE = {"images": _p([1, 3, 32, 32], [2, 3, 64, 64], [8, 3, 128, 128])}
SHAPES = ["--minShapes=images:1x3x32x32", "--optShapes=images:2x3x64x64", "--maxShapes=images:8x3x128x128"]


@pytest.mark.parametrize("target,version", [("tx2", "8.2"), ("xavier-nx", "8.5"), ("orin-nano", "10.3"),
                                            ("thor", "10.13")])
def test_build_engine_sh_passes_the_profile_on_every_version(tmp_path, target, version):
    out, manifest = _bundle(tmp_path, target, "int8", _dynamic_model(), PROFILE)
    script = (out / "build_engine.sh").read_text()
    assert all(flag in script for flag in SHAPES)
    assert "#   images: min 1x3x32x32, opt 2x3x64x64, max 8x3x128x128" in script
    assert manifest["tensorrt"]["profile"] == PROFILE
    prec = [ln for ln in script.splitlines() if "PREC_FLAGS=(" in ln]
    if version in ("8.2", "8.5"):  # implicit INT8 from the cache: the calibration profile follows --calib
        assert "--calib=calib/calibration.cache --optShapesCalib=images:2x3x64x64" in prec[0]
    elif version == "10.3":  # QDQ by default; the cache route calibrates with the profile
        assert "--optShapesCalib" not in prec[0] and "--optShapesCalib=images:2x3x64x64" in prec[1]
    else:
        assert "--optShapesCalib" not in script and "--stronglyTyped" in prec[0]


def test_static_model_script_is_unchanged(tmp_path):
    static = _dynamic_model((1, 3, 32, 32))
    a, _ = _bundle(tmp_path / "a", "orin-nano", "int8", static, None)
    b, manifest = _bundle(tmp_path / "b", "orin-nano", "int8", static, {})
    assert (a / "build_engine.sh").read_bytes() == (b / "build_engine.sh").read_bytes()
    assert "Shapes" not in (a / "build_engine.sh").read_text() and "profile" not in manifest["tensorrt"]


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_build_engine_sh_runs_trtexec_with_the_profile(tmp_path):
    from test_bundle_engine_script import FAKE_TRTEXEC

    out, _ = _bundle(tmp_path, "xavier-nx", "int8", _dynamic_model(), PROFILE)
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    os.chmod(fake, 0o755)
    env = dict(os.environ, TRTEXEC=str(fake), FAKE_TAG="8502", FAKE_ARGS=str(tmp_path / "args.txt"))
    r = subprocess.run([BASH, str(out / "build_engine.sh")], capture_output=True, text=True, env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert all(f in args for f in SHAPES) and "--optShapesCalib=images:2x3x64x64" in args


# ------------------------------------------------------------------------------------------ on-device runner
def _manifest(profile, precision="int8", deploy="models/model.fp32.onnx"):
    return {"precision": precision, "models": {"deploy": deploy},
            "inputs": {"images": {"shape": ["batch", 3, "h", "w"], "dtype": "float32"}},
            "tensorrt": {"trtexec_flags": TRTEXEC_FLAGS, "workspace_mib": 1024, "profile": profile}}


@pytest.mark.parametrize("version", [(8, 2), (8, 5), (10, 3), (10, 13)])
def test_device_runner_shape_flags_follow_the_bundle(version):
    m = _manifest(PROFILE)
    row = device_runner.flag_row(m, version)
    build = device_runner.trtexec_build_flags(m, "c.cache", version, None)
    calib = any(f.startswith("--calib=") for f in build)
    flags = device_runner.profile_flags(m, row, calib, False)
    name = ".".join(map(str, version))
    expected = profile_flags(name, PROFILE) + ([calib_profile_flag(name, PROFILE)] if calib else [])
    assert flags == expected + ["--shapes=images:2x3x64x64"]  # the same strings as build_engine.sh
    assert calib == (version < (10, 13))
    # a loaded engine has its profile: only the inference shapes
    assert device_runner.profile_flags(m, row, calib, True) == ["--shapes=images:2x3x64x64"]
    # a static bundle: nothing, and feeds keep the manifest's shapes
    static = _manifest(None)
    assert device_runner.profile_flags(static, row, calib, False) == []
    assert device_runner.input_specs(static) == [("images", [1, 3, 1, 1], "float32")]
    assert device_runner.input_specs(m) == [("images", [2, 3, 64, 64], "float32")]


def test_device_runner_shapes_spec_is_the_same_as_ours():
    p = {"b": _p([1, 4], [2, 4], [8, 4]), "a:0": _p([1], [1], [1])}
    for sel in ("min", "opt", "max"):
        assert device_runner.shapes_spec(p, sel) == shapes_spec(p, sel)
    assert device_runner.version_tuple_of("8.2.1.8") == (8, 2) and device_runner.version_tuple_of("10") == (10, 0)


# ------------------------------------------------------------------------------------------------ CLI + bench
def _cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH")] if p))
    return subprocess.run([sys.executable, "-m", "edgesqueeze", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("flags,code,message", [
    (["--opt-shapes", "images1x3x32x32"], 2, "expected NAME:DIMS"),
    (["--max-shapes", "images:1x3x0x32"], 2, "every dimension must be positive"),
    (["--opt-shapes", "images:1x3x32"], 3, "rank 3, the model's input has rank 4"),
    (["--opt-shapes", "images:1x4x32x32"], 3, "axis 1 is fixed at 3"),
    (["--opt-shapes", "img:1x3x32x32"], 3, "model's inputs are: images"),
    (["--min-shapes", "images:1x3x32x32", "--opt-shapes", "images:1x3x32x32"], 3, "missing --max-shapes"),
])
def test_build_refuses_a_bad_profile_in_one_line(tmp_path, flags, code, message):
    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_model(), path)
    r = _cli("build", path, "-t", "orin-nano", "--input", "images:1x3x32x32", *flags, "-o", tmp_path / "b")
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists()


def test_build_with_symbolic_dims_records_the_profile(tmp_path):
    """Without --input the model keeps its symbolic dims (needs the pipeline to carry them): the default profile
    takes the batch range and the spatial dims from the validation data, shown in the summary and manifest."""
    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_model(), path)
    np.savez(tmp_path / "val.npz", images=np.random.RandomState(0).randn(2, 3, 48, 40).astype(np.float32))
    r = _cli("build", path, "-t", "xavier-nx", "-p", "fp16", "--val", tmp_path / "val.npz", "-o", tmp_path / "b",
             "--json")
    if r.returncode == 3 and "has no value" in r.stderr:
        pytest.skip("this branch's build still needs --input for symbolic dims")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["profile"]["images"]["max"][1:] == [3, 48, 40]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["tensorrt"]["profile"] == summary["profile"]
    assert "--maxShapes=images:8x3x48x40" in (tmp_path / "b" / "build_engine.sh").read_text()


def test_build_yolov8n_with_a_profile(tmp_path):
    from realnets import realnet

    path = realnet("yolov8n_320")
    assert input_specs(onnx.load(path))["images"]["shape"][0] == "batch"
    r = _cli("build", path, "-t", "orin-nano", "-p", "fp16", "--local-engine", "off",
             "--min-shapes", "images:1x3x320x320", "--opt-shapes", "images:1x3x320x320",
             "--max-shapes", "images:4x3x320x320", "-o", tmp_path / "b")
    if r.returncode == 3 and "has no value" in r.stderr:
        pytest.skip("this branch's build still needs --input for symbolic dims")
    assert r.returncode == 0, r.stderr
    assert "TensorRT profile images: min 1x3x320x320, opt 1x3x320x320, max 4x3x320x320" in r.stdout
    assert "--maxShapes=images:4x3x320x320" in (tmp_path / "b" / "build_engine.sh").read_text()


def test_bench_sweeps_shapes_on_onnxruntime(tmp_path):
    from edgesqueeze.bench.api import bench
    from edgesqueeze.bench.report import summary_rows

    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_model(), path)
    shapes = parse_shape_sweep("images:1x3x16x16,images:2x3x32x32")
    result = bench(path, iterations=3, warmup=1, power="none", shapes=shapes)
    assert [(r["batch"], r["shape"]) for r in result["runs"]] == [(1, "images:1x3x16x16"), (2, "images:2x3x32x32")]
    assert result["options"]["shapes"] == ["images:1x3x16x16", "images:2x3x32x32"]
    assert [r["shape"] for r in summary_rows([result])] == ["images:1x3x16x16", "images:2x3x32x32"]
    with pytest.raises(InputError, match="rank"):
        bench(path, iterations=1, warmup=0, power="none", shapes=[{"images": [1, 3, 16]}])


def test_bench_cli_shapes(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_model(), path)
    r = _cli("bench", path, "--shapes", "images:1x3x16x16,images:1x3x24x24", "-n", "3", "--power", "none")
    assert r.returncode == 0, r.stderr
    assert "images:1x3x24x24" in r.stdout and r.stdout.splitlines()[1].startswith("shape")
    bad = _cli("bench", path, "--shapes", "images", "--power", "none")
    assert bad.returncode == 2 and "NAME:DIMS" in bad.stderr


# ------------------------------------------------------------------------------------------ TensorRT (device)
@pytest.mark.trt
def test_trt_runner_runs_a_dynamic_model_at_several_shapes(tmp_path):
    from edgesqueeze.backends import get_runner
    from edgesqueeze.ortutil import run_model

    model = _dynamic_model()
    profile = {"images": _p([1, 3, 16, 16], [1, 3, 32, 32], [4, 3, 64, 64])}
    with get_runner("trt", model, precision="fp32", shape_profiles=profile, cache_dir=False) as runner:
        for shape in ((1, 3, 16, 16), (4, 3, 64, 64), (2, 3, 32, 32)):
            x = np.random.RandomState(1).randn(*shape).astype(np.float32)
            out = runner.infer({"images": x})
            ref = run_model(model, {"images": x})
            np.testing.assert_allclose(out["out"], ref["out"], rtol=1e-3, atol=1e-4)
