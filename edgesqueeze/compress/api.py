"""The ``compress`` verb as a Python function: apply several techniques in a fixed order and measure the result."""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Tuple

import numpy as np
from onnx import ModelProto, numpy_helper

from ..errors import InputError, UnsupportedError
from ..model import random_feeds
from ..ortutil import compare_outputs, make_session, run_model
from ._layers import WEIGHT_OPS, find_layers
from ._macs import count_macs
from .channels import prune_channels
from .lowrank import low_rank
from .magnitude import prune_magnitude
from .sharing import share_weights
from .sparse24 import sparsify_2_4

ORDER = ("channels", "low_rank", "prune", "sparsity", "share")


def compress(model: ModelProto, *, sparsity: Optional[str] = None, prune: Optional[float] = None,
             prune_scope: str = "layer", prune_std: Optional[float] = None, channels: Optional[float] = None,
             channel_multiple: int = 1, low_rank_energy: Optional[float] = None, rank_ratio: Optional[float] = None,
             low_rank_spatial: bool = False, share: Optional[Tuple[int, int]] = None,
             share_bias: Optional[int] = None,
             val: Optional[Iterable[Mapping[str, np.ndarray]]] = None, seed: int = 0,
             shapes=None, channel_calib: Optional[np.ndarray] = None,
             channel_spare: Tuple[str, ...] = ()) -> Tuple[ModelProto, dict]:
    """Compress ``model`` with the requested techniques, in the order channels -> low-rank -> prune -> 2:4 ->
    sharing (structure first, then zeros, then the values that remain).

    Args:
        model: the ONNX model (not modified).
        sparsity: ``"2:4"`` for 2:4 structured sparsity.
        prune: magnitude-pruning sparsity (fraction of weights set to zero); ``prune_scope`` "layer" or "global".
        prune_std: magnitude pruning with Han et al.'s per-layer threshold ``prune_std * std(W)`` instead.
        channels: fraction of channels to remove by L1 norm; ``channel_multiple`` rounds the kept count up;
            ``channel_calib`` (inputs) and ``channel_spare`` (rules): see :func:`prune_channels`.
        low_rank_energy: truncated-SVD energy to keep; ``rank_ratio`` a parameter ratio instead;
            ``low_rank_spatial`` also splits K x K convolutions.
        share: ``(conv_bits, fc_bits)`` for k-means weight sharing; ``share_bias`` bits to share biases too.
        val: a data reader with ``labels`` (``edgesqueeze.data.open_data``) to measure top-1 before and after.
        seed: seed of the random inputs used to measure the output change.
        shapes: ``--input`` shapes for a model with dynamic dims (see ``edgesqueeze.model.random_feeds``).

    Returns:
        ``(model, report)``: the report holds each step's report, the output change on seeded random inputs,
        and ``accuracy`` {"before", "after"} when ``val`` is given (top-1 is None without labels), with
        ``accuracy_steps`` [{"step", "top1"}, ...]: the top-1 after each step, so a loss is put where it happened.

    Raises:
        InputError: no technique requested, or a bad option value.
    """
    if sparsity is not None and sparsity != "2:4":
        raise InputError(f"unsupported sparsity pattern '{sparsity}' (only 2:4)")
    steps = []
    if channels is not None:
        steps.append(("channels", lambda m: prune_channels(m, channels, multiple_of=channel_multiple,
                                                                   spare=channel_spare, calib=channel_calib)))
    if low_rank_energy is not None or rank_ratio is not None:
        steps.append(("low_rank", lambda m: low_rank(m, low_rank_energy or 0.9, ratio=rank_ratio,
                                                     spatial=low_rank_spatial)))
    if prune is not None or prune_std is not None:
        steps.append(("prune", lambda m: prune_magnitude(m, prune or 0.0, scope=prune_scope, std_q=prune_std)))
    if sparsity is not None:
        steps.append(("sparsity", sparsify_2_4))
    if share is not None:
        steps.append(("share", lambda m: share_weights(m, conv_bits=share[0], fc_bits=share[1],
                                                             bias_bits=share_bias)))
    if share_bias is not None and share is None:
        raise InputError("--share-bias needs --share")
    if not steps:
        raise InputError("nothing to do: give --sparsity 2:4, --prune, --channels, --low-rank or --share")
    _require_stored_weights(model)
    out, reports, step_top1 = model, {}, []
    for name, fn in steps:
        out, reports[name] = fn(out)
        if val is not None and len(steps) > 1:
            step_top1.append({"step": name, "top1": top1(out, val)})
    report = {"steps": [s for s, _ in steps], "reports": reports,
              "params_before": _params(model), "params_after": _params(out),
              "nonzero_before": _nonzero(model), "nonzero_after": _nonzero(out),
              "macs_before": count_macs(model, shapes), "macs_after": count_macs(out, shapes)}
    report["output_change"] = None
    try:
        feeds = random_feeds(model, seed=seed, shapes=shapes)[0]
        before = run_model(model, feeds)
    except (InputError, UnsupportedError) as exc:  # dynamic shapes, or ops onnxruntime lacks: no random check
        report["output_check_skipped"] = exc.one_line()
    else:  # the input runs, so the compressed model must run too (an error here is a bug, not the user's)
        report["output_change"] = compare_outputs(before, run_model(out, feeds))
    if val is not None:
        before = top1(model, val)
        after = step_top1[-1]["top1"] if step_top1 else top1(out, val)
        report["accuracy"] = {"before": before, "after": after}
        report["accuracy_steps"] = step_top1 or [{"step": steps[0][0], "top1": after}]
    return out, report


def _require_stored_weights(model: ModelProto) -> None:
    """Compression rewrites weight initializers: a model whose weights are all computed at run time (e.g. by
    ConstantOfShape) would come out unchanged, so say so instead of writing a copy."""
    if find_layers(model):
        return
    computed = [n.name or n.op_type for n in model.graph.node if n.op_type in WEIGHT_OPS]
    if computed:
        raise InputError(f"no Conv/Gemm/MatMul stores its weight as an initializer ({len(computed)} compute it at "
                         f"run time, first: node '{computed[0]}'), so there is nothing to compress",
                         hint="fold the constants first: edgesqueeze optimize MODEL -o folded.onnx")


def _params(model: ModelProto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def _nonzero(model: ModelProto) -> int:
    return int(sum(np.count_nonzero(numpy_helper.to_array(t)) for t in model.graph.initializer))


def top1(model: ModelProto, reader) -> Optional[float]:
    """Top-1 accuracy (argmax over the last axis of the first output) on a reader with ``labels``; None without."""
    labels = getattr(reader, "labels", None)
    if labels is None:
        return None
    session = make_session(model)
    preds = []
    for feeds in reader:
        out = next(iter(run_model(model, feeds, session=session).values()))
        preds.append(np.asarray(out).reshape(-1, out.shape[-1]).argmax(axis=-1))
    preds = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    labels = np.asarray(labels).ravel()[: preds.size]
    return float(np.mean(preds == labels)) if preds.size else None
