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


def _big_model(folder):
    """A MatMul chain x @ W0 @ W1 @ W2 with weights in one external-data file; returns the path and weight hashes."""
    rng = np.random.default_rng(0)
    nodes, inits, hashes = [], [], {}
    prev = "x"
    for i in range(LAYERS):
        w = rng.standard_normal((SIDE, SIDE), dtype=np.float32)
        hashes[f"w{i}"] = hashlib.sha256(w.tobytes()).hexdigest()
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        del w
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"y{i}"], name=f"matmul{i}"))
        prev = f"y{i}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIDE])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, SIDE])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "big.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="big.onnx.data")
    return path, hashes


def _weight_hashes(model):
    return {t.name: hashlib.sha256(numpy_helper.to_array(t).tobytes()).hexdigest() for t in model.graph.initializer}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    if shutil.disk_usage(folder).free < 8 << 30:
        pytest.skip("needs 8 GB of free disk")
    path, hashes = _big_model(folder)
    assert os.path.getsize(folder / "big.onnx.data") > 2 ** 31
    return path, hashes


@pytest.mark.slow
def test_model_over_2gb_loads_and_inspects(big):
    """Load (checker by path, shape inference without the weights) and inspect a 2.35 GB model, weights exact."""
    path, hashes = big
    model = load_model(path)  # no ByteSize()/serialisation of the whole model
    assert _weight_hashes(model) == hashes
    del model
    assert main(["-q", "inspect", str(path)]) == 0


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 15, left: the optimizer serialises the whole model (EncodeError over 2 GB under "
                          "protobuf 7); it needs path-based sessions and external data through the passes",
                   strict=True)
def test_model_over_2gb_optimize(big, tmp_path):
    """optimize keeps a >2 GB model's weights external and bit-exact."""
    path, hashes = big
    out = tmp_path / "out" / "big.opt.onnx"
    assert main(["-q", "optimize", str(path), "-o", str(out)]) == 0
    assert os.path.getsize(out) < 2 ** 31  # the weights stayed external
    assert _weight_hashes(load_model(out)) == hashes
