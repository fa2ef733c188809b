"""The default calibrator: entropy on TensorRT's [0, max|x|] histogram, and the ``auto`` method."""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesqueeze.data import ArrayReader
from edgesqueeze.model import infer_shapes
from edgesqueeze.quant import calibrate
from edgesqueeze.quant.calibrate import AUTO_CANDIDATES
from edgesqueeze.quant.calibrators import amax_function, entropy_amax, entropy_threshold_bin, pooled_features
from edgesqueeze.quant.methods import DEFAULT_METHOD, METHODS
from edgesqueeze.quant.histogram import TensorHistogram
from test_quant_entropy import reference_threshold_bin

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _heavy_tailed(n=60_000, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.laplace(0, 1, n) * np.where(rng.random(n) < 0.01, 8.0, 1.0)).astype(np.float32)


# ------------------------------------------------------------------------------------------ entropy
@pytest.mark.parametrize("seed", range(3))
def test_entropy_reads_2048_bins_over_exactly_zero_to_max_and_equals_the_published_loop(seed):
    x = _heavy_tailed(seed=seed)
    h = TensorHistogram()
    for part in np.array_split(x, 5):
        h.update(part)
    top = float(np.abs(x).max())
    assert h.range == top and h.hist.shape == (2048,) and h.width == top / 2048
    i = reference_threshold_bin(h.hist)  # the per-candidate loop on the histogram the calibrator reads
    assert entropy_threshold_bin(h.hist) == i and entropy_amax(h) == (i + 0.5) * top / 2048
    # and on numpy's own [0, max|x|] histogram of the raw values the threshold is the same within two bins
    exact, _ = np.histogram(np.abs(x).astype(np.float64), bins=2048, range=(0.0, top))
    assert abs(entropy_amax(h) - (reference_threshold_bin(exact) + 0.5) * h.width) <= 2 * h.width


def test_entropy_thresholds_follow_the_data_and_do_not_collapse_onto_one_value():
    """Scaled copies of one tensor (maxima in one power-of-two octave) get thresholds scaled alike.

    With 2048 bins read from whole groups of fine bins over a rounded-up range, the candidates of every tensor
    whose maximum fell in the same eighth of an octave sat on one grid, and tensors of different ranges shared
    a threshold (three YOLOv8n tensors landed on 1.874).
    """
    x = _heavy_tailed(seed=7)
    amaxes = []
    for c in np.linspace(1.0, 1.9, 10):
        h = TensorHistogram()
        h.update((x * c).astype(np.float32))
        amaxes.append(entropy_amax(h) / c)
    assert max(amaxes) / min(amaxes) < 1.01, amaxes
    thresholds = [a * c for a, c in zip(amaxes, np.linspace(1.0, 1.9, 10))]
    assert len(set(np.round(thresholds, 6))) == len(thresholds)


# ------------------------------------------------------------------------------------------ auto
def _resnet_like():
    """conv-relu-conv + skip, relu, GlobalAveragePool -> Flatten -> Gemm (a classifier head)."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape).astype(np.float32),
                                       name)

    inits = [w("w1", 8, 3, 3, 3), w("w2", 8, 8, 3, 3), w("w3", 8, 8, 3, 3), w("fc", 10, 8),
             numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1] * 4),
             helper.make_node("Add", ["c3", "r1"], ["s"]),
             helper.make_node("Relu", ["s"], ["r3"]),
             helper.make_node("GlobalAveragePool", ["r3"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "resnet_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))


def _reader(n=32, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 1, 3, 16, 16)).astype(np.float32)
    x[:, :, :, :4] *= 6.0  # a bright patch: uneven channel means, a long-tailed pooled feature
    inputs = {"x": {"shape": [1, 3, 16, 16], "dtype": np.dtype(np.float32), "batch": 1}}
    return ArrayReader(inputs, {"x": x[:, 0]}, None, source=f"mem{n}-{seed}", digest=f"{n}-{seed}")


def test_auto_is_the_default_method_and_keeps_the_old_names():
    assert DEFAULT_METHOD == "auto" and set(METHODS) == {"auto", "entropy", "minmax", "percentile", "mse"}
    assert inspect.signature(calibrate).parameters["method"].default == DEFAULT_METHOD
    for m in METHODS:
        amax_function(m)  # every name is accepted


def test_auto_never_clips_the_pooled_input_of_the_classifier():
    model = _resnet_like()
    assert pooled_features(model) == {"gap", "flat"}
    details = {}
    amax = calibrate(model, _reader(), details=details)
    exact = calibrate(model, _reader(), method="minmax")
    assert amax["gap"] == exact["gap"] and amax["flat"] == exact["flat"]
    assert details["auto"]["chosen"] in AUTO_CANDIDATES and set(details["auto"]["sqnr_db"]) == set(AUTO_CANDIDATES)
    chosen = calibrate(model, _reader(), method=details["auto"]["chosen"])
    for name in amax:  # every other tensor has the chosen candidate's range
        if name not in ("gap", "flat"):
            assert amax[name] == chosen[name], name


def test_auto_is_cached_with_its_choice(tmp_path):
    model = _resnet_like()
    first, again = {}, {}
    a = calibrate(model, _reader(), cache_dir=tmp_path, details=first)
    b = calibrate(model, _reader(), cache_dir=tmp_path, details=again)
    assert a == b and again["cached"] and again["auto"] == first["auto"]


# ------------------------------------------------------------------------------------------ a trained detector
def test_auto_on_yolov8n_is_as_good_as_onnxruntime_s_best():
    """Photographs, 320x320. onnxruntime's four methods agree within 0.1 dB on this model
    (benchmarks/bench_calib_real.py), so MinMax, its cheapest, stands for its best here."""
    import onnx
    import realnets

    path = realnets.realnet("yolov8n_320")
    pytest.importorskip("sklearn")
    pytest.importorskip("PIL")
    sys.path.insert(0, str(BENCH))
    import bench_calib_real as br

    model = onnx.load(str(path))
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim, [1, 3, 320, 320]):
        d.Clear()
        d.dim_value = v
    fixed = Path(realnets.cache_dir()) / "yolov8n_320_static.onnx"
    onnx.save(model, str(fixed))
    calib, held = br.photo_crops(8, 1), br.photo_crops(4, 2)
    ours = {r["method"].split()[0]: r["sqnr_db"] for r in br.ours(fixed, "images", calib, held, ["auto"])}
    theirs = [r["sqnr_db"] for r in br.onnxruntime_rows(fixed, "images", calib, held, ["MinMax"])]
    assert ours["auto"] >= max(theirs) - 0.5, (ours, theirs)
