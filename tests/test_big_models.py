"""Models over 2 GB (one protobuf's limit): weights as external data, nothing serialised whole to measure or check
it; inspect and optimize run on it and keep the weights bit-exact."""
from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.cli import main
from edgesqueeze.model import load_model

SIDE = 14000  # float32 [SIDE, SIDE] = 784 MB per weight; three of them: 2.35 GB
LAYERS = 3


def build_matmul_chain(folder, side=SIDE):
    """A MatMul chain x @ W0 @ W1 @ W2 of [side, side] float32 weights in one external-data file (side 14000:
    2.35 GB); returns the path and the weights' sha256, also of their FP16 casts as ``name:fp16`` (also
    benchmarks/bench_big_models.py)."""
    rng = np.random.default_rng(0)
    nodes, inits, hashes = [], [], {}
    prev = "x"
    for i in range(LAYERS):
        w = rng.standard_normal((side, side), dtype=np.float32)
        hashes[f"w{i}"] = hashlib.sha256(w.tobytes()).hexdigest()
        hashes[f"w{i}:fp16"] = hashlib.sha256(w.astype(np.float16).tobytes()).hexdigest()
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        del w
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"y{i}"], name=f"matmul{i}"))
        prev = f"y{i}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, side])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "big.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="big.onnx.data")
    return path, hashes


def _weight_hashes(model, suffix=""):
    return {t.name + suffix: hashlib.sha256(numpy_helper.to_array(t).tobytes()).hexdigest()
            for t in model.graph.initializer if t.name.startswith("w")}


def _exact(hashes, suffix=""):
    return {k: v for k, v in hashes.items() if k.endswith(":fp16") == bool(suffix)}


def test_sessions_copy_their_weights():
    """make_session hands large weights to onnxruntime as arrays and does not keep them: onnxruntime must copy
    them (if a release ever refers to the arrays instead, this fails)."""
    import onnxruntime as ort

    from edgesqueeze.model import split_weights
    from edgesqueeze.ortutil import make_session, run_model

    side = 160
    w = np.random.default_rng(1).standard_normal((side, side), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, side])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": np.ones((1, side), np.float32)}
    light, weights = split_weights(model, inline_bytes=1024)
    assert list(weights) == ["w"] and light.ByteSize() < 1024
    arrays = {k: v.copy() for k, v in weights.items()}
    so = ort.SessionOptions()
    so.add_external_initializers(list(arrays), [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()])
    sess = ort.InferenceSession(light.SerializeToString(), so, providers=["CPUExecutionProvider"])
    before = sess.run(None, x)[0]
    arrays["w"][:] = 0
    np.testing.assert_array_equal(sess.run(None, x)[0], before)  # the session holds its own copy
    import gc

    sess = make_session(model)  # from stubs + arrays, the arrays dropped: the same outputs as from the bytes
    gc.collect()
    np.testing.assert_array_equal(run_model(model, x, session=sess)["y"],
                                  run_model(model.SerializeToString(), x)["y"])


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    if shutil.disk_usage(folder).free < 8 << 30:
        pytest.skip("needs 8 GB of free disk")
    path, hashes = build_matmul_chain(folder)
    assert os.path.getsize(folder / "big.onnx.data") > 2 ** 31
    return path, hashes


@pytest.mark.slow
def test_model_over_2gb_loads_and_inspects(big):
    """Load (checker by path, shape inference without the weights) and inspect a 2.35 GB model, weights exact."""
    path, hashes = big
    model = load_model(path)  # no ByteSize()/serialisation of the whole model
    assert _weight_hashes(model) == _exact(hashes)
    del model
    assert main(["-q", "inspect", str(path)]) == 0


@pytest.mark.slow
def test_model_over_2gb_optimize(big, tmp_path):
    """optimize keeps a >2 GB model's weights external (one data file next to it) and bit-exact."""
    path, hashes = big
    out = tmp_path / "out" / "big.opt.onnx"
    assert main(["-q", "optimize", str(path), "-o", str(out)]) == 0
    assert os.path.getsize(out) < 1 << 20  # the weights stayed external, in one file next to the model
    assert [p.name for p in out.parent.iterdir()] == sorted(["big.opt.onnx", "big.opt.onnx.data"])
    assert _weight_hashes(load_model(out)) == _exact(hashes)


@pytest.mark.slow
def test_model_over_2gb_fp16(big, tmp_path):
    """quantize -p fp16 of a >2 GB model: its FP16 weights equal the casts of the originals."""
    path, hashes = big
    out = tmp_path / "fp16" / "big.fp16.onnx"
    assert main(["-q", "quantize", str(path), "-p", "fp16", "-o", str(out)]) == 0
    assert _weight_hashes(load_model(out), ":fp16") == _exact(hashes, ":fp16")


@pytest.mark.slow
def test_model_over_2gb_build(big, tmp_path):
    """build (optimize, FP16, bundle) of a >2 GB model: the bundle's models are <name>.onnx + <name>.onnx.data,
    hashed in the manifest; the FP16 model holds the FP16 casts of the weights; verify passes, and names the data
    file when one of its bytes changes."""
    from edgesqueeze.bundle import verify_bundle
    from edgesqueeze.errors import VerificationError

    path, hashes = big
    bundle = tmp_path / "bundle"
    assert main(["-q", "build", str(path), "-t", "orin-nano", "-p", "fp16", "-o", str(bundle)]) == 0
    manifest = verify_bundle(bundle)
    fp16 = manifest["models"]["fp16"]
    assert manifest["models"]["deploy"] == fp16 == "models/model.fp16.onnx"
    for rel in (fp16, manifest["models"]["fp32"]):
        assert os.path.getsize(bundle / rel) < 1 << 20 and rel + ".data" in manifest["files"]
    assert manifest["files"][fp16 + ".data"]["size"] >= 3 * SIDE * SIDE * 2
    assert _weight_hashes(load_model(bundle / fp16), ":fp16") == _exact(hashes, ":fp16")
    with open(bundle / (fp16 + ".data"), "r+b") as fh:  # in place: no copy of a 1.2 GB file
        fh.seek(SIDE * SIDE)
        byte = fh.read(1)
        fh.seek(SIDE * SIDE)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(VerificationError, match="sha256 differs") as err:
        verify_bundle(bundle)
    assert err.value.path.endswith("models/model.fp16.onnx.data")
