"""Comparing two models' outputs in a way that tells float rounding from breakage.

A rewrite that is exact in real arithmetic still changes fp32 rounding, and on a deep network the change can
exceed a fixed tolerance (a 60-layer detector with a Sigmoid head whose outputs are all near 0). So the check
measures the rounding noise of each output on the ORIGINAL model (onnxruntime with graph optimizations off vs
fully on: onnxruntime's own fusions are exact rewrites too) and accepts the rewritten model when its error is
within a small multiple of that noise floor, of ``rtol``, or of an absolute floor for near-zero outputs.

Errors are ``max|a - r| / scale`` per output, with ``scale = max|r|`` (1 at least for the outputs of bounded
heads: Sigmoid, Softmax, HardSigmoid, Tanh, whose natural unit is 1), never elementwise relative errors.
Besides the graph outputs, the logits in front of a final Softmax/Sigmoid are compared (a saturated head hides
errors). Sits next to ``ortutil`` in the layer order (it runs sessions through it).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from onnx import ModelProto

from .errors import UnsupportedError, VerificationError
from .ortutil import make_session, run_model

#: the rewritten model may differ from the original by this multiple of the measured noise floor
NOISE_FACTOR = 4.0
#: absolute floor, in units of the output dtype's machine epsilon (times the output's unit)
ATOL_ULPS = 8.0
#: ops whose outputs live in [0, 1] or [-1, 1]: their error is measured against a scale of at least 1
BOUNDED_OPS = ("Sigmoid", "Softmax", "HardSigmoid", "Tanh")
_HEADS = ("Softmax", "LogSoftmax", "Sigmoid")
_SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose")
_PASS_THROUGH = _SHAPE_ONLY + ("Concat",)


def _reaching_outputs(model: ModelProto) -> set:
    """Tensors that become (part of) a graph output through shape-only ops and Concat."""
    reaches = {o.name for o in model.graph.output}
    for n in reversed(model.graph.node):
        if n.op_type in _PASS_THROUGH and n.output and n.output[0] in reaches:
            reaches.update(i for i in (n.input if n.op_type == "Concat" else n.input[:1]) if i)
    return reaches


def logit_tensors(model: ModelProto) -> List[str]:
    """Inputs of the Softmax/LogSoftmax/Sigmoid nodes whose outputs reach a graph output: compared as well,
    because a saturated head hides errors (rewrites keep the names of the tensors that remain)."""
    reaches = _reaching_outputs(model)
    outputs = {o.name for o in model.graph.output}
    seen = []
    for n in model.graph.node:
        if n.op_type in _HEADS and n.output[0] in reaches and n.input[0] not in outputs and n.input[0] not in seen:
            seen.append(n.input[0])
    return seen


def unit_scales(model: ModelProto) -> Dict[str, float]:
    """``{output name: 1.0}`` for the graph outputs that a bounded op (:data:`BOUNDED_OPS`) produces."""
    outputs = {o.name for o in model.graph.output}
    bounded = {n.output[0] for n in model.graph.node if n.op_type in BOUNDED_OPS and n.output}
    for n in model.graph.node:  # a bounded value stays bounded through shape-only ops
        if n.op_type in _SHAPE_ONLY and n.input and n.input[0] in bounded:
            bounded.add(n.output[0])
    return {name: 1.0 for name in outputs & bounded}


def output_errors(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                  units: Optional[Mapping[str, float]] = None) -> Dict[str, dict]:
    """Per-output error of ``actual`` against ``reference``.

    Returns ``{name: {"max_abs", "scale", "max_rel", "finite_match", "dtype"}}`` (``max_rel = max_abs / scale``,
    ``scale = max(max|r|, units[name])``), or ``{"missing": True}`` / ``{"shape_mismatch": [...]}``.
    """
    units = units or {}
    stats = {}
    for name, ref in reference.items():
        if name not in actual:
            stats[name] = {"missing": True}
            continue
        r, a = np.asarray(ref), np.asarray(actual[name])
        if r.shape != a.shape:
            stats[name] = {"shape_mismatch": [list(r.shape), list(a.shape)]}
            continue
        r64, a64 = r.astype(np.float64), a.astype(np.float64)
        finite = np.isfinite(r64) & np.isfinite(a64)
        match = bool(np.array_equal(np.isfinite(r64), np.isfinite(a64)))
        diff = np.abs(a64 - r64)[finite]
        scale = max(float(np.max(np.abs(r64[finite]))) if diff.size else 0.0, units.get(name, 0.0))
        max_abs = float(np.max(diff)) if diff.size else 0.0
        stats[name] = {"max_abs": max_abs, "scale": scale, "finite_match": match,
                       "max_rel": max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")),
                       "dtype": str(r.dtype)}
    return stats


def worst_errors(per_feed: Sequence[Dict[str, dict]]) -> Dict[str, dict]:
    """The worst (largest ``max_abs``) statistics of each output over several feeds; failures win."""
    worst: Dict[str, dict] = {}
    for stats in per_feed:
        for name, s in stats.items():
            prev = worst.get(name)
            if prev is None or "max_abs" not in s or ("max_abs" in prev and s["max_abs"] > prev["max_abs"]):
                worst[name] = s
    return worst


def noise_floor(model: ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                reference: Sequence[Mapping[str, np.ndarray]], extra_outputs: Sequence[str] = ()) -> Dict[str, float]:
    """The rounding noise of each output of ``model``: the largest ``|r_opt - r|`` over ``feeds`` between
    ``reference`` (the runs with graph optimizations off) and a run at ORT_ENABLE_ALL.

    Returns ``{}`` when onnxruntime cannot run the optimized session (then only ``rtol`` and the absolute floor
    apply).
    """
    try:
        sess = make_session(model, optimize=True, extra_outputs=extra_outputs)
        runs = [run_model(model, f, session=sess) for f in feeds]
    except UnsupportedError:
        return {}
    noise: Dict[str, float] = {}
    for r, o in zip(reference, runs):
        for name, s in output_errors(r, o).items():
            if "max_abs" in s and np.isfinite(s["max_abs"]):
                noise[name] = max(noise.get(name, 0.0), s["max_abs"])
    return noise


def tolerance(stats: dict, noise: float, rtol: float, noise_factor: float = NOISE_FACTOR) -> float:
    """The largest acceptable ``max_abs`` of one output: ``max(rtol * scale, noise_factor * noise, atol)`` with
    ``atol = ATOL_ULPS * eps(dtype)`` (near-zero outputs; 0 for integer outputs)."""
    dtype = np.dtype(stats["dtype"])
    eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else 0.0
    return max(rtol * stats["scale"], noise_factor * noise, ATOL_ULPS * eps)


def judge(errors: Mapping[str, dict], noise: Mapping[str, float], rtol: float, what: str = "outputs",
          noise_factor: float = NOISE_FACTOR) -> Dict[str, dict]:
    """Check every output of ``errors`` (from :func:`output_errors`) against its :func:`tolerance`
    (``noise``: the absolute noise floor per output, from :func:`noise_floor`; ``noise_factor=0``: ``rtol`` and
    the absolute floor only).

    Returns the statistics with ``noise`` (absolute), ``noise_rel`` and ``tolerance_rel`` added.

    Raises:
        VerificationError: an output is missing, has another shape, non-finite values where the reference has
            none (or the reverse), or an error above its tolerance; the message gives the error, the tolerance
            and the measured noise floor.
    """
    out, failed = {}, []
    for name, s in errors.items():
        if s.get("missing") or s.get("shape_mismatch") or not s.get("finite_match", True):
            detail = ("missing" if s.get("missing") else f"shapes {s['shape_mismatch']}" if s.get("shape_mismatch")
                      else "non-finite values differ")
            raise VerificationError(f"{what} disagree on output '{name}': {detail}", tensor=name)
        n = float(noise.get(name, 0.0))
        tol = tolerance(s, n, rtol, noise_factor)
        scale = s["scale"] if s["scale"] > 0 else 1.0
        out[name] = dict(s, noise=n, noise_rel=n / scale, tolerance_rel=tol / scale)
        if s["max_abs"] > tol:
            failed.append((s["max_abs"] / tol if tol > 0 else float("inf"), name))
    if failed:  # name the output that misses its tolerance by the largest factor
        name = max(failed)[1]
        e = out[name]
        raise VerificationError(
            f"{what} disagree on output '{name}': error {e['max_rel']:.3g} > tolerance {e['tolerance_rel']:.3g} "
            f"(max |a - r| relative to the output's scale {e['scale']:.3g}; measured noise floor "
            f"{e['noise_rel']:.3g}, the original's spread between onnxruntime's unoptimized and optimized runs; "
            f"tolerance = max(rtol {rtol:g}, {noise_factor:g} x noise floor, absolute floor))", tensor=name)
    return out
