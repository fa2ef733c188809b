"""The fused depthwise-separable CUDA kernel's arithmetic (compiled with g++ through the host harness, every block
and thread index) against onnxruntime running the DepthwiseSeparableConv node's ONNX local function."""
from __future__ import annotations

import numpy as np
import pytest

from edgesqueeze.ortutil import run_model
from edgesqueeze.plugins import emulate
from custom_ops import make_dwsep_model

from edgesqueeze.plugins.ops import ACTIVATIONS

# (name, N, C, H, W, M, K, strides, pads, dilations): odd sizes, C not a multiple of 4/8 and crossing the 32-channel
# chunk, M crossing the 32-channel output tile, pixel counts not a multiple of the 32-pixel tile.
CASES = [
    ("k3_s1_same", 1, 13, 7, 9, 37, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    ("k3_s2", 2, 6, 9, 7, 5, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    ("k5_s1_dil2", 1, 37, 11, 10, 19, 5, (1, 1), (4, 4, 4, 4), (2, 2)),
    ("k5_s2_asym", 1, 3, 12, 13, 70, 5, (2, 1), (2, 1, 0, 2), (1, 2)),
    ("hw1", 3, 34, 1, 1, 7, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    ("k3_valid_c1", 1, 1, 6, 5, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1)),
]

# parameters per activation: (alpha, beta) for the depthwise and pointwise stage
PARAMS = {"none": (0.0, 0.0), "relu": (0.0, 0.0), "clip": (0.0, 6.0), "leaky_relu": (0.1, 0.0),
          "sigmoid": (0.0, 0.0), "hard_sigmoid": (0.2, 0.5), "hard_swish": (0.0, 0.0)}


def _weights(case, seed):
    _, n, c, h, w, m, k, *_ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    w_dw = rng.standard_normal((c, 1, k, k)) / k
    b_dw = rng.standard_normal(c) * 0.5
    w_pw = rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)
    b_pw = rng.standard_normal(m) * 0.5
    return x, w_dw, b_dw, w_pw, b_pw


def _rel_err(ref, act):
    ref = np.asarray(ref, dtype=np.float64)
    act = np.asarray(act, dtype=np.float64)
    assert ref.shape == act.shape
    return float(np.abs(ref - act).max() / max(np.abs(ref).max(), 1e-12))


def _run(case, dtype, dw_act, pw_act, tiled, harness_dir, seed=0):
    _, n, c, h, w, m, k, strides, pads, dilations = case
    arrays = [a.astype(dtype) for a in _weights(case, seed)]
    x, w_dw, b_dw, w_pw, b_pw = arrays
    dwa, dwb = PARAMS[dw_act]
    pwa, pwb = PARAMS[pw_act]
    attrs = dict(strides=strides, pads=pads, dilations=dilations, dw_activation=dw_act, dw_alpha=dwa, dw_beta=dwb,
                 pw_activation=pw_act, pw_alpha=pwa, pw_beta=pwb)
    model = make_dwsep_model(x.shape, w_dw, b_dw, w_pw, b_pw, dtype=dtype, **attrs)
    ref = run_model(model, {"x": x})["y"]
    got = emulate.emulate_dwsep(x, w_dw, b_dw, w_pw, b_pw, tiled=tiled, cache_dir=harness_dir, **attrs)
    assert got.dtype == np.dtype(dtype)
    return ref, got


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "reference"])
def test_geometry_fp32(case, tiled, harness_dir):
    ref, got = _run(case, np.float32, "relu", "none", tiled, harness_dir)
    assert _rel_err(ref, got) <= 1e-5


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_geometry_fp16(case, harness_dir):
    ref, got = _run(case, np.float16, "clip", "none", True, harness_dir)
    assert _rel_err(ref, got) <= 1e-2


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float16, 1e-2)], ids=["fp32", "fp16"])
def test_every_activation(act, dtype, tol, harness_dir):
    case = CASES[0]
    for dw_act, pw_act in ((act, "none"), ("none", act)):  # each activation at each stage
        ref, got = _run(case, dtype, dw_act, pw_act, True, harness_dir, seed=3)
        assert _rel_err(ref, got) <= tol, (dw_act, pw_act)


def test_tiled_matches_reference_kernel(harness_dir):
    """The fast tiled kernel and the one-thread-per-output kernel agree (the GPU tests check the same on a GPU)."""
    case = CASES[2]
    _, a = _run(case, np.float32, "hard_swish", "leaky_relu", True, harness_dir)
    _, b = _run(case, np.float32, "hard_swish", "leaky_relu", False, harness_dir)
    assert _rel_err(b, a) <= 1e-6


def test_wrong_weights_are_detected(harness_dir):
    """The comparison can fail: a perturbed pointwise bias moves the result far beyond the tolerance."""
    case = CASES[1]
    x, w_dw, b_dw, w_pw, b_pw = (a.astype(np.float32) for a in _weights(case, 0))
    model = make_dwsep_model(x.shape, w_dw, b_dw, w_pw, b_pw, strides=case[7], pads=case[8])
    ref = run_model(model, {"x": x})["y"]
    got = emulate.emulate_dwsep(x, w_dw, b_dw, w_pw, b_pw + 1e-2, strides=case[7], pads=case[8],
                                cache_dir=harness_dir)
    assert _rel_err(ref, got) > 1e-4


def test_half_conversion_is_round_to_nearest_even(harness_dir):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(20000) * 100, rng.standard_normal(2000) * 1e-6,
                             [65504.0, 65519.0, 65520.0, 1e6, -0.0, np.inf, -np.inf, 6.1e-5, 5.96e-8, 2.98e-8,
                              1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11]]).astype(np.float32)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(emulate.round_half(values, cache_dir=harness_dir), want)
