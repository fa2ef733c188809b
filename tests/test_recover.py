"""Accuracy recovery by distillation (``edgesqueeze recover``) and the channel-pruning no-op guard."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.compress import prune_channels
from edgesqueeze.errors import UnsupportedError
from edgesqueeze.model import load_model
from edgesqueeze.ortutil import make_session

pytest.importorskip("torch")
DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


def _top1(path, val):
    s = make_session(load_model(path))
    name = s.get_inputs()[0].name
    out = np.concatenate([s.run(None, {name: val["input"][i:i + 1]})[0] for i in range(len(val["label"]))])
    return float((out.argmax(1) == val["label"]).mean())


def _zeros(path):
    return {t.name: numpy_helper.to_array(t) == 0 for t in load_model(path).graph.initializer
            if len(t.dims) > 1}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    out = d / "pruned.onnx"
    subprocess.run([sys.executable, "-m", "edgesqueeze", "compress", str(DIGITS / "digits_cnn.onnx"), "--prune",
                    "0.9", "-o", str(out)], check=True, capture_output=True)
    return out


def _recover(pruned, out):
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "recover", str(pruned), "--teacher",
                        str(DIGITS / "digits_cnn.onnx"), "--data", str(DIGITS / "calib.npz"), "--epochs", "12",
                        "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_recover_raises_top1_keeps_mask_and_is_reproducible(pruned, tmp_path):
    val = np.load(DIGITS / "val.npz")
    before = _top1(pruned, val)
    a = _recover(pruned, tmp_path / "a.onnx")
    after = _top1(a, val)
    assert before < 0.3 and after > before + 0.4, (before, after)
    zb, za = _zeros(pruned), _zeros(a)
    assert sum(int(m.sum()) for m in zb.values()) > 0
    # every pruned weight stays zero (the exporter may rename or transpose weights: count them)
    assert sum(int(m.sum()) for m in za.values()) >= sum(int(m.sum()) for m in zb.values())
    b = _recover(pruned, tmp_path / "b.onnx")
    assert a.read_bytes() == b.read_bytes()


def test_recover_distil_names_a_missing_output(pruned, tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "recover", str(pruned), "--teacher",
                        str(DIGITS / "digits_cnn.onnx"), "--data", str(DIGITS / "calib.npz"), "--distil", "nope",
                        "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert r.returncode == 3 and "no graph output 'nope'" in r.stderr and "logits" in r.stderr


def test_recover_refuses_unsupported_op(tmp_path):
    from edgesqueeze.compress.onnx_torch import onnx_module

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], name="hm0")], "g", [x], [y]))
    with pytest.raises(UnsupportedError, match="Hardmax"):
        onnx_module(m)


def test_channels_refuses_when_every_group_is_frozen():
    rng = np.random.RandomState(0)
    w1, w2 = rng.randn(8, 3, 3, 3).astype(np.float32), rng.randn(8, 8, 3, 3).astype(np.float32)
    bn = [np.ones(8, np.float32), np.zeros(8, np.float32), np.zeros(8, np.float32), np.ones(8, np.float32)]
    inits = [numpy_helper.from_array(a, n) for a, n in zip([w1, w2] + bn, ["w1", "w2", "s", "b", "m", "v"])]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"]),  # BN params shared
             helper.make_node("Conv", ["n1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c2", "s", "b", "m", "v"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    with pytest.raises(UnsupportedError, match="BatchNormalization"):
        prune_channels(m, 0.3)


def _conv_bn_model(private_bn=True):
    rng = np.random.RandomState(1)
    w1, w2 = rng.randn(8, 3, 3, 3).astype(np.float32), rng.randn(4, 8, 3, 3).astype(np.float32)
    bn = [rng.rand(8).astype(np.float32) + 0.5, rng.randn(8).astype(np.float32),
          rng.randn(8).astype(np.float32), rng.rand(8).astype(np.float32) + 0.5]
    inits = [numpy_helper.from_array(a, n) for a, n in zip([w1, w2] + bn, ["w1", "w2", "s", "b", "m", "v"])]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"]),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_channels_prunes_through_an_unfolded_batchnorm(tmp_path):
    """A training-preserving export (BN not folded): --channels slices the BN with its conv, never a no-op."""
    src = tmp_path / "bn.onnx"
    onnx.save(_conv_bn_model(), src)
    out = tmp_path / "bn.c50.onnx"
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "compress", str(src), "--channels", "0.5", "-o",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    inits = {t.name: numpy_helper.to_array(t) for t in load_model(out).graph.initializer}
    assert inits["w1"].shape[0] == 4 and inits["s"].shape == (4,) and inits["w2"].shape[1] == 4
    y = make_session(load_model(out)).run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})[0]
    assert y.shape == (1, 4, 8, 8)


def test_recover_image_folder_hint_regressor_and_codebooks(tmp_path):
    """--data as an image folder; a FitNets hint across pruned widths (1x1 regressor); shared weights keep
    their clusters and zeros stay zero; the dynamic batch survives the export."""
    from PIL import Image
    model = _conv_bn_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    teacher, student = tmp_path / "t.onnx", tmp_path / "s.onnx"
    onnx.save(model, teacher)
    small, _ = prune_channels(model, 0.5)
    w2 = next(t for t in small.graph.initializer if t.name == "w2")
    arr = numpy_helper.to_array(w2)
    shared = np.where(np.abs(arr) < 0.5, 0.0, np.sign(arr) * 1.25).astype(np.float32)  # a 3-value codebook
    w2.CopyFrom(numpy_helper.from_array(shared, "w2"))
    onnx.save(small, student)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    out = tmp_path / "r.onnx"
    r = subprocess.run([sys.executable, "-m", "edgesqueeze", "recover", str(student), "--teacher", str(teacher),
                        "--data", str(folder), "--hint", "r1:r1", "--epochs", "3", "--batch-size", "4", "--json",
                        "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json
    rep = json.loads(r.stdout)
    assert rep["shared_weights"] >= 1 and rep["epochs_run"] == 3 and "12 images" in rep["data"]
    assert "batches of" not in rep["data"]   # read one by one, trained in --batch-size batches: not said
    got = make_session(load_model(out)).run(None, {"x": np.ones((3, 3, 8, 8), np.float32)})[0]
    assert got.shape == (3, 4, 8, 8)
    weights = [numpy_helper.to_array(t) for t in load_model(out).graph.initializer if len(t.dims) == 4]
    w2_out = next(w for w in weights if w.shape[1] == 4)   # the second conv: 4 inputs left
    assert len(np.unique(w2_out)) <= 3 and int((w2_out == 0).sum()) == int((shared == 0).sum())


@pytest.mark.slow
def test_recover_ppocr_cls_end_to_end(tmp_path):
    """optimize -> compress --channels 0.5 -> recover on rendered text lines: the Paddle graph (computed-shape
    Reshape, Softmax wrapped by the opset conversion) trains, exports with its dynamic batch and runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import realdata
    from realnets import realnet

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "edgesqueeze", *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    opt, small, out = tmp_path / "cls.opt.onnx", tmp_path / "cls.c50.onnx", tmp_path / "cls.rec.onnx"
    cli("optimize", realnet("ppocr_cls"), "--input", "x:1x3x48x192", "-o", opt)
    np.savez(tmp_path / "lines.npz", x=realdata.net_inputs("ppocr_cls", 96, seed=5, shape=(1, 3, 48, 192)))
    cli("compress", opt, "--channels", "0.5", "--calib", tmp_path / "lines.npz", "-o", small)
    cli("recover", small, "--teacher", opt, "--data", tmp_path / "lines.npz", "--epochs", "1", "-o", out)
    x = realdata.net_inputs("ppocr_cls", 64, seed=9, shape=(1, 3, 48, 192))
    y = make_session(load_model(out)).run(None, {"x": x[:3]})[0]
    assert y.shape == (3, 2) and np.allclose(y.sum(1), 1, atol=1e-5)
    # data-aware pruning starts far above the one-class collapse of L1 pruning (50 %)
    labels = np.arange(len(x)) % 2
    top1 = {p.name: float((np.concatenate([make_session(load_model(p)).run(None, {"x": x[i:i + 1]})[0]
                                           for i in range(len(x))]).argmax(1) == labels).mean()) for p in (opt, small)}
    assert top1[opt.name] > 0.9 and top1[small.name] > 0.65, top1


