"""``edgesqueeze train``: iterative pruning, lottery tickets and class-dependent pruning on an ONNX model."""
import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.model import load_model
from edgesqueeze.ortutil import make_session

pytest.importorskip("torch")


def _tiny_cnn(path):
    """Conv 1->4 3x3 + ReLU + Flatten + Gemm 256->10 over 1x1x8x8 digits (batch 1, like the example export)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((10, 256)) * 0.06).astype(np.float32), "w2"),
             numpy_helper.from_array(np.zeros(10, np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1, name="fc")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(m.SerializeToString())
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    d = tmp_path_factory.mktemp("train")
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    np.savez(d / "train.npz", input=x[idx[:300]], label=y[idx[:300]])
    np.savez(d / "val.npz", input=x[idx[300:500]], label=y[idx[300:500]])
    np.savez(d / "nolabel.npz", input=x[idx[:50]])
    return d, _tiny_cnn(d / "tiny.onnx")


def _train(cli, setup, out, *extra):
    d, model = setup
    code, stdout, stderr = cli("train", model, "--data", d / "train.npz", "--val", d / "val.npz", "--epochs", "2",
                               "--lr", "0.01", "--json", "-o", out, *extra)
    assert code == 0, stderr
    return json.loads(stdout)


def _weights(path):
    return {t.name: numpy_helper.to_array(t) for t in load_model(path).graph.initializer if len(t.dims) > 1}


def _top1(path, val):
    s = make_session(load_model(path))
    out = np.concatenate([s.run(None, {"input": val["input"][i:i + 1]})[0] for i in range(len(val["label"]))])
    return float((out.argmax(1) == val["label"]).mean())


@pytest.mark.torch
def test_iterative_prunes_to_schedule_and_exports(cli, setup, tmp_path):
    rep = _train(cli, setup, tmp_path / "it.onnx", "--iterative", "0.5,0.75", "--distill")
    assert [h["round"] for h in rep["history"]] == [0, 1, 2]
    assert rep["final"]["sparsity"] == pytest.approx(0.75, abs=1e-3)
    w = _weights(tmp_path / "it.onnx")
    assert sum(int((v == 0).sum()) for v in w.values()) >= 0.74 * sum(v.size for v in w.values())
    val = np.load(setup[0] / "val.npz")
    # onnxruntime on the written file agrees with the last round's validation accuracy
    assert _top1(tmp_path / "it.onnx", val) == pytest.approx(rep["final"]["accuracy"], abs=1e-6)
    assert rep["final"]["accuracy"] > 0.6


@pytest.mark.torch
def test_lottery_rewinds_and_is_byte_reproducible(cli, setup, tmp_path):
    a = _train(cli, setup, tmp_path / "a.onnx", "--lottery", "2", "--prune-rate", "0.5", "--seed", "3")
    b = _train(cli, setup, tmp_path / "b.onnx", "--lottery", "2", "--prune-rate", "0.5", "--seed", "3")
    assert [round(h["sparsity"], 2) for h in a["history"]] == [0.0, 0.5, 0.75]
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert a["history"] == b["history"]
    c = _train(cli, setup, tmp_path / "c.onnx", "--lottery", "2", "--prune-rate", "0.5", "--seed", "4", "--reinit")
    assert (tmp_path / "c.onnx").read_bytes() != (tmp_path / "a.onnx").read_bytes()
    assert c["options"]["reinit"] is True


@pytest.mark.torch
def test_important_class_reports_false_negatives(cli, setup, tmp_path):
    rep = _train(cli, setup, tmp_path / "cd.onnx", "--lottery", "1", "--prune-rate", "0.5", "--important-class",
                 "8", "--lam", "0.01")
    last = rep["final"]
    assert {"fn", "fp", "positives", "auc"} <= set(last)
    assert last["positives"] == int((np.load(setup[0] / "val.npz")["label"] == 8).sum())
    assert rep["options"]["important_class"] == 8
    it = _train(cli, setup, tmp_path / "cdi.onnx", "--iterative", "0.5", "--important-class", "8")
    assert "fn" in it["final"]
    again = _train(cli, setup, tmp_path / "cdi2.onnx", "--iterative", "0.5", "--important-class", "8")
    assert (tmp_path / "cdi.onnx").read_bytes() == (tmp_path / "cdi2.onnx").read_bytes()
    assert again["history"] == it["history"]


@pytest.mark.torch
def test_text_output_and_progress_lines(cli, setup, tmp_path):
    d, model = setup
    code, out, err = cli("train", model, "--data", d / "train.npz", "--val", d / "val.npz", "--epochs", "1",
                         "--lottery", "1", "--important-class", "3", "-o", tmp_path / "t.onnx")
    assert code == 0, err
    assert "lottery pruning" in out and "FN" in out
    assert "round 0: sparsity 0.000" in err and "round 1: sparsity 0.200" in err and "class 3: FN" in err


@pytest.mark.torch
def test_errors(cli, setup, tmp_path):
    d, model = setup
    base = ["train", model, "--val", d / "val.npz", "-o", tmp_path / "x.onnx"]
    code, _, err = cli(*base, "--data", d / "nolabel.npz", "--iterative", "0.5")
    assert code == 3 and "nolabel.npz" in err and "no labels" in err
    code, _, err = cli(*base, "--data", d / "train.npz")
    assert code == 3 and "choose one method" in err
    code, _, err = cli(*base, "--data", d / "train.npz", "--iterative", "0.9,0.5")
    assert code == 3 and "schedule" in err
    code, _, err = cli(*base, "--data", d / "train.npz", "--lottery", "1", "--important-class", "12")
    assert code == 3 and "important class 12" in err
    code, _, err = cli(*base, "--data", d / "train.npz", "--lottery", "1", "--distill")
    assert code == 3 and "distillation" in err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.torch
def test_layer_sparsity_and_trained_quantization(cli, setup, tmp_path):
    from edgesqueeze.compress import share_weights

    args = ("--iterative", "0.5,0.75", "--layer-sparsity", "w1=0.25", "--share", "4,3", "--share-bits", "w2=3",
            "--share-epochs", "1", "--distill")
    rep = _train(cli, setup, tmp_path / "dc.onnx", *args)
    assert rep["pruned"]["w1"]["kept"] == 27 and rep["pruned"]["w2"]["kept"] == 640     # 25 % / 75 % of 36 / 2560
    assert rep["options"]["layer_sparsity"] == {"w1": 0.25} and rep["options"]["share"] == [4, 3]
    assert {n: v["bits"] for n, v in rep["shared"]["layers"].items()} == {"w1": 4, "w2": 3}
    w = _weights(tmp_path / "dc.onnx")
    distinct = sorted((v.ndim, np.unique(v[v != 0]).size) for v in w.values())
    assert distinct[0][0] == 2 and distinct[0][1] <= 8 and distinct[1][0] == 4 and distinct[1][1] <= 16
    # onnxruntime on the written file gives the validation accuracy after the shared values were fine-tuned
    assert _top1(tmp_path / "dc.onnx", np.load(setup[0] / "val.npz")) == pytest.approx(rep["shared"]["accuracy"])
    model = load_model(tmp_path / "dc.onnx")
    again, _ = share_weights(model, conv_bits=4, fc_bits=3)     # already on the codebooks: kept bit for bit
    assert again.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)
    _train(cli, setup, tmp_path / "dc2.onnx", *args)
    assert (tmp_path / "dc.onnx").read_bytes() == (tmp_path / "dc2.onnx").read_bytes()


@pytest.mark.torch
def test_threads_option(cli, setup, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        rep = _train(cli, setup, tmp_path / "t1.onnx", "--iterative", "0.5", "--threads", "1")
        assert torch.get_num_threads() == 1 and rep["final"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    finally:
        torch.set_num_threads(before)


@pytest.mark.torch
def test_layer_sparsity_and_share_errors(cli, setup, tmp_path):
    d, model = setup
    base = ["train", model, "--data", d / "train.npz", "--val", d / "val.npz", "-o", tmp_path / "x.onnx"]
    code, _, err = cli(*base, "--iterative", "0.5", "--layer-sparsity", "nope=0.5")
    assert code == 3 and "nope" in err
    code, _, err = cli(*base, "--iterative", "0.5", "--layer-sparsity", "w1=1.5")
    assert code == 3 and "[0, 1)" in err
    code, _, err = cli(*base, "--iterative", "0.5", "--layer-sparsity", "w1")
    assert code == 2 and "WEIGHT=VALUE" in err
    code, _, err = cli(*base, "--iterative", "0.5", "--share-bits", "w1=4")
    assert code == 3 and "need sharing" in err
    code, _, err = cli(*base, "--lottery", "1", "--layer-sparsity", "w1=0.5")
    assert code == 3 and "iterative" in err
    assert not (tmp_path / "x.onnx").exists()


def test_image_folder_of_class_subfolders_gives_labels(setup, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from edgesqueeze.compress.train_onnx import labelled_arrays

    d, model = setup
    val = np.load(d / "val.npz")
    for i in range(12):
        folder = tmp_path / f"c{val['label'][i]}"
        folder.mkdir(exist_ok=True)
        Image.fromarray((val["input"][i, 0] * 255).astype(np.uint8), "L").save(folder / f"{i}.png")
    x, y = labelled_arrays(str(tmp_path), load_model(model))
    names = sorted({f"c{v}" for v in val["label"][:12]})
    assert x.shape == (12, 1, 8, 8) and sorted(y.tolist()) == sorted(names.index(f"c{v}") for v in val["label"][:12])


@pytest.mark.torch
def test_default_is_one_thread_and_byte_reproducible(cli, setup, tmp_path):
    """Without --threads the run uses one thread whatever torch had, so it writes --threads 1's bytes."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _train(cli, setup, tmp_path / "d1.onnx", "--iterative", "0.5")
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        _train(cli, setup, tmp_path / "d2.onnx", "--iterative", "0.5")
        _train(cli, setup, tmp_path / "t1.onnx", "--iterative", "0.5", "--threads", "1")
        assert (tmp_path / "d1.onnx").read_bytes() == (tmp_path / "d2.onnx").read_bytes() == \
            (tmp_path / "t1.onnx").read_bytes()
        torch.set_num_threads(2)
        _train(cli, setup, tmp_path / "t0.onnx", "--iterative", "0.5", "--threads", "0")
        assert torch.get_num_threads() == 2  # 0: torch's own count left alone
    finally:
        torch.set_num_threads(before)
