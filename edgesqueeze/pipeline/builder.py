"""``build``: one call from a trained ONNX model to a verified, deployable bundle for a named target.

load → optimize → compress (as asked) → quantize (as the target allows) → compat → validate → engine → bundle.

>>> from edgesqueeze.pipeline import build
>>> summary = build("examples/digits/digits_cnn.onnx", "orin-nano", "bundle/", precision="int8",
...                 calib="examples/digits/calib.npz", val="examples/digits/val.npz")   # doctest: +SKIP

``build`` validates its options once (:func:`~edgesqueeze.pipeline.options.make_options`), runs the stage list
(:data:`~edgesqueeze.pipeline.stages.STAGES`) over one :class:`~edgesqueeze.pipeline.state.BuildState`, and
renders the summary from the stages' records. Every stage that cannot run (a target without TensorRT, no
validation data) is skipped with its reason in the summary; user errors raise the usual
:mod:`edgesqueeze.errors` exceptions before anything is written.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Sequence

from ..fileio import PathLike
from ..quant.methods import DEFAULT_METHOD, METHODS as CALIB_METHODS
from ..quant.run import QuantOptions
from .options import SPARSITY_CHOICES, BuildOptions, make_options
from .progress import Progress
from .state import BuildState
from .stages import STAGES

__all__ = ["CALIB_METHODS", "SPARSITY_CHOICES", "build", "render_summary", "run_stages"]


def build(model_path: PathLike, target: str, out_dir: PathLike, *, precision: str = "auto",
          calib: Optional[str] = None, sparsity: Optional[str] = None, val: Optional[str] = None,
          input_shapes=None, static: bool = False, archive: bool = False, passes: Optional[Sequence[str]] = None,
          skip_passes: Sequence[str] = (), optimize: bool = True, calib_method: str = DEFAULT_METHOD,
          calib_limit: Optional[int] = None, val_limit: Optional[int] = None, dla: bool = False,
          workspace_mib: int = 1024, local_engine: str = "auto", force: bool = False, progress: bool = True,
          max_accuracy_drop: float = 0.01, strict: bool = False, sign_key: Optional[str] = None,
          log: Optional[Callable[[str], None]] = None,
          percentile: float = 99.99, keep: Sequence[str] = (), sensitivity: bool = False,
          auto_keep_drop: Optional[float] = None, min_shapes: Optional[str] = None,
          opt_shapes: Optional[str] = None, max_shapes: Optional[str] = None) -> dict:
    """Build a deployable bundle of ``model_path`` for ``target``.

    Args:
        model_path: the trained ``.onnx`` model (never modified).
        target: device profile name (``edgesqueeze devices``).
        out_dir: the bundle folder to create (must be absent, empty, or an old bundle with ``force``).
        precision: ``auto`` (best the target runs: INT8 needs ``calib``), ``fp32``, ``fp16`` or ``int8``.
        calib: calibration data for INT8 (``.npz``/``.npy``/image folder, or ``"random"`` for a smoke test).
        sparsity: ``"2:4"`` to prune weights to 2:4 structured sparsity.
        val: validation data: adds accuracy vs FP32 (and top-1 with labels) to the summary.
        input_shapes: concrete shapes of dynamic inputs for the checks (``{name: dims}`` or
            ``["name:1x3x224x224"]``); the bundle's models keep their symbolic dims unless ``static``.
        static: pin the bundle models' inputs to static shapes (``input_shapes``, else the checks' shapes).
        archive: also write ``<out_dir>.tar.gz`` (byte-identical across runs).
        passes, skip_passes, optimize: the optimizer's pass list (None = the target's default), passes to skip,
            or no optimization at all.
        calib_method: entropy, minmax, percentile or mse (``quantize --method``).
        calib_limit, val_limit: use at most this many samples.
        dla: build the engine for a DLA core (GPU fallback on); the target must have DLA.
        workspace_mib: the TensorRT builder workspace in the engine script.
        local_engine: ``auto`` (build a local TensorRT engine when TensorRT and a GPU are present), ``on``, ``off``.
        force: replace an existing bundle in ``out_dir``.
        progress: show progress bars (on a terminal).
        max_accuracy_drop: warn when the deploy model's top-1 falls more than this (a fraction) below the input
            model's, or (without labels) when its top-1 agreement with it falls below ``1 - max_accuracy_drop``.
        strict: a loss over ``max_accuracy_drop`` is a :class:`VerificationError` and no bundle is written.
        sign_key: an SSH private key: sign the finished bundle's manifest (``manifest.json.sig``).
        log: called with one line per stage and per warning (default: silent).
        percentile, keep, sensitivity, auto_keep_drop: INT8 options, as ``quantize`` takes them: the percentile
            method's percentile, nodes left in higher precision, rank layers by sensitivity, keep the most
            sensitive layers out of INT8 until the accuracy drop is at most this many points.
        min_shapes, opt_shapes, max_shapes: the TensorRT optimization profile of dynamic inputs in trtexec's
            syntax (``"images:1x3x640x640"``, several inputs comma-separated): only ``opt_shapes``, or all three.
            Without them a dynamic input gets the default profile (batch 1..8, other dims from the data).

    Returns:
        The summary: bundle path, target, precision, per-stage status/time, model sizes, predicted latency,
        accuracy, engine script plan, warnings.

    Raises:
        InputError: bad model, data or option (exit 3). UnsupportedError: the target cannot run the requested
        precision, DLA or sparsity, or a node has no exact spelling at the target's ONNX opset/IR (exit 4).
        MissingDependencyError: ``local_engine="on"`` without TensorRT (exit 5). VerificationError: an optimized
        model disagrees with its input (exit 7).
    """
    quant = QuantOptions(calib_method, percentile, tuple(keep), sensitivity, auto_keep_drop)
    options = make_options(model_path, target, out_dir, precision=precision, calib=calib, quant=quant,
                           sparsity=sparsity, input_shapes=input_shapes, local_engine=local_engine, dla=dla,
                           archive=archive, force=force, passes=passes, skip_passes=skip_passes, val=val,
                           calib_limit=calib_limit, val_limit=val_limit, optimize=optimize,
                           workspace_mib=workspace_mib, max_accuracy_drop=max_accuracy_drop,
                           strict=strict, sign_key=sign_key, min_shapes=min_shapes, opt_shapes=opt_shapes,
                           max_shapes=max_shapes, static=static)
    log = log or (lambda msg: None)
    state = BuildState(Progress(progress, log, len(STAGES)), log)
    run_stages(state, options)
    return render_summary(state, options)


def run_stages(state: BuildState, options: BuildOptions, stages=STAGES) -> None:
    """Run ``stages`` in order, each under its progress bar; their records land in ``state.records``."""
    for stage in stages:
        with state.progress.stage(stage.__name__) as bar:
            state.bar = bar
            record = stage(state, options)
            bar.done(record.detail)
        state.records[record.name] = replace(record, seconds=bar.seconds)
        for message in record.warnings:
            state.warn(message)


def render_summary(state: BuildState, options: BuildOptions) -> dict:
    """The JSON summary (what ``build`` returns and ``--json`` prints), rendered from the stage records."""
    stages = {name: record.to_dict() for name, record in state.records.items()}
    summary = {"bundle": str(options.out_dir), "target": options.profile.name,
               "requested_precision": options.requested, "precision": options.precision.value, "stages": stages,
               "warnings": state.warnings}
    if "compat" in stages:
        summary["compat"] = stages["compat"]
    for record in state.records.values():
        summary.update(record.summary)
    return summary