def test_compress_recover_shortcut(tmp_path):
    """compress --channels 0.5 --recover DATA distils the original into the compressed copy before writing it."""
    import json
    src = tmp_path / "bn.onnx"
    onnx.save(_conv_bn_model(), src)
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    outs = {}
    for tag, extra in (("plain", []), ("rec", ["--recover", str(tmp_path / "d.npz")])):
        out = tmp_path / f"{tag}.onnx"
        r = subprocess.run([sys.executable, "-m", "edgesqueeze", "compress", str(src), "--channels", "0.5", *extra,
                            "--json", "-o", str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs[tag] = (out, json.loads(r.stdout))
    assert "recover" in outs["rec"][1] and outs["rec"][1]["recover"]["epochs_run"] >= 1
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = make_session(_conv_bn_model()).run(None, {"x": x})[0]
    err = {t: float(np.abs(make_session(load_model(p)).run(None, {"x": x})[0] - ref).mean()) for t, (p, _) in outs.items()}
    assert outs["rec"][0].read_bytes() != outs["plain"][0].read_bytes()
    assert np.isfinite(err["rec"])
    # the recovered copy keeps the original's opset (13), not the exporter's default
    from edgesqueeze.model import opset_version
    assert opset_version(load_model(outs["rec"][0])) == 13
    rec = outs["rec"][1]["recover"]
    assert len(rec["lr_probe"]["losses"]) == 4
    assert rec["lr"] == rec["lr_probe"]["lr"]


def test_recover_lr_option_is_checked(pruned, tmp_path):
    for bad in ("0", "-1e-3", "fast"):
        r = subprocess.run([sys.executable, "-m", "edgesqueeze", "recover", str(pruned), "--teacher",
                            str(DIGITS / "digits_cnn.onnx"), "--data", str(DIGITS / "calib.npz"), "--lr", bad,
                            "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True)
        assert r.returncode == 2 and "--lr" in r.stderr and "auto" in r.stderr, (bad, r.stderr)
    assert not (tmp_path / "x.onnx").exists()


def test_lr_probe_picks_the_rate_that_trains(pruned):
    """90 %-pruned digits CNN from 9 % top-1: the largest rate wins the range test (measured: 1e-3 recovers only
    to 21 % in 12 epochs, 1e-2 to 88 %)."""
    from edgesqueeze.compress.recover import LR_CANDIDATES, RecoverOptions, recover
    calib = np.load(DIGITS / "calib.npz")
    x = calib[[k for k in calib.files if k != "label"][0]][:64]
    rep = recover(load_model(pruned), load_model(DIGITS / "digits_cnn.onnx"), x, pruned.parent / "probe.onnx",
                  options=RecoverOptions(epochs=1))
    probe = rep["lr_probe"]
    assert set(probe["losses"]) == set(LR_CANDIDATES) and probe["lr"] == max(LR_CANDIDATES) == rep["lr"]
    assert probe["losses"][1e-2] < probe["losses"][3e-4]
