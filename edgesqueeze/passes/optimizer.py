"""The optimizer: run a named list of passes on a model, report what changed, prove it on onnxruntime.

``optimize(model)`` imports the model into onnx-graphsurgeon once, runs each pass (a function on the graph),
exports, rebuilds the custom ops' local functions and, unless ``verify=False``, runs the input and the output on
onnxruntime CPU with seeded random inputs, against a tolerance that includes each output's measured rounding noise
(:mod:`edgesqueeze.numerics`). When they disagree it bisects the pass list (re-running growing
prefixes from the input, which is deterministic) and raises a VerificationError naming the first pass whose
output disagrees.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import onnx
from onnx import ModelProto

from ..errors import InputError, UnsupportedError, VerificationError
from ..model import (INLINE_WEIGHT_BYTES, copy_model_attributes, infer_shapes, opset_version, put_back_arrays,
                     put_back_weights, raw_nbytes, strip_weights, tensor_type_of, weight_stub)
from ..numerics import NOISE_FACTOR
from ..plugins.ops import DOMAIN, OPS, attach_present_functions, op_of
from ._graph import ir_version_for
from .registry import PASSES, PassContext, get_pass

#: ai.onnx opset the CLI converts older models to (the light Model-Zoo models are opset 9)
DEFAULT_OPSET = 13


def _is_gpu_target(target: Optional[str]) -> bool:
    if target is None:
        return False
    from ..devices import get_profile

    return get_profile(target).kind != "cpu"


def default_pass_names(target: Optional[str] = None) -> List[str]:
    """The default pipeline for ``target`` (a device profile name; None = CPU): pass names in order.

    GPU targets add the depthwise-separable fusion; on the CPU it brings nothing.

    Raises:
        InputError: unknown target.
    """
    gpu = _is_gpu_target(target)
    return [p.name for p in PASSES.values() if p.default or (p.gpu_only and gpu)]


def resolve_passes(passes: Optional[Sequence[str]] = None, skip: Sequence[str] = (),
                   target: Optional[str] = None) -> List[str]:
    """The pass list to run: ``passes`` (in the order given) or the target's default, minus ``skip``.

    Raises:
        InputError: an unknown pass name in ``passes`` or ``skip``.
    """
    names = list(passes) if passes else default_pass_names(target)
    for name in list(names) + list(skip):
        get_pass(name)
    return [n for n in names if n not in set(skip)]


def histogram(model: ModelProto) -> Dict[str, int]:
    """Op histogram of the main graph: ``{"Conv": 53, "edgesqueeze::DepthwiseSeparableConv": 3, ...}``."""
    return dict(sorted(Counter((f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type)
                               for n in model.graph.node).items()))


# ----------------------------------------------------------------------------- import / export
_SMALL = 4096  # bytes: initializers up to this size stay for data propagation (shape tensors)


def infer_shapes_fast(model: ModelProto) -> ModelProto:
    """Shape inference without serialising the weights: large initializers are described by type and shape only.

    Fills ``model.graph.value_info`` in place (and returns ``model``); on failure the model is left as it is.
    """
    light = ModelProto()
    light.ir_version = max(model.ir_version, 4)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    names = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        size = raw_nbytes(t) or 4 * max(len(t.float_data), len(t.int64_data), len(t.int32_data), len(t.raw_data))
        if size <= _SMALL:
            g.initializer.append(t)
        elif t.name not in names:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    inferred = infer_shapes(light)
    if inferred is not light:
        del model.graph.value_info[:]
        model.graph.value_info.extend(vi for vi in inferred.graph.value_info)
    return model


def _prepare(model: ModelProto) -> Tuple[ModelProto, dict]:
    """A copy ready for graph surgery, without its large weights (stubs, :func:`edgesqueeze.model.strip_weights`),
    and what to restore after it (``saved["weights"]``: the model's own weights by name).

    Initializers stop being listed as graph inputs (IR < 4 style); local functions and node overload keys are
    set aside (onnx-graphsurgeon does not carry overloads), to be restored by :func:`_restore`.
    """
    out, weights = strip_weights(model)
    saved = {"weights": weights, "functions": list(out.functions),
             "overloads": {n.output[0]: n.overload for n in out.graph.node if n.overload and n.output}}
    del out.functions[:]
    for node in out.graph.node:
        node.overload = ""
    inits = {t.name for t in out.graph.initializer}
    real = [i for i in out.graph.input if i.name not in inits]
    if len(real) != len(out.graph.input):  # IR < 4 style: weights also listed as (overridable) inputs
        del out.graph.input[:]
        out.graph.input.extend(real)
    return infer_shapes_fast(out), saved


def _restore(out: ModelProto, saved: dict) -> None:
    """Put back the overload keys of surviving nodes and the functions still called; the custom ops (the
    :mod:`edgesqueeze.plugins.ops` registry) rebuild their own functions from the weights."""
    for node in out.graph.node:
        key = node.output[0] if node.output else None  # surviving nodes keep their output names
        if key in saved["overloads"] and op_of(node) is None:
            node.overload = saved["overloads"][key]
    called = {(n.domain, n.op_type, n.overload) for n in out.graph.node}
    for fn in saved["functions"]:
        if fn.domain == DOMAIN and fn.name in OPS:
            continue  # rebuilt below
        if (fn.domain, fn.name, fn.overload) in called or any(
                f.node and any((n.domain, n.op_type) == (fn.domain, fn.name) for n in f.node)
                for f in saved["functions"]):
            out.functions.append(fn)
    attach_present_functions(out)


def _point_at_weights(graph, weights: dict) -> dict:
    """Make the stub constants of ``graph`` read the model's own weights (no copy); returns ``{name: values}``
    of those constants' values, to tell the untouched weights after the passes."""
    from onnx_graphsurgeon.ir.tensor import LazyValues

    lazy = {}
    for name, tensor in graph.tensors().items():
        if name in weights and getattr(tensor, "_values", None) is not None:
            tensor._values = lazy[name] = LazyValues(weights[name])
    return lazy


def _back_to_stubs(graph, lazy: dict, prepared: ModelProto) -> Tuple[dict, dict]:
    """Give the constants that hold a large weight a stub, so that exporting copies no weight; returns
    ``{current name: the untouched weight}`` for :func:`edgesqueeze.model.put_back_weights` and
    ``{name: array}`` of the large weights the passes computed, for :func:`edgesqueeze.model.put_back_arrays`."""
    import numpy as np
    from onnx_graphsurgeon.ir.tensor import LazyValues

    stubs = {t.name: t for t in prepared.graph.initializer if t.name in lazy}
    by_values = {id(v): name for name, v in lazy.items()}
    weights, arrays = {}, {}
    for name, tensor in graph.tensors().items():
        values = getattr(tensor, "_values", None)
        orig = by_values.get(id(values))
        if orig is not None and values is lazy[orig]:
            stub = onnx.TensorProto()
            stub.CopyFrom(stubs[orig])
            tensor._values = LazyValues(stub)
            weights[name] = lazy[orig].tensor
        elif (isinstance(values, np.ndarray) and values.nbytes > INLINE_WEIGHT_BYTES
              and tensor_type_of(values) is not None and getattr(tensor, "data_location", None) is None):
            tensor._values = LazyValues(weight_stub(name, tensor_type_of(values), values.shape))
            arrays[name] = values
    return weights, arrays


def _run_passes(model: ModelProto, names: Sequence[str], ctx: PassContext
                ) -> Tuple[ModelProto, List[dict], Dict[str, str]]:
    """The model after the passes ``names``, their timings, and ``{weight name: name in model}`` of the large
    weights the passes left untouched (the same bytes as ``model``'s: verification sessions share them)."""
    from onnx_graphsurgeon.logger import G_LOGGER

    level = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR  # onnx-graphsurgeon prints its warnings on stdout (which --json owns)
    try:
        return _run_passes_quietly(model, names, ctx)
    finally:
        G_LOGGER.severity = level


def _run_passes_quietly(model: ModelProto, names: Sequence[str], ctx: PassContext):
    import onnx_graphsurgeon as gs

    prepared, saved = _prepare(model)
    graph = gs.import_onnx(prepared)
    lazy = _point_at_weights(graph, saved["weights"])
    ctx.reserve(graph.tensors().keys())
    ctx.reserve(n.name for n in graph.nodes if n.name)
    timings = []
    for name in names:
        p = PASSES[name]
        t0 = time.perf_counter()
        before = len(graph.nodes)
        graph = p.fn(graph, ctx)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        timings.append({"name": name, "seconds": round(time.perf_counter() - t0, 4),
                        "nodes_before": before, "nodes_after": len(graph.nodes)})
    weights, arrays = _back_to_stubs(graph, lazy, prepared)
    kept = {name: t.name for name, t in weights.items()}
    out = gs.export_onnx(graph, do_type_check=False)
    del graph, lazy  # the graph's own arrays are the ones in ``arrays``: written into ``out`` one at a time
    if not (put_back_arrays(out, arrays) and put_back_weights(out, weights)):
        raise AssertionError("a pass changed a weight's stub")  # passes replace weights, they never edit stubs
    # keep the input's identity: IR version, opsets, producer, metadata, other functions
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.ir_version = ir_version_for(model)
    copy_model_attributes(model, out)
    _restore(out, saved)
    return infer_shapes_fast(out), timings, kept


# ----------------------------------------------------------------------------- verification
def _reference(model: ModelProto, feeds, noise_factor: float, shared=None) -> dict:
    """What every candidate is checked against: the original's runs (graph optimizations off), the logits
    compared besides the outputs, the outputs' units; each output's rounding noise is measured by
    :func:`_with_noise` only when a candidate misses ``rtol`` (one run of each model when it does not).
    ``shared``: the :class:`edgesqueeze.ortutil.SharedWeights` pool that takes the model's weights."""
    from ..numerics import logit_tensors, unit_scales
    from ..ortutil import make_session, run_model

    logits = logit_tensors(model)
    sess = make_session(model, extra_outputs=logits, shared=shared)
    runs = [run_model(model, f, session=sess) for f in feeds]
    return {"runs": runs, "shared": shared, "logits": logits, "units": unit_scales(model), "noise": {},
            "noise_factor": noise_factor, "noise_measured": not noise_factor}


def _with_noise(model: ModelProto, feeds, ref: dict) -> dict:
    """``ref`` with each output's measured rounding noise (the original's spread between onnxruntime's
    unoptimized and optimized runs), measured once."""
    from ..numerics import noise_floor

    if ref["noise_measured"]:
        return ref
    return dict(ref, noise=noise_floor(model, feeds, ref["runs"], ref["logits"]), noise_measured=True)


def _verify(candidate: ModelProto, feeds, rtol: float, ref: dict, kept: Optional[Dict[str, str]] = None
            ) -> Dict[str, dict]:
    """Per-output statistics of ``candidate`` against the reference (see :mod:`edgesqueeze.numerics`);
    ``kept``: the original's weights it holds unchanged (:func:`_run_passes`), read from the reference's pool.

    Raises:
        VerificationError: an output (or logit tensor) disagrees beyond its tolerance.
        UnsupportedError: onnxruntime cannot run the candidate.
    """
    from ..numerics import judge, output_errors, worst_errors
    from ..ortutil import make_session, run_model

    produced = {o for n in candidate.graph.node for o in n.output}
    extra = [t for t in ref["logits"] if t in produced]
    sess = make_session(candidate, extra_outputs=extra, shared=ref.get("shared"), aliases=kept or {})
    keep = (set(ref["runs"][0]) - set(ref["logits"])) | set(extra) if ref["runs"] else set()
    per_feed = [output_errors({k: v for k, v in r.items() if k in keep}, run_model(candidate, f, session=sess),
                              ref["units"]) for r, f in zip(ref["runs"], feeds)]
    return judge(worst_errors(per_feed), ref["noise"], rtol, what="original and optimized",
                 noise_factor=ref["noise_factor"])


def _bisect(model: ModelProto, names: Sequence[str], ctx_args: dict, feeds, rtol: float, ref: dict) -> str:
    """Return the first pass of ``names`` after which the model no longer matches ``model``."""
    lo, hi = 0, len(names)  # prefix lo is known good, prefix hi known bad
    while hi - lo > 1:
        mid = (lo + hi) // 2
        cand, _, kept = _run_passes(model, names[:mid], PassContext(**ctx_args))
        try:
            _verify(cand, feeds, rtol, ref, kept)
            lo = mid
        except (VerificationError, UnsupportedError):
            hi = mid
    return names[hi - 1]


def optimize(model: ModelProto, passes: Optional[Sequence[str]] = None, skip: Sequence[str] = (),
             target: Optional[str] = None, verify: bool = True, rtol: float = 1e-4,
             seed: int = 0, noise_factor: float = NOISE_FACTOR, feeds=None,
             write: Optional[Callable[[ModelProto], None]] = None) -> Tuple[Optional[ModelProto], dict]:
    """Optimize ``model`` with a named list of graph passes and prove the result on onnxruntime.

    Args:
        model: the model (not mutated). Its ai.onnx opset should be >= 13 for every pass to apply
            (:func:`edgesqueeze.model.load_model` with ``opset=13`` converts older models); passes whose opset
            range excludes the model are skipped and listed in the report.
        passes: pass names to run in this order (default: :func:`default_pass_names` for ``target``).
        skip: pass names to leave out.
        target: device profile name; GPU targets add the depthwise-separable fusion.
        verify: run input and output on onnxruntime CPU with seeded random inputs and require agreement.
        rtol: relative tolerance of the check (max |a - r| / max |r| per output); an output whose measured
            rounding noise is larger may differ by ``noise_factor`` times that noise (:mod:`edgesqueeze.numerics`).
        seed: seed of the random inputs.
        noise_factor: multiple of each output's measured rounding noise (the original's spread between
            onnxruntime's unoptimized and optimized runs) that is accepted; 0 = ``rtol`` only.
        feeds: the verification's feed dicts (default: ``random_feeds(model, seed)``; a dynamic-shape
            model's caller gives feeds at the concrete shapes it chose).
        write: called with the optimized model before the verification (to write it; keep nothing of it):
            the verification then holds only the weights the passes changed besides the original's, and the
            optimized model is not returned (None). A failed verification raises after ``write``.

    Returns:
        ``(optimized model, report)``; the report is JSON-ready: ``passes``, ``skipped_passes``, ``fusions``
        (``{kind: {"count", "nodes"}}``), ``ops_before``/``ops_after``, ``nodes_before``/``nodes_after``,
        ``verification``.

    Raises:
        InputError: an unknown pass or target name.
        VerificationError: the outputs disagree; the message names the pass that broke equivalence.
    """
    names = resolve_passes(passes, skip, target)
    opset = opset_version(model)
    skipped = [{"name": n, "reason": f"supports ai.onnx opsets {PASSES[n].opsets[0]}..{PASSES[n].opsets[1]}, "
                                     f"the model has {opset}"} for n in names if not PASSES[n].supports(opset)]
    names = [n for n in names if PASSES[n].supports(opset)]
    ctx_args = {"opset": opset, "target": target, "gpu": _is_gpu_target(target)}
    ctx = PassContext(**ctx_args)
    t0 = time.perf_counter()
    out, timings, kept = _run_passes(model, names, ctx)
    seconds = time.perf_counter() - t0
    report = {
        "passes": timings, "skipped_passes": skipped, "target": target, "opset": opset,
        "fusions": {k: {"count": len(v), "nodes": v} for k, v in sorted(ctx.fusions.items())},
        "ops_before": histogram(model), "ops_after": histogram(out),
        "nodes_before": len(model.graph.node), "nodes_after": len(out.graph.node),
        "seconds": round(seconds, 4),
    }
    if write is not None:
        write(out)
        out = _without_kept(out, kept)
    report["verification"] = _verification(model, (out, kept), names, ctx_args, verify, rtol, seed, noise_factor,
                                           feeds)
    return (None if write is not None else out), report


def _without_kept(out: ModelProto, kept: Dict[str, str]) -> ModelProto:
    """``out`` with the weights the passes left untouched (``kept``) as stubs: what the verification needs of it
    when those weights come from the original's (:class:`edgesqueeze.ortutil.SharedWeights`)."""
    light, stripped = strip_weights(out)
    for t in light.graph.initializer:
        if t.name in stripped and t.name not in kept:
            t.CopyFrom(stripped[t.name])
    return light


def _verification(model, optimized, names, ctx_args, verify, rtol, seed, noise_factor, feeds=None) -> dict:
    """The report's ``verification``: ``optimized`` (the model after the passes and its untouched weights, from
    :func:`_run_passes`) against ``model``, both on onnxruntime with their weights shared (decoded once)."""
    from ..ortutil import SharedWeights

    if not verify:
        return {"status": "skipped", "reason": "verification disabled (--no-verify)"}
    shared = SharedWeights()
    try:
        return _verify_or_bisect(model, optimized, names, ctx_args, rtol, seed, noise_factor, feeds, shared)
    finally:
        shared.close()


def _verify_or_bisect(model, optimized, names, ctx_args, rtol, seed, noise_factor, feeds, shared) -> dict:
    from ..model import random_feeds

    out, kept = optimized
    try:
        feeds = feeds if feeds is not None else random_feeds(model, seed=seed)
    except InputError as exc:
        return {"status": "skipped", "reason": f"no random inputs: {exc.one_line()}"}
    try:
        ref = _reference(model, feeds, noise_factor, shared)
    except UnsupportedError as exc:
        return {"status": "skipped", "reason": f"onnxruntime cannot run the input model: {exc.message}"}
    shared.retain(kept.values())  # the original's weights the candidate does not share are needed no more
    try:
        try:
            stats = _verify(out, feeds, rtol, ref, kept)
        except VerificationError:  # rtol alone is not met: allow for the original's own rounding noise
            ref = _with_noise(model, feeds, ref)
            stats = _verify(out, feeds, rtol, ref, kept)
    except (VerificationError, UnsupportedError) as exc:
        ref = _with_noise(model, feeds, ref)
        culprit = _bisect(model, names, ctx_args, feeds, rtol, ref) if names else None
        raise VerificationError(f"pass '{culprit}' broke equivalence: {exc.message}", tensor=exc.tensor,
                                hint="skip it with --skip " + str(culprit)) from exc
    worst = max((s["max_rel"] for s in stats.values()), default=0.0)
    keys = ("max_abs", "max_rel", "scale", "noise_rel", "tolerance_rel")
    return {"status": "passed", "rtol": rtol, "noise_factor": noise_factor, "seed": seed, "max_rel": worst,
            "noise_measured": ref["noise_measured"],
            "outputs": {k: {f: v[f] for f in keys} for k, v in sorted(stats.items())}}
