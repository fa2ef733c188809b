"""The fast dwsep kernel's INT8 path (dp4a arithmetic through the g++ host harness) against a fake-quantised reference:
onnxruntime computes the depthwise stage (the node's ONNX function with an identity pointwise weight) from the
dequantised input, numpy applies the kernel's documented quantisation (per pixel and 32-channel chunk for the
intermediate, per output channel for the pointwise weights, per tensor for Y); also the fast kernel's chunked fallback."""
from __future__ import annotations

import numpy as np
import pytest

from custom_ops import make_dwsep_model
from edgesqueeze.ortutil import run_model
from edgesqueeze.plugins import emulate
from test_kernels_dwsep import CASES, _rel_err, _run

ACT = {"relu": lambda v: np.maximum(v, 0), "none": lambda v: v}


def _quant(v, scale, lo=-127, hi=127):
    return np.clip(np.rint(v / scale), lo, hi)


def _reference(x_q, x_scale, y_scale, w_dw, b_dw, w_pw, b_pw, attrs, pw_act):
    c = x_q.shape[1]
    eye = np.eye(c, dtype=np.float32).reshape(c, c, 1, 1)
    x = (x_q.astype(np.float32) * np.float32(x_scale)).astype(np.float32)
    model = make_dwsep_model(x.shape, w_dw, b_dw, eye, np.zeros(c, np.float32), **attrs)
    d = run_model(model, {"x": x})["y"].astype(np.float32)                 # [N, C, OH, OW]: the depthwise stage
    n, _, oh, ow = d.shape
    cpad = -(-c // 32) * 32
    dp = np.zeros((n, cpad, oh, ow), np.float32)
    dp[:, :c] = d
    chunks = dp.reshape(n, cpad // 32, 32, oh, ow)
    amax = np.abs(chunks).max(axis=2, keepdims=True)
    sd = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    dq = _quant(chunks, sd)
    w = w_pw.reshape(w_pw.shape[0], c)
    wmax = np.abs(w).max(axis=1, keepdims=True)
    sw = np.where(wmax > 0, wmax / np.float32(127), np.float32(1)).astype(np.float32)
    wq = np.zeros((w.shape[0], cpad), np.float32)
    wq[:, :c] = _quant(w, sw)
    wq = wq.reshape(w.shape[0], cpad // 32, 32)
    acc = np.einsum("mgk,ngkhw->nmghw", wq, dq) * sd[:, None, :, 0]       # int32 per chunk, scaled per chunk
    y = ACT[pw_act](acc.sum(axis=2) * sw.reshape(1, -1, 1, 1) + b_pw.reshape(1, -1, 1, 1))
    return _quant(y, y_scale, -128, 127).astype(np.int8)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("pw_act", ["none", "relu"])
def test_int8_matches_fake_quantised_reference(case, pw_act, harness_dir):
    _, n, c, h, w, m, k, strides, pads, dilations = case
    rng = np.random.default_rng(7)
    x_scale, y_scale = 0.02, 0.05
    x_q = rng.integers(-127, 128, (n, c, h, w)).astype(np.int8)
    w_dw = (rng.standard_normal((c, 1, k, k)) / k).astype(np.float32)
    b_dw = (rng.standard_normal(c) * 0.5).astype(np.float32)
    w_pw = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    b_pw = (rng.standard_normal(m) * 0.5).astype(np.float32)
    attrs = dict(strides=strides, pads=pads, dilations=dilations, dw_activation="relu")
    ref = _reference(x_q, x_scale, y_scale, w_dw, b_dw, w_pw, b_pw, attrs, pw_act)
    got = emulate.emulate_dwsep_int8(x_q, x_scale, y_scale, w_dw, b_dw, w_pw, b_pw, pw_activation=pw_act,
                                     cache_dir=harness_dir, **attrs)
    assert got.dtype == np.int8 and got.shape == ref.shape
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    # a rounding tie resolved differently (summation order of the depthwise stage) moves an output by one step
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (diff.max(), (diff > 0).mean())
    assert np.abs(ref.astype(np.int32)).max() > 0 and (np.abs(ref) < 127).any()   # neither all zero nor all saturated


def test_int8_wrong_scale_is_detected(harness_dir):
    _, n, c, h, w, m, k, strides, pads, dilations = CASES[0]
    rng = np.random.default_rng(8)
    x_q = rng.integers(-127, 128, (n, c, h, w)).astype(np.int8)
    w_dw = rng.standard_normal((c, 1, k, k)).astype(np.float32) / k
    w_pw = rng.standard_normal((m, c, 1, 1)).astype(np.float32) / np.sqrt(c)
    b_dw, b_pw = np.zeros(c, np.float32), np.zeros(m, np.float32)
    attrs = dict(strides=strides, pads=pads, dilations=dilations)
    ref = _reference(x_q, 0.02, 0.05, w_dw, b_dw, w_pw, b_pw, attrs, "none")
    got = emulate.emulate_dwsep_int8(x_q, 0.025, 0.05, w_dw, b_dw, w_pw, b_pw, cache_dir=harness_dir, **attrs)
    assert np.abs(got.astype(np.int32) - ref.astype(np.int32)).max() > 1


@pytest.mark.parametrize("case", CASES[:3], ids=[c[0] for c in CASES[:3]])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float16, 1e-2)], ids=["fp32", "fp16"])
def test_chunked_fallback_kernel(case, dtype, tol, harness_dir):
    """The kernel the launcher falls back to when the depthwise tile exceeds the device's shared memory."""
    ref, got = _run(case, dtype, "relu", "none", "chunked", harness_dir)
    assert _rel_err(ref, got) <= tol
