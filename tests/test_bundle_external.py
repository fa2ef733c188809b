"""Bundle models with external data (issue 15): a model whose weights pass ``EXTERNAL_WEIGHT_BYTES`` goes into the
bundle as ``<name>.onnx`` + ``<name>.onnx.data``, both hashed in the manifest. The threshold is lowered here so that
the digits model takes that path (tests/test_big_models.py builds a real 2.35 GB model, in the slow tier)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.bundle import assemble, read_manifest, verify_bundle, write_archive
from edgesqueeze.fileio import sha256_file
from edgesqueeze.model import data_file_of, load_model

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "examples" / "digits" / "digits_cnn.onnx"


def _build(out: Path, *extra: str) -> None:
    from edgesqueeze.cli import main

    assert main(["-q", "build", str(MODEL), "-t", "orin-nano", "-p", "fp16", "-o", str(out), *extra]) == 0


@pytest.fixture(scope="module")
def ext_bundle(tmp_path_factory):
    """The digits model built for orin-nano in FP16 with every model's weights external (threshold 0)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(assemble, "EXTERNAL_WEIGHT_BYTES", 0)
        out = tmp_path_factory.mktemp("ext") / "bundle"
        _build(out)
    return out


def _onnx_files(manifest: dict):
    """Every model the bundle ships: its models and the TensorRT variants."""
    rels = set(manifest["models"].values()) | set((manifest["tensorrt"] or {}).get("engine_models", {}).values())
    return sorted(rels)


def test_models_and_their_data_files_are_hashed(ext_bundle):
    m = verify_bundle(ext_bundle)
    rels = _onnx_files(m)
    assert "models/model.fp16.onnx" in rels and any(".trt_" in r for r in rels)  # variants too (custom nodes)
    for rel in rels:
        assert rel.endswith(".onnx")
        data = data_file_of(rel).as_posix()
        assert data in m["files"], data
        assert m["files"][data]["sha256"] == sha256_file(ext_bundle / data)
        assert m["files"][data]["size"] > m["files"][rel]["size"]  # the weights are in the data file
        model = onnx.load(str(ext_bundle / rel), load_external_data=False)
        locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        assert locations == {Path(data).name}  # relative, next to the model: trtexec and onnxruntime find it
    assert not [p for p in ext_bundle.rglob("*.data") if p.relative_to(ext_bundle).as_posix() not in m["files"]]


def test_fp16_weights_are_the_casts_of_the_fp32_ones(ext_bundle):
    fp32 = {t.name: numpy_helper.to_array(t) for t in load_model(ext_bundle / "models/model.fp32.onnx").graph.initializer}
    fp16 = load_model(ext_bundle / "models/model.fp16.onnx")
    halves = [t for t in fp16.graph.initializer if t.data_type == TensorProto.FLOAT16 and t.name in fp32]
    assert halves
    for t in halves:
        np.testing.assert_array_equal(numpy_helper.to_array(t), fp32[t.name].astype(np.float16))


def test_same_outputs_as_the_inline_bundle(ext_bundle, tmp_path):
    """Small models stay inline by default (no data file), and both bundles' models compute the same."""
    from edgesqueeze.ortutil import run_model

    inline = tmp_path / "inline"
    _build(inline)
    assert not list(inline.rglob("*.data"))
    x = {"input": np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)}
    for rel in ("models/model.fp32.onnx", "models/model.fp16.onnx"):
        a = run_model(str(ext_bundle / rel), x)
        b = run_model(str(inline / rel), x)
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])


def test_two_builds_are_byte_identical(ext_bundle, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(assemble, "EXTERNAL_WEIGHT_BYTES", 0)
        again = tmp_path / "again"
        _build(again)
    assert (again / "manifest.json").read_bytes() == (ext_bundle / "manifest.json").read_bytes()
    assert sorted(p.relative_to(again) for p in again.rglob("*")) == \
        sorted(p.relative_to(ext_bundle) for p in ext_bundle.rglob("*"))


def test_engine_script_names_the_model_next_to_its_data(ext_bundle):
    script = (ext_bundle / "build_engine.sh").read_text()
    m = read_manifest(ext_bundle)
    for rel in m["tensorrt"]["engine_models"].values():
        assert f" {rel} " in script and (ext_bundle / (rel + ".data")).is_file()


@pytest.mark.parametrize("verb", ["verify", "bench"])
def test_a_tampered_data_byte_is_refused_naming_the_file(ext_bundle, tmp_path, cli, verb):
    copy = tmp_path / "copy"
    shutil.copytree(ext_bundle, copy)
    data = copy / "models" / "model.fp16.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    args = [verb, str(copy)] + (["-n", "2", "--power", "none"] if verb == "bench" else [])
    code, out, err = cli(*args)
    assert code == 7, (out, err)
    assert "models/model.fp16.onnx.data" in err and "sha256 differs" in err and "Traceback" not in err


def test_archive_carries_the_data_files(ext_bundle, tmp_path, cli):
    arc = write_archive(ext_bundle, tmp_path / "b.tar.gz")
    assert write_archive(ext_bundle, tmp_path / "again" / "b.tar.gz").read_bytes() == arc.read_bytes()
    code, out, err = cli("verify", str(arc), "--json")
    assert code == 0 and json.loads(out)["ok"] is True, err


def test_quantize_keeps_the_inputs_external_data(tmp_path, cli):
    """quantize -p fp16 of a model whose weights are external writes its result the same way (as optimize)."""
    w = np.random.default_rng(0).standard_normal((64, 64), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [numpy_helper.from_array(w, "w")])
    src = tmp_path / "in" / "m.onnx"
    src.parent.mkdir()
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src),
                    save_as_external_data=True, all_tensors_to_one_file=True, location="m.onnx.data",
                    size_threshold=0)
    out = tmp_path / "out" / "m.fp16.onnx"
    code, _, err = cli("-q", "quantize", str(src), "-p", "fp16", "-o", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.fp16.onnx", "m.fp16.onnx.data"]
    got = {t.name: numpy_helper.to_array(t) for t in load_model(out).graph.initializer}
    assert hashlib.sha256(got["w"].tobytes()).digest() == hashlib.sha256(w.astype(np.float16).tobytes()).digest()
