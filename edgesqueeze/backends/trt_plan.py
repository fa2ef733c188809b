"""What a TensorRT build must do for a given TensorRT version, target and model — decided without TensorRT.

Every version difference the TensorRT runner handles is decided here, from
``packaging.version`` comparisons, so that it is tested on machines without
TensorRT (TENSORRT.md lists the differences):

* workspace: ``config.max_workspace_size`` before 8.4, ``set_memory_pool_limit`` from 8.4;
* network creation: the ``EXPLICIT_BATCH`` flag before 10.0 (it is the only mode from 10.0);
* I/O: the binding API (``get_binding_*``, ``execute_async_v2``) before 8.5, the named-tensor API
  (``get_tensor_*``, ``set_tensor_address``, ``execute_async_v3``) from 8.5;
* precision: builder flags FP16/INT8 (+ an implicit calibrator fed from our cache) before 10.13; from
  :data:`STRONGLY_TYPED_FROM` (10.13, JetPack 7, where weak typing is deprecated) the network is strongly
  typed and precision comes from the model (Q/DQ nodes, FP16 tensors), as ``build_engine.sh`` builds it;
  from 11 the flags and calibrators are gone. 10.13 - 10.x still calibrate a model without Q/DQ from a
  cache (weakly typed, with a note).

The version thresholds below are the only ones: the bundle's trtexec flag table
(:mod:`edgesqueeze.bundle.engine_plan`) uses them too.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

from packaging.version import Version

from ..errors import InputError, UnsupportedError

from ..precision import PRECISION_CHOICES as PRECISIONS

MEMPOOL_FROM = Version("8.4")          # memory pools (trtexec --memPoolSize) replace the workspace size
TENSORS_API_FROM = Version("8.5")      # named-tensor I/O API
TRT10 = Version("10.0")                # implicit batch gone; --skipInference, --staticPlugins/--dynamicPlugins
STRONGLY_TYPED_FROM = Version("10.13")  # JetPack 7: weak typing deprecated, so builds are strongly typed
WEAK_TYPING_REMOVED = Version("11.0")  # no --fp16/--int8/--calib, no IInt8Calibrator


def strongly_typed(trt_version: str) -> bool:
    """True when an engine for ``trt_version`` is built strongly typed (precision from the model alone)."""
    return Version(trt_version) >= STRONGLY_TYPED_FROM


@dataclass(frozen=True)
class BuildPlan:
    """The decisions for one engine build (JSON-ready with :meth:`to_dict`)."""

    trt_version: str
    precision: str
    flags: Tuple[str, ...]            # trt.BuilderFlag names to set
    calibrator: Optional[str]         # "cache" (implicit INT8 from our cache) or None
    explicit_quantization: bool       # the model carries Q/DQ nodes
    strongly_typed: bool              # network created STRONGLY_TYPED (TensorRT >= 11 always; 10.x for QDQ-only)
    explicit_batch_flag: bool         # pass EXPLICIT_BATCH when creating the network (< 10)
    workspace_api: str                # "max_workspace_size" | "memory_pool_limit"
    io_api: str                       # "bindings" | "tensors"
    dla_core: Optional[int]
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """Return the plan as a JSON-ready dict."""
        d = asdict(self)
        d["flags"] = list(self.flags)
        d["notes"] = list(self.notes)
        return d


def plan_build(trt_version: str, precision: str = "auto", *, profile=None, has_qdq: bool = False,
               has_calibration: bool = False, sparse: bool = False, dla_core: Optional[int] = None,
               fast_fp16: Optional[bool] = None, fast_int8: Optional[bool] = None) -> BuildPlan:
    """Decide the builder flags and API flavour for ``trt_version``.

    Args:
        trt_version: the running TensorRT's version (``tensorrt.__version__``).
        precision: ``auto``, ``fp32``, ``fp16`` or ``int8``.
        profile: the target's :class:`~edgesqueeze.devices.DeviceProfile`; ``auto`` picks its best precision
            and an explicit precision it cannot run is refused.
        has_qdq: the model has QuantizeLinear/DequantizeLinear nodes (explicit INT8).
        has_calibration: a calibration cache or amax values are given (implicit INT8).
        sparse: set ``SPARSE_WEIGHTS`` (2:4 structured sparsity; Ampere and later use it).
        dla_core: run on this DLA core with GPU fallback.
        fast_fp16, fast_int8: what the local GPU reports (``platform_has_fast_fp16``); None = unknown.

    Returns:
        The :class:`BuildPlan`.

    Raises:
        InputError: unknown precision or a negative DLA core.
        UnsupportedError: the precision is impossible here (the message says why).
    """
    v = Version(trt_version)
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    notes: List[str] = []
    if profile is not None:
        if precision == "auto":
            precision = profile.best_precision()
        else:
            profile.require(precision)
        if dla_core is not None and dla_core >= max(0, int(profile.dla_cores or 0)):
            raise UnsupportedError(f"{profile.display_name} has {profile.dla_cores or 0} DLA core(s); "
                                   f"DLA core {dla_core} does not exist")
        if sparse and not profile.sparse_2_4:
            notes.append(f"{profile.display_name} has no 2:4 sparse tensor cores; SPARSE_WEIGHTS has no effect")
    elif precision == "auto":
        precision = "int8" if has_qdq else ("fp16" if fast_fp16 else "fp32")
    if dla_core is not None and dla_core < 0:
        raise InputError(f"DLA core must be >= 0, got {dla_core}")
    if precision == "int8" and has_qdq and fast_int8 is False:
        notes.append("the local GPU reports no fast INT8; the Q/DQ model may run slowly")
    if precision == "fp16" and fast_fp16 is False:
        notes.append("the local GPU reports no fast FP16; FP16 kernels may be no faster than FP32")

    flags, calibrator, strong = _precision_flags(v, precision, has_qdq, has_calibration, fast_fp16, notes)
    if sparse:
        flags.append("SPARSE_WEIGHTS")
    if dla_core is not None:
        flags.append("GPU_FALLBACK")
        if precision == "fp32":
            notes.append("DLA runs only FP16/INT8: FP32 layers fall back to the GPU")
    return BuildPlan(
        trt_version=str(v), precision=precision, flags=tuple(flags), calibrator=calibrator,
        explicit_quantization=has_qdq, strongly_typed=strong,
        explicit_batch_flag=v < TRT10,
        workspace_api="max_workspace_size" if v < MEMPOOL_FROM else "memory_pool_limit",
        io_api="bindings" if v < TENSORS_API_FROM else "tensors",
        dla_core=dla_core, notes=tuple(notes))


def _precision_flags(v: Version, precision: str, has_qdq: bool, has_calibration: bool,
                     fast_fp16: Optional[bool], notes: List[str]) -> Tuple[List[str], Optional[str], bool]:
    """Builder flags, calibrator and strong typing for ``precision`` on TensorRT ``v`` (notes appended)."""
    implicit_int8 = precision == "int8" and not has_qdq
    if v >= WEAK_TYPING_REMOVED and implicit_int8:
        raise UnsupportedError(f"TensorRT {v} has no implicit INT8 calibration; give it the Q/DQ "
                               "model (models/model.int8_qdq.onnx in a bundle, or 'edgesqueeze quantize')")
    if strongly_typed(str(v)) and not implicit_int8:
        # the model's own types decide (TensorRT 11 removed --fp16/--int8 and IInt8Calibrator)
        if precision == "fp16":
            notes.append(f"TensorRT {v} is strongly typed: FP16 comes from an FP16 model, not a builder flag")
        return [], None, True
    flags: List[str] = []
    calibrator = None
    if precision in ("fp16", "int8") and fast_fp16 is not False:
        flags.append("FP16")
    if precision == "int8":
        flags.append("INT8")
        if has_qdq:
            notes.append("INT8 from the model's Q/DQ nodes (explicit quantization)")
        elif has_calibration:
            calibrator = "cache"
            if v >= STRONGLY_TYPED_FROM:
                notes.append(f"TensorRT {v} deprecates weak typing: this engine is calibrated from the cache, "
                             "weakly typed; the bundle builds the Q/DQ model strongly typed")
            elif v >= TRT10:
                notes.append("implicit INT8 calibration is deprecated in TensorRT 10; the Q/DQ model is the "
                             "future-proof path")
        else:
            raise UnsupportedError("INT8 needs a calibration cache (calib=...) or a Q/DQ model",
                                   hint="edgesqueeze build --precision int8 --calib data.npz writes both")
    return flags, calibrator, False


def engine_cache_key(*, trt_version: str, gpu_name: str, compute_capability: Sequence[int], precision: str,
                     model_sha256: str, options: Optional[dict] = None) -> str:
    """Key an engine by everything that makes it unusable elsewhere: TensorRT version, GPU, precision, model.

    ``options`` holds the rest that changes the engine (DLA core, sparsity, calibration hash, shape profiles,
    plugin libraries). Returns a 24-hex-digit key.
    """
    release = list(Version(trt_version).release)
    while len(release) > 1 and release[-1] == 0:
        release.pop()  # 8.5.2.0 and 8.5.2 are the same TensorRT
    payload = {"trt": ".".join(map(str, release)), "gpu": gpu_name.strip(), "sm": list(compute_capability),
               "precision": precision, "model": model_sha256, "options": options or {}}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def parse_shape_profiles(spec: Optional[dict]) -> dict:
    """Validate optimization profiles for dynamic shapes: ``{input: (min, opt, max)}`` or, as the manifest and
    ``build`` write them, ``{input: {"min": dims, "opt": dims, "max": dims}}``; returns the tuple form.

    Raises:
        InputError: a profile is not three shapes of equal rank with min <= opt <= max.
    """
    out = {}
    for name, shapes in (spec or {}).items():
        if isinstance(shapes, dict):
            shapes = [shapes.get(sel) for sel in ("min", "opt", "max")]
        try:
            lo, opt, hi = (tuple(int(d) for d in s) for s in shapes)
        except (TypeError, ValueError) as exc:
            raise InputError("an optimization profile needs (min, opt, max) shapes", tensor=name) from exc
        if not (len(lo) == len(opt) == len(hi)) or any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi)):
            raise InputError(f"profile {lo} / {opt} / {hi} must have equal rank and min <= opt <= max",
                             tensor=name)
        out[name] = (lo, opt, hi)
    return out


@dataclass(frozen=True)
class ContextPlan:
    """How an execution context takes dynamic shapes on a TensorRT version (the calls' names, JSON-ready).

    Binding API (before 8.5): ``context.set_optimization_profile_async(0, stream)`` (the ``active_optimization_
    profile`` setter is deprecated since 8.0), ``context.set_binding_shape(index, dims)``, the profile from
    ``engine.get_profile_shape(0, binding)``, ``execute_async_v2(bindings)``. Named-tensor API (8.5+):
    ``set_optimization_profile_async`` too, ``context.set_input_shape(name, dims)``,
    ``engine.get_tensor_profile_shape(name, 0)``, ``set_tensor_address`` + ``execute_async_v3``.
    """

    io_api: str              # "bindings" | "tensors"
    select_profile: str      # the context method that picks optimization profile 0
    set_shape: str           # the context method that sets an input's shape for the next call
    profile_shape: str       # the engine method that returns (min, opt, max) of an input
    execute: str             # "execute_async_v2" | "execute_async_v3"

    def to_dict(self) -> dict:
        """Return the plan as a JSON-ready dict."""
        return asdict(self)


def context_plan(trt_version: str) -> ContextPlan:
    """The execution-context calls for dynamic shapes on TensorRT ``trt_version`` (see :class:`ContextPlan`)."""
    if Version(trt_version) < TENSORS_API_FROM:
        return ContextPlan("bindings", "set_optimization_profile_async", "set_binding_shape", "get_profile_shape",
                           "execute_async_v2")
    return ContextPlan("tensors", "set_optimization_profile_async", "set_input_shape", "get_tensor_profile_shape",
                       "execute_async_v3")


def needs_calibration_profile(plan: BuildPlan, dynamic: bool) -> bool:
    """True when the builder needs ``config.set_calibration_profile``: implicit INT8 calibration (our cache) of a
    network with dynamic inputs (TensorRT 8.x/10.x; a strongly typed build has no calibrator)."""
    return bool(dynamic and plan.calibrator == "cache")


def buffer_bytes(shape: Sequence[int], itemsize: int, capacity: int) -> int:
    """The device buffer size to hold ``shape``: the current ``capacity`` when it is enough (a sweep over smaller
    shapes reuses the buffer), else the new size; a device buffer is never 0 bytes."""
    need = int(itemsize)
    for d in shape:
        need *= int(d)
    return capacity if 0 < capacity and need <= capacity else max(1, need)
