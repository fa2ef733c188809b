"""TensorRT runner: ONNX parser build (or cached engine), pycuda buffers, CUDA-event timing.

Written against the documented TensorRT Python API of 8.2 through 10.x (and 11, where precision
comes from the model only); ``tensorrt`` and ``pycuda`` are imported in :meth:`TrtRunner.activate`,
never at import time. Version decisions live in :mod:`.trt_plan` and are tested without TensorRT.

Timing: each ``infer`` records four CUDA events on the stream (before the host-to-device copies,
after them, after the enqueue, after the device-to-host copies), so compute and copies are reported
separately and nothing is timed around an unsynchronised enqueue (TensorRT#3493).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from .._lazy import require
from ..errors import DeviceError, InputError, UnsupportedError
from ..fileio import cache_dir as default_cache_dir, sha256_bytes, sha256_file, write_bytes_atomic
from ..model import fits_one_protobuf, input_specs, load_model, model_bytes, model_hash, save_model
from .base import InputMetadata, Runner
from .calib_cache import cache_bytes_for, make_cache_calibrator
from .trt_plan import (BuildPlan, buffer_bytes, context_plan, engine_cache_key, needs_calibration_profile,
                       parse_shape_profiles, plan_build)
from .trt_profile import (SELECTORS, calibration_profile, default_profile, dynamic_inputs, dynamic_profile,
                          profile_lines)

WORKSPACE_MIB = 1024


def _has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


class TrtRunner(Runner):
    """Build (or load from the engine cache) a TensorRT engine for an ONNX model and run it.

    Args:
        model: ModelProto or ``.onnx`` path (a serialized ``.engine``/``.plan`` file is loaded as is). TensorRT
            parses an ``.onnx`` path from the file (its external data read next to it, so models over 2 GB
            build); a ModelProto from its bytes, or over 2 GB from a temporary copy with external data.
        precision: ``auto``, ``fp32``, ``fp16``, ``int8`` (see :func:`~.trt_plan.plan_build`).
        target: device profile name or object; decides ``auto`` and refuses impossible precisions.
        calibration: a TensorRT calibration cache path or ``{tensor: amax}`` for implicit INT8.
        sparse: set ``SPARSE_WEIGHTS``. dla_core: DLA core (GPU fallback on).
        shape_profiles: ``{input: (min, opt, max)}`` or ``{input: {"min", "opt", "max"}}`` for dynamic inputs;
            one not given gets :func:`~.trt_profile.default_profile` (batch 1..8, opt 1).
        plugins: plugin libraries (``.so``) to load before parsing; a library that fails to load is an error.
        cache_dir: engine + timing cache directory, holding ``engines/`` and ``timing/`` (None:
            :func:`~edgesqueeze.fileio.cache_dir`; False: no cache).
        workspace_mib: builder workspace limit. device: CUDA device ordinal.
    """

    name = "trt"

    def __init__(self, model: Union[onnx.ModelProto, str, os.PathLike], *, precision: str = "auto",
                 target=None, calibration: Union[None, str, os.PathLike, Mapping[str, float]] = None,
                 sparse: bool = False, dla_core: Optional[int] = None,
                 shape_profiles: Optional[dict] = None, plugins: Sequence[str] = (),
                 cache_dir: Union[None, bool, str, os.PathLike] = None, workspace_mib: int = WORKSPACE_MIB,
                 device: int = 0, verbose: bool = False) -> None:
        super().__init__()
        self.engine_path: Optional[Path] = None
        self.onnx_file: Optional[str] = None  # the file ``self.model`` was loaded from, unchanged: parsed from there
        if isinstance(model, onnx.ModelProto):
            self.model, self.path = model, None
        elif str(model).endswith((".engine", ".plan", ".trt")):
            self.model, self.path, self.engine_path = None, str(model), Path(model)
            if not self.engine_path.exists():
                raise InputError("no such engine file", path=str(model))
        else:
            self.model, self.path = load_model(model, require_static=False), str(model)
            self.onnx_file = str(Path(model).resolve())
        if target is not None:
            from ..devices import get_profile

            target = get_profile(target)
        self.target = target
        self.precision = precision
        self.calibration = calibration
        self.sparse = sparse
        self.dla_core = dla_core
        self.shape_profiles = parse_shape_profiles(shape_profiles)
        self.plugins = [str(p) for p in plugins]
        for p in self.plugins:
            if not Path(p).exists():
                raise InputError("plugin library not found", path=p, hint="build it with 'edgesqueeze plugins build'")
        self.cache_dir = None if cache_dir is False else Path(cache_dir) if cache_dir else default_cache_dir()
        self.workspace_mib = int(workspace_mib)
        self.device = int(device)
        self.verbose = verbose
        self.plan: Optional[BuildPlan] = None
        self.notes: List[str] = []
        self.cache_hit = False
        self._meta = InputMetadata(input_specs(self.model)) if self.model is not None else None
        self._trt = self._cuda = self._ctx = self._engine = self._context = self._stream = None
        self._calibrator = None
        self._io: Dict[str, dict] = {}
        self._events = []
        self._times: Optional[Dict[str, float]] = None

    # ------------------------------------------------------------------ interface
    def input_metadata(self) -> InputMetadata:
        if self._meta is None:
            raise UnsupportedError("input metadata of a serialized engine is known after activate()")
        return self._meta

    def describe(self) -> dict:
        d = {"name": self.name, "version": getattr(self._trt, "__version__", None),
             "precision": self.plan.precision if self.plan else self.precision,
             "engine_cache_hit": self.cache_hit, "engine": str(self.engine_path) if self.engine_path else None}
        if self.plan:
            d["plan"] = self.plan.to_dict()
        if self.notes:
            d["notes"] = list(self.notes)
        return d

    def device_times(self) -> Optional[Dict[str, float]]:
        return self._times

    def for_batch(self, batch: int) -> "TrtRunner":
        """A runner whose engine takes batch ``batch`` (the ONNX model re-batched and proven on onnxruntime first).

        Raises:
            UnsupportedError: a serialized engine (no ONNX model to rebuild from) with another batch size, or
                a model that cannot run at ``batch``.
        """
        if self._meta is not None and all(
                s["shape"] and (s["shape"][0] == batch or not isinstance(s["shape"][0], int))
                for s in self._meta.values()):
            return self
        if self.model is None:
            raise UnsupportedError(f"a serialized engine cannot change its batch size to {batch}",
                                   path=self.path)
        from .ort import OrtRunner

        rebatched = OrtRunner(self.model).for_batch(batch).model
        clone = TrtRunner(rebatched, precision=self.precision, target=self.target, calibration=self.calibration,
                          sparse=self.sparse, dla_core=self.dla_core, shape_profiles=self.shape_profiles,
                          plugins=self.plugins, cache_dir=self.cache_dir if self.cache_dir else False,
                          workspace_mib=self.workspace_mib, device=self.device, verbose=self.verbose)
        clone.path = self.path
        return clone

    # ------------------------------------------------------------------ activate
    def _activate(self) -> None:
        trt = self._trt = require("tensorrt", "the TensorRT runner")
        cuda = self._cuda = require("pycuda.driver", "TensorRT device buffers")
        try:
            cuda.init()
            dev = cuda.Device(self.device)
            self._ctx = dev.retain_primary_context()  # TensorRT's runtime API uses the primary context
            self._ctx.push()
        except Exception as exc:  # noqa: BLE001 - pycuda raises its own LogicError/RuntimeError
            raise DeviceError(f"cannot open CUDA device {self.device}: {exc}") from exc
        try:
            self._open(trt, cuda, dev)
        except BaseException:
            self._deactivate()  # pop the CUDA context and free what was allocated, then report
            raise

    def _open(self, trt, cuda, dev) -> None:
        self._gpu = (dev.name(), tuple(dev.compute_capability()))
        self._logger = trt.Logger(trt.Logger.VERBOSE if self.verbose else trt.Logger.WARNING)
        self._load_plugins()
        engine_bytes = self._engine_bytes()
        runtime = trt.Runtime(self._logger)
        if self.dla_core is not None:
            runtime.DLA_core = int(self.dla_core)
        self._engine = runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise DeviceError("TensorRT could not deserialize the engine (built for another GPU or TensorRT "
                              "version?)", path=str(self.engine_path) if self.engine_path else None)
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        self._events = [cuda.Event() for _ in range(4)]
        self._bind_io()
        if any(d < 0 for io in self._io.values() if io["input"] for d in io["shape"]):
            # dynamic inputs: run on optimization profile 0; shapes are set per call in _infer
            getattr(self._context, self._calls.select_profile)(0, self._stream.handle)

    def _load_plugins(self) -> None:
        from ..plugins.build import load_plugin_library

        trt = self._trt
        trt.init_libnvinfer_plugins(self._logger, "")
        for lib in self.plugins:
            # TensorRT >= 10 registers the creators through IPluginRegistry.load_library (getCreators);
            # TensorRT 8 through the library's static registration when it is loaded globally
            load_plugin_library(str(lib))
        if self.plugins:
            self.notes.append(f"plugin libraries loaded: {', '.join(Path(p).name for p in self.plugins)}")

    def _engine_bytes(self) -> bytes:
        trt = self._trt
        if self.model is None:
            return self.engine_path.read_bytes()
        calib_bytes = None
        if self.calibration is not None:
            from ..devices import trt_version_tag

            calib_bytes, note = cache_bytes_for(self.calibration, trt_version_tag(trt.__version__))
            self.notes.append(note)
        builder = trt.Builder(self._logger)
        self.plan = plan_build(trt.__version__, self.precision, profile=self.target, has_qdq=_has_qdq(self.model),
                               has_calibration=calib_bytes is not None, sparse=self.sparse,
                               dla_core=self.dla_core, fast_fp16=_attr(builder, "platform_has_fast_fp16"),
                               fast_int8=_attr(builder, "platform_has_fast_int8"))
        self.notes.extend(self.plan.notes)
        key = engine_cache_key(
            trt_version=trt.__version__, gpu_name=self._gpu[0], compute_capability=self._gpu[1],
            precision=self.plan.precision, model_sha256=model_hash(self.model),
            options={"flags": list(self.plan.flags), "dla": self.dla_core,
                     "calib": sha256_bytes(calib_bytes) if calib_bytes else None,
                     "profiles": {k: [list(s) for s in v] for k, v in self.shape_profiles.items()},
                     "plugins": [sha256_file(p) for p in self.plugins]})
        if self.cache_dir is not None:
            stem = Path(self.path).stem if self.path else "model"
            self.engine_path = self.cache_dir / "engines" / f"{stem}-{self.plan.precision}-{key}.engine"
            if self.engine_path.exists():
                self.cache_hit = True
                return self.engine_path.read_bytes()
        data = self._build(builder, calib_bytes)
        if self.engine_path is not None:
            write_bytes_atomic(self.engine_path, data)
        return data

    def _build(self, builder, calib_bytes: Optional[bytes]) -> bytes:
        trt = self._trt
        plan = self.plan
        flags = 0
        if plan.explicit_batch_flag:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if plan.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        with contextlib.ExitStack() as stack:  # a temporary copy of a big in-memory model lives through the build
            self._parse(parser, stack)
            return self._build_network(builder, network, calib_bytes)

    def _parse(self, parser, stack: contextlib.ExitStack) -> None:
        """Parse the model into ``parser``'s network: from its file when it came from one (``parse_from_file``,
        TensorRT >= 8: external data is read relative to the file), from its bytes when it fits one protobuf,
        else from a copy saved with external data in a temporary folder.

        Raises:
            UnsupportedError: the parser rejects the model (its first errors named).
        """
        if self.onnx_file is not None:
            ok = parser.parse_from_file(self.onnx_file)
        elif fits_one_protobuf(self.model):
            ok = parser.parse(model_bytes(self.model))
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgesqueeze-trt-")))
            ok = parser.parse_from_file(str(save_model(self.model, tmp / "model.onnx", external=True)))
        if not ok:
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise UnsupportedError("TensorRT's ONNX parser rejects the model: " + ("; ".join(errors[:3]) or
                                   "no error recorded (rerun with verbose=True for its log)"), path=self.path)

    def _build_network(self, builder, network, calib_bytes: Optional[bytes]) -> bytes:
        trt = self._trt
        plan = self.plan
        config = builder.create_builder_config()
        if plan.workspace_api == "max_workspace_size":
            config.max_workspace_size = self.workspace_mib << 20
        else:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        for flag in plan.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if plan.dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(plan.dla_core)
        if plan.calibrator == "cache":
            self._calibrator = make_cache_calibrator(trt, calib_bytes)  # must outlive the build
            config.int8_calibrator = self._calibrator
        self._add_profiles(builder, network, config)
        timing_path = self._timing_cache_path()
        cache = config.create_timing_cache(timing_path.read_bytes() if timing_path and timing_path.exists() else b"")
        config.set_timing_cache(cache, False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UnsupportedError("TensorRT failed to build the engine (rerun with verbose=True for its log)",
                                   path=self.path)
        if timing_path:
            write_bytes_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)

    def _add_profiles(self, builder, network, config) -> None:
        """One optimization profile for the dynamic inputs: ``shape_profiles`` where given, else the default
        (:func:`~.trt_profile.default_profile`); INT8 calibrated from our cache gets the calibration profile."""
        specs = {}
        for i in range(network.num_inputs):
            t = network.get_input(i)
            specs[t.name] = {"shape": [d if d >= 0 else None for d in t.shape]}
        if not dynamic_inputs(specs):
            return
        given = {n: dict(zip(SELECTORS, shapes)) for n, shapes in self.shape_profiles.items() if n in specs}
        profile = dynamic_profile(specs, default_profile(specs, given=given))
        self.notes.append("optimization profile: " + "; ".join(profile_lines(profile)))
        config.add_optimization_profile(_trt_profile(builder, profile))
        if needs_calibration_profile(self.plan, True):
            config.set_calibration_profile(_trt_profile(builder, calibration_profile(profile)))

    def _timing_cache_path(self) -> Optional[Path]:
        if self.cache_dir is None:
            return None
        gpu = "".join(c if c.isalnum() else "_" for c in self._gpu[0])
        return self.cache_dir / "timing" / f"{gpu}-sm{''.join(map(str, self._gpu[1]))}-trt{self._trt.__version__}.cache"

    # ------------------------------------------------------------------ buffers
    def _bind_io(self) -> None:
        trt, eng = self._trt, self._engine
        self._io = {}
        if self.plan is None or self.plan.io_api == "tensors":
            tensors_api = hasattr(eng, "num_io_tensors")
        else:
            tensors_api = False
        self._tensors_api = tensors_api
        self._calls = context_plan(trt.__version__ if tensors_api else "8.2")
        if tensors_api:
            names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
            for idx, n in enumerate(names):
                self._io[n] = {"index": idx, "input": eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                               "dtype": np.dtype(trt.nptype(eng.get_tensor_dtype(n))),
                               "shape": tuple(eng.get_tensor_shape(n)), "host": None, "dev": None}
        else:
            for i in range(eng.num_bindings):
                n = eng.get_binding_name(i)
                self._io[n] = {"index": i, "input": eng.binding_is_input(i),
                               "dtype": np.dtype(trt.nptype(eng.get_binding_dtype(i))),
                               "shape": tuple(eng.get_binding_shape(i)), "host": None, "dev": None}
        if self._meta is None:
            self._meta = InputMetadata({n: {"shape": [d if d >= 0 else None for d in io["shape"]],
                                            "dtype": io["dtype"]} for n, io in self._io.items() if io["input"]})

    def _ensure(self, name: str, shape: tuple) -> dict:
        """Host buffer of ``shape``; the device buffer grows when a larger shape comes (a sweep reuses it)."""
        io = self._io[name]
        if io["host"] is None or io["host"].shape != shape:
            cuda = self._cuda
            io["host"] = cuda.pagelocked_empty(shape, io["dtype"])
            capacity = io.get("capacity", 0) if io["dev"] is not None else 0
            size = buffer_bytes(shape, io["dtype"].itemsize, capacity)
            if size != capacity:
                io["dev"], io["capacity"] = cuda.mem_alloc(size), size
            if self._tensors_api:
                self._context.set_tensor_address(name, int(io["dev"]))
        return io

    # ------------------------------------------------------------------ infer
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cuda, ctx, stream = self._cuda, self._context, self._stream
        e0, e1, e2, e3 = self._events
        for name, io in self._io.items():
            if io["input"]:
                arr = np.ascontiguousarray(feeds[name], dtype=io["dtype"])
                # set_input_shape(name, ...) from 8.5, set_binding_shape(index, ...) before (context_plan)
                getattr(ctx, self._calls.set_shape)(name if self._tensors_api else io["index"], arr.shape)
                np.copyto(self._ensure(name, arr.shape)["host"], arr)
        outputs = [n for n, io in self._io.items() if not io["input"]]
        for name in outputs:
            shape = tuple(ctx.get_tensor_shape(name) if self._tensors_api
                          else ctx.get_binding_shape(self._io[name]["index"]))
            self._ensure(name, shape)
        e0.record(stream)
        for name, io in self._io.items():
            if io["input"]:
                cuda.memcpy_htod_async(io["dev"], io["host"], stream)
        e1.record(stream)
        if self._tensors_api:
            ok = ctx.execute_async_v3(stream.handle)
        else:
            bindings = [0] * len(self._io)
            for io in self._io.values():
                bindings[io["index"]] = int(io["dev"])
            ok = ctx.execute_async_v2(bindings, stream.handle)
        if not ok:
            raise DeviceError("TensorRT failed to enqueue the inference")
        e2.record(stream)
        for name in outputs:
            cuda.memcpy_dtoh_async(self._io[name]["host"], self._io[name]["dev"], stream)
        e3.record(stream)
        e3.synchronize()
        self._times = {"h2d_ms": e1.time_since(e0), "compute_ms": e2.time_since(e1), "d2h_ms": e3.time_since(e2)}
        return {n: self._io[n]["host"].copy() for n in outputs}

    def _deactivate(self) -> None:
        self._io = {}
        self._context = self._engine = self._stream = None
        self._events = []
        if self._ctx is not None:
            try:
                self._ctx.pop()
                self._ctx.detach()
            finally:
                self._ctx = None


def _trt_profile(builder, profile):
    """A TensorRT ``IOptimizationProfile`` holding ``profile`` ({input: {min, opt, max}})."""
    p = builder.create_optimization_profile()
    for name, shapes in profile.items():
        p.set_shape(name, *(tuple(shapes[sel]) for sel in SELECTORS))
    return p


def _attr(obj, name):
    try:
        return bool(getattr(obj, name))
    except Exception:  # noqa: BLE001 - deprecated properties may raise on newer TensorRT
        return None
