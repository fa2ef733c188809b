"""TensorRT's own kernels on the layers of ``edgesqueeze plugins bench``: the reference our CUDA kernels must beat.

For each MobileNet layer shape a one-layer network is built with the TensorRT network-definition API (no ONNX):

* ``dwsep``: 3x3 depthwise convolution (groups = C) + ReLU, then a 1x1 convolution C -> C, unfused — what TensorRT
  builds for the inlined ``DepthwiseSeparableConv`` (its tactics are cuDNN-style or its own fused kernels);
* ``pointwise-2:4`` / ``pointwise-csr``: the dense 1x1 convolution C -> C with the same (zero-holding) weights as
  the sparse kernels; for 2:4 also a build with sparse weights enabled (``BuilderFlag.SPARSE_WEIGHTS``, the
  ``--sparsity=enable`` of trtexec), whose sparse tensor cores exist from sm_80.

The engine is timed with CUDA events around ``iters`` enqueues after one warm-up, through ``torch.cuda`` when torch
sees a GPU, else pycuda (the ``trt`` extra). Version differences come from :mod:`edgesqueeze.backends.trt_plan`.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

from packaging.version import Version

from .. import _lazy
from ..backends.trt_plan import MEMPOOL_FROM, TRT10, context_plan, strongly_typed
from ..errors import EdgeSqueezeError, UnsupportedError

SPARSE_TENSOR_CORES_FROM = 80  # compute capability (x10) of the first GPUs with 2:4 sparse tensor cores


def network_flags(trt_version: str, dtype: str) -> List[str]:
    """The ``NetworkDefinitionCreationFlag`` names for a one-layer reference network of ``dtype``."""
    flags = [] if Version(trt_version) >= TRT10 else ["EXPLICIT_BATCH"]
    if dtype == "fp16" and strongly_typed(trt_version):
        flags.append("STRONGLY_TYPED")  # precision from the FP16 tensors and weights alone
    return flags


def builder_flags(trt_version: str, dtype: str, sparse_weights: bool) -> List[str]:
    """The ``BuilderFlag`` names: FP16 where the network is weakly typed, SPARSE_WEIGHTS for the 2:4 build."""
    flags = ["FP16"] if dtype == "fp16" and not strongly_typed(trt_version) else []
    return flags + (["SPARSE_WEIGHTS"] if sparse_weights else [])


def reference_jobs(layers: Sequence[tuple], dtypes: Sequence[str], ops: Sequence[str], sm: int) -> List[dict]:
    """Which engines to build: ``[{"layer", "c", "hw", "dtype", "op", "engine", "sparse_weights"}]`` (no INT8:
    the INT8 kernel's reference would need a calibrated engine; TensorRT's 2:4 build only on sm_80+)."""
    jobs = []
    for name, c, hw in layers:
        for dtype in dtypes:
            if dtype == "int8":
                continue
            for op in ops:
                jobs.append({"layer": name, "c": c, "hw": hw, "dtype": dtype, "op": op, "engine": "tensorrt",
                             "sparse_weights": False})
                if op == "pointwise-2:4" and sm >= SPARSE_TENSOR_CORES_FROM:
                    jobs.append({**jobs[-1], "engine": "tensorrt-sparse", "sparse_weights": True})
    return jobs


def _network(trt, builder, job: dict, weights: Callable[[str, int, int], object]):
    """The one-layer network of ``job``; ``weights(op, c, m)`` gives the 1x1 weight array (kept alive by caller)."""
    import numpy as np

    version = trt.__version__
    flags = 0
    for name in network_flags(version, job["dtype"]):
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    net = builder.create_network(flags)
    np_dtype = np.float16 if job["dtype"] == "fp16" else np.float32
    c, hw = job["c"], job["hw"]
    x = net.add_input("x", trt.float16 if job["dtype"] == "fp16" else trt.float32, (1, c, hw, hw))
    keep = []

    def w(a):
        keep.append(np.ascontiguousarray(a, dtype=np_dtype))
        return trt.Weights(keep[-1])

    rng = np.random.default_rng(0)
    src = x
    if job["op"] == "dwsep":
        dw = net.add_convolution_nd(x, c, (3, 3), w(rng.standard_normal((c, 1, 3, 3)) / 3), w(np.zeros(c)))
        dw.num_groups = c
        dw.padding_nd = (1, 1)
        src = net.add_activation(dw.get_output(0), trt.ActivationType.RELU).get_output(0)
    pw = net.add_convolution_nd(src, c, (1, 1), w(weights(job["op"], c, c)), w(np.zeros(c)))
    out = pw.get_output(0)
    out.name = "y"
    net.mark_output(out)
    if job["dtype"] == "fp16" and not strongly_typed(version):
        out.dtype = trt.float16  # FP16 in and out, as the plugin's FP16 kernels
    return net, keep


def _build_engine(trt, logger, job: dict, weights):
    builder = trt.Builder(logger)
    net, keep = _network(trt, builder, job, weights)
    config = builder.create_builder_config()
    if Version(trt.__version__) >= MEMPOOL_FROM:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 256 << 20)
    else:
        config.max_workspace_size = 256 << 20
    for flag in builder_flags(trt.__version__, job["dtype"], job["sparse_weights"]):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    serialized = builder.build_serialized_network(net, config)
    del keep
    if serialized is None:
        raise UnsupportedError(f"TensorRT could not build the reference {job['op']} {job['dtype']} {job['layer']}")
    return trt.Runtime(logger).deserialize_cuda_engine(serialized)


class _Cuda:
    """Device buffers, a stream and event timing through torch.cuda (when it sees a GPU) or pycuda."""

    def __init__(self):
        torch = _lazy.require("torch") if _lazy.available("torch") else None
        self.torch = torch if torch is not None and torch.cuda.is_available() else None
        if self.torch is None:
            _lazy.require("pycuda.autoinit", "timing the TensorRT reference")
            self.cuda = _lazy.require("pycuda.driver", "timing the TensorRT reference")
            self.stream = self.cuda.Stream()
        else:
            self.stream = self.torch.cuda.Stream()
        self.keep = []

    def alloc(self, nbytes: int) -> int:
        if self.torch is not None:
            self.keep.append(self.torch.empty(nbytes, dtype=self.torch.uint8, device="cuda"))
            return int(self.keep[-1].data_ptr())
        self.keep.append(self.cuda.mem_alloc(max(nbytes, 1)))
        return int(self.keep[-1])

    @property
    def handle(self) -> int:
        return int(self.stream.cuda_stream) if self.torch is not None else int(self.stream.handle)

    def time_ms(self, launch: Callable[[], None], iters: int) -> float:
        """Mean milliseconds of ``launch()`` over ``iters`` runs after one warm-up, by CUDA events."""
        launch()
        if self.torch is not None:
            start, stop = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        else:
            start, stop = self.cuda.Event(), self.cuda.Event()
        start.record(self.stream)
        for _ in range(iters):
            launch()
        stop.record(self.stream)
        stop.synchronize()
        return (start.elapsed_time(stop) if self.torch is not None else stop.time_since(start)) / iters


def _time_engine(trt, engine, cuda: _Cuda, job: dict, iters: int) -> float:
    context = engine.create_execution_context()
    elem = 2 if job["dtype"] == "fp16" else 4
    nbytes = job["c"] * job["hw"] * job["hw"] * elem
    ptrs = {"x": cuda.alloc(nbytes), "y": cuda.alloc(nbytes)}
    if context_plan(trt.__version__).io_api == "tensors":
        for name, ptr in ptrs.items():
            context.set_tensor_address(name, ptr)
        return cuda.time_ms(lambda: context.execute_async_v3(cuda.handle), iters)
    bindings = [ptrs[engine.get_binding_name(i)] for i in range(engine.num_bindings)]
    return cuda.time_ms(lambda: context.execute_async_v2(bindings, cuda.handle), iters)


def time_reference(layers: Sequence[tuple], dtypes: Sequence[str], ops: Sequence[str], sm: int, iters: int,
                   weights: Callable[[str, int, int], object]) -> dict:
    """Build and time TensorRT's reference engines on this GPU.

    Args:
        layers: ``[(name, C, HW)]``; dtypes: fp32 / fp16 (INT8 is skipped); ops: ``"dwsep"``,
            ``"pointwise-2:4"``, ``"pointwise-csr"``; sm: this GPU's compute capability x10 (80+: also the sparse
            2:4 build); weights: ``(op, C, M) -> [M, C, 1, 1]`` array of the 1x1 layer (the sparse kernels' own).

    Returns:
        ``{"engine": "TensorRT <version>", "skipped": None or the reason, "rows": [{"layer", "dtype", "op",
        "engine", "ms"}]}``: without TensorRT (or pycuda/torch for the timing) ``skipped`` says why and ``rows`` is
        empty; the kernels' own timings stand without the reference.
    """
    try:
        trt = _lazy.require("tensorrt", "the TensorRT reference of plugins bench")
        cuda = _Cuda()
    except EdgeSqueezeError as exc:
        return {"engine": None, "skipped": f"{exc.message} ({exc.hint})" if exc.hint else exc.message, "rows": []}
    logger = trt.Logger(trt.Logger.WARNING)
    rows = []
    for job in reference_jobs(layers, dtypes, ops, sm):
        engine = _build_engine(trt, logger, job, weights)
        ms = _time_engine(trt, engine, cuda, job, iters)
        rows.append({"layer": job["layer"], "dtype": job["dtype"], "op": job["op"], "engine": job["engine"],
                     "ms": round(ms, 5)})
    return {"engine": f"TensorRT {trt.__version__}", "skipped": None, "rows": rows}


def skipped_reference(reason: str) -> dict:
    """A reference section that was not run, with ``reason`` (e.g. ``--no-reference``)."""
    return {"engine": None, "skipped": reason, "rows": []}


__all__ = ["builder_flags", "network_flags", "reference_jobs", "skipped_reference", "time_reference"]
