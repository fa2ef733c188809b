"""The 2:4 and CSR sparse CUDA kernels' arithmetic (g++ host harness, every thread index) against onnxruntime
running the SparseConv node's ONNX local function (which decompresses the weights with standard ops)."""
from __future__ import annotations

import numpy as np
import pytest

from edgesqueeze.ortutil import run_model
from edgesqueeze.plugins import emulate
from custom_ops import make_sparse_conv_model

from edgesqueeze.plugins.ops import ACTIVATIONS
from edgesqueeze.plugins.sparse import sparse_conv_inputs

# (name, N, C, H, W, M, K, strides, pads, dilations)
CASES = [
    ("gemm_1x1_hw1", 3, 12, 1, 1, 10, 1, (1, 1), (0, 0, 0, 0), (1, 1)),   # a fully-connected layer
    ("pw_1x1", 1, 20, 5, 7, 9, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    ("k3_s2", 2, 8, 9, 7, 5, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    ("k5_dil2", 1, 4, 11, 10, 6, 5, (1, 1), (4, 3, 4, 2), (2, 2)),
    ("k3_s2x1_odd_m", 1, 36, 6, 5, 33, 3, (2, 1), (0, 1, 1, 0), (1, 2)),
    # the tiled kernels' edges: 286 pixels (2 tiles of 256), M = 70 (3 groups of 32 rows), R = 108 (4 chunks of 32)
    ("tiles_k3", 2, 12, 13, 11, 70, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
]
PARAMS = {"none": (0.0, 0.0), "relu": (0.0, 0.0), "clip": (-0.5, 0.5), "leaky_relu": (0.2, 0.0),
          "sigmoid": (0.0, 0.0), "hard_sigmoid": (0.2, 0.5), "hard_swish": (0.0, 0.0)}


def _sparse_weight(m, c, k, fmt, rng):
    w = rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)
    if fmt == "2:4":  # keep the 2 largest of every 4 input channels at each tap; one group entirely zero
        g = w.transpose(0, 2, 3, 1).reshape(m, k, k, c // 4, 4)
        keep = np.argsort(-np.abs(g), axis=-1)[..., :2]
        mask = np.zeros(g.shape, bool)
        np.put_along_axis(mask, keep, True, axis=-1)
        mask[0, 0, 0, 0] = False
        w = np.where(mask, g, 0).reshape(m, k, k, c).transpose(0, 3, 1, 2)
    else:  # ~85 % zeros, one all-zero output channel
        w[rng.random(w.shape) < 0.85] = 0
        w[m // 2] = 0
    return w


def _rel_err(ref, act):
    ref, act = np.asarray(ref, np.float64), np.asarray(act, np.float64)
    assert ref.shape == act.shape
    return float(np.abs(ref - act).max() / max(np.abs(ref).max(), 1e-12))


def _run(case, fmt, dtype, act, harness_dir, seed=0, tiled=True):
    _, n, c, h, w, m, k, strides, pads, dilations = case
    rng = np.random.default_rng(seed)
    weight = _sparse_weight(m, c, k, fmt, rng).astype(dtype)
    bias = rng.standard_normal(m).astype(dtype) * 0.5
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    alpha, beta = PARAMS[act]
    attrs = dict(strides=strides, pads=pads, dilations=dilations, activation=act, alpha=alpha, beta=beta)
    model = make_sparse_conv_model(x.shape, weight, bias, sparse_format=fmt, dtype=dtype, **attrs)
    ref = run_model(model, {"x": x})["y"]
    got = emulate.emulate_sparse_conv(x, sparse_conv_inputs(weight, fmt, dtype), bias, sparse_format=fmt,
                                      kernel_shape=(k, k), cache_dir=harness_dir, tiled=tiled, **attrs)
    assert got.dtype == np.dtype(dtype)
    return ref, got


@pytest.mark.parametrize("fmt", ["2:4", "csr"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float16, 1e-2)], ids=["fp32", "fp16"])
def test_geometry(case, fmt, dtype, tol, harness_dir):
    ref, got = _run(case, fmt, dtype, "relu", harness_dir)
    assert _rel_err(ref, got) <= tol


@pytest.mark.parametrize("fmt", ["2:4", "csr"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reference_kernel(case, fmt, harness_dir):
    """The one-thread-per-output kernels (kSparseReference) stay correct: the tiled ones are measured against them."""
    ref, got = _run(case, fmt, np.float32, "relu", harness_dir, tiled=False)
    assert _rel_err(ref, got) <= 1e-5


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("fmt", ["2:4", "csr"])
def test_every_activation(act, fmt, harness_dir):
    ref, got = _run(CASES[2], fmt, np.float32, act, harness_dir, seed=5)
    assert _rel_err(ref, got) <= 1e-5
    ref, got = _run(CASES[1], fmt, np.float16, act, harness_dir, seed=6)
    assert _rel_err(ref, got) <= 1e-2


def _fp32_inputs(case, fmt, seed):
    """FP32 ``(weight, zero bias, x, the kernel's sparse arrays)`` for one of CASES."""
    _, n, c, h, w, m, k, *_ = case
    rng = np.random.default_rng(seed)
    weight = _sparse_weight(m, c, k, fmt, rng).astype(np.float32)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    return weight, np.zeros(m, np.float32), x, sparse_conv_inputs(weight, fmt)


def test_corrupt_metadata_is_detected(harness_dir):
    """The comparison can fail: flipping one 2-bit position moves a weight to another input channel."""
    _, bias, x, arrays = _fp32_inputs(CASES[1], "2:4", seed=1)
    good = emulate.emulate_sparse_conv(x, arrays, bias, sparse_format="2:4", kernel_shape=(1, 1),
                                       cache_dir=harness_dir)
    arrays["metadata"] = arrays["metadata"].copy()
    assert arrays["values"][1, 0] != 0
    arrays["metadata"][1, 0] ^= 0b0001  # first kept weight of row 1, group 0: position p → p ^ 1
    bad = emulate.emulate_sparse_conv(x, arrays, bias, sparse_format="2:4", kernel_shape=(1, 1),
                                      cache_dir=harness_dir)
    assert _rel_err(good, bad) > 1e-3


def test_csr_rows_must_be_ascending(harness_dir):
    """The tiled CSR kernel walks each row's columns in order (compress_csr writes them so); a row whose columns
    are out of order loses the weights behind its cursor (never reading outside the shared tile), which the
    comparison sees (the reference kernel does not care)."""
    _, n, c, h, w, m, k, strides, pads, dilations = CASES[-1]
    weight, bias, x, arrays = _fp32_inputs(CASES[-1], "csr", seed=2)
    lo, hi = int(arrays["row_ptr"][0]), int(arrays["row_ptr"][1])
    assert hi - lo >= 2 and arrays["col"][hi - 1] >= 32  # row 0 reaches past the first chunk
    arrays["col"], arrays["values"] = arrays["col"].copy(), arrays["values"].copy()
    arrays["col"][lo:hi], arrays["values"][lo:hi] = arrays["col"][lo:hi][::-1], arrays["values"][lo:hi][::-1]
    kw = dict(sparse_format="csr", kernel_shape=(k, k), strides=strides, pads=pads, dilations=dilations,
              cache_dir=harness_dir)
    ref = emulate.emulate_sparse_conv(x, arrays, bias, tiled=False, **kw)
    assert _rel_err(ref, emulate.emulate_sparse_conv(x, sparse_conv_inputs(weight, "csr"), bias, **kw)) <= 1e-5
    got = emulate.emulate_sparse_conv(x, arrays, bias, **kw)
    assert np.isfinite(got).all() and _rel_err(ref, got) > 1e-3
