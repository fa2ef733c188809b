"""The compress / pack / unpack verbs, run in-process on real files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compress_nets import mlp

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"


@pytest.fixture
def model_path(tmp_path):
    p = tmp_path / "mlp.onnx"
    onnx.save(mlp((64, 48, 32, 10)), p)
    return p


@pytest.fixture
def val_path(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "val.npz"
    np.savez(p, x=rng.standard_normal((4, 64)).astype(np.float32), label=rng.integers(0, 10, 4))
    return p


def test_compress_prune_share_json(cli, model_path, val_path, tmp_path):
    out = tmp_path / "small.onnx"
    before = model_path.read_bytes()
    code, stdout, _ = cli("compress", model_path, "--prune", "0.8", "--share", "6,4", "--val", val_path,
                          "-o", out, "--json")
    assert code == 0
    rep = json.loads(stdout)
    assert rep["steps"] == ["prune", "share"]
    assert rep["nonzero_after"] < 0.3 * rep["nonzero_before"]
    assert set(rep["accuracy"]) == {"before", "after"}
    assert model_path.read_bytes() == before
    w = numpy_helper.to_array(onnx.load(out).graph.initializer[0])
    assert np.unique(w[w != 0]).size <= 16
    # deterministic: the same command writes the same bytes
    out2 = tmp_path / "small2.onnx"
    assert cli("compress", model_path, "--prune", "0.8", "--share", "6,4", "-o", out2)[0] == 0
    assert out.read_bytes() == out2.read_bytes()


@pytest.mark.parametrize("args", [["--sparsity", "2:4"], ["--channels", "0.5"], ["--rank-ratio", "0.5"],
                                  ["--low-rank", "0.99", "--low-rank-spatial"]])
def test_compress_each_technique_text(cli, model_path, tmp_path, args):
    out = tmp_path / "o.onnx"
    code, stdout, _ = cli("compress", model_path, *args, "-o", out)
    assert code == 0, stdout
    assert "steps:" in stdout and "parameters" in stdout
    onnx.checker.check_model(onnx.load(out))


def test_compress_errors(cli, model_path, tmp_path):
    code, _, err = cli("compress", model_path, "-o", tmp_path / "o.onnx")
    assert code == 3 and "nothing to do" in err
    code, _, err = cli("compress", model_path, "--prune", "1.5", "-o", tmp_path / "o.onnx")
    assert code == 3 and "sparsity" in err
    code, _, err = cli("compress", model_path, "--prune", "0.5", "-o", model_path)
    assert code == 3
    code, _, err = cli("compress", tmp_path / "nope.onnx", "--prune", "0.5", "-o", tmp_path / "o.onnx")
    assert code == 3 and "nope.onnx" in err
    code, _, err = cli("compress", model_path, "--share", "8", "-o", tmp_path / "o.onnx")
    assert code == 2


def test_pack_unpack_roundtrip(cli, model_path, tmp_path):
    small = tmp_path / "small.onnx"
    assert cli("compress", model_path, "--prune", "0.9", "--share", "8,5", "-o", small)[0] == 0
    esq, back = tmp_path / "small.esq", tmp_path / "back.onnx"
    code, stdout, _ = cli("pack", small, "--dense", model_path, "-o", esq)
    assert code == 0
    assert "+Huffman KiB" in stdout and "smaller" in stdout
    code, stdout, _ = cli("pack", small, "-o", tmp_path / "j.esq", "--json")
    rep = json.loads(stdout)
    assert rep["file_bytes"] == esq.stat().st_size
    code, stdout, _ = cli("unpack", esq, "-o", back, "--json")
    assert code == 0
    assert back.read_bytes() == small.read_bytes()
    assert json.loads(stdout)["params"] > 0


def test_unpack_bad_file(cli, tmp_path, model_path):
    code, _, err = cli("unpack", model_path, "-o", tmp_path / "x.onnx")
    assert code == 3 and "bad magic" in err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.skipif(not (EXAMPLE / "digits_cnn.onnx").exists(), reason="example model not built yet")
def test_compress_example_with_validation(cli, tmp_path):
    out = tmp_path / "d.onnx"
    code, stdout, _ = cli("compress", EXAMPLE / "digits_cnn.onnx", "--share", "8,5", "--val", EXAMPLE / "val.npz",
                          "-o", out, "--json")
    assert code == 0
    acc = json.loads(stdout)["accuracy"]
    assert acc["before"] > 0.9 and abs(acc["after"] - acc["before"]) <= 0.02
