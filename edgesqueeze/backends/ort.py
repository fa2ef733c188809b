"""ONNX Runtime runner (CPU execution provider): the embedded default and the reference backend."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import numpy as np
import onnx

from ..errors import InputError, UnsupportedError
from ..model import input_specs, infer_shapes, load_model, model_hash
from ..ortutil import ort_error
from .base import InputMetadata, Runner

OPT_LEVELS = ("disable", "basic", "extended", "all")


class OrtRunner(Runner):
    """Run an ONNX model on onnxruntime's CPU provider.

    Args:
        model: a ModelProto or a path to an ``.onnx`` file.
        threads: intra-op threads (None: onnxruntime's default, one per physical core).
        optimization: graph optimization level, one of ``disable`` (default: what runs is what we wrote),
            ``basic``, ``extended``, ``all``.
        profile_layers: record onnxruntime's per-node profile; read it with :meth:`layer_profile`.
        inter_op_threads: inter-op threads (only matters for parallel execution mode).

    Raises:
        InputError: the model file cannot be loaded; a bad option value.
    """

    name = "ort"

    def __init__(self, model: Union[onnx.ModelProto, str, os.PathLike], *, threads: Optional[int] = None,
                 optimization: str = "disable", profile_layers: bool = False,
                 inter_op_threads: Optional[int] = None) -> None:
        super().__init__()
        if isinstance(model, onnx.ModelProto):
            self.model, self.path = model, None
        else:
            self.path = str(model)
            self.model = load_model(model, require_static=False)
        if optimization not in OPT_LEVELS:
            raise InputError(f"unknown onnxruntime optimization level '{optimization}'; "
                             f"choose one of {', '.join(OPT_LEVELS)}")
        if threads is not None and int(threads) < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        self.threads = None if threads is None else int(threads)
        self.inter_op_threads = inter_op_threads
        self.optimization = optimization
        self.profile_layers = profile_layers
        self._session = None
        self._profile_dir: Optional[str] = None
        self._output_names: List[str] = []
        self._meta = InputMetadata(input_specs(self.model))

    # ------------------------------------------------------------------ interface
    def input_metadata(self) -> InputMetadata:
        return self._meta

    def describe(self) -> dict:
        import onnxruntime as ort

        precision = "int8" if any(n.op_type in ("QuantizeLinear", "QLinearConv", "MatMulInteger")
                                  for n in self.model.graph.node) else (
            "fp16" if _has_fp16(self.model) else "fp32")
        return {"name": self.name, "version": ort.__version__, "precision": precision,
                "provider": "CPUExecutionProvider", "threads": self.threads, "optimization": self.optimization}

    def for_batch(self, batch: int) -> "OrtRunner":
        """A runner for the same model with every input's first dimension set to ``batch``.

        The re-batched model (see :func:`with_batch`) is proven on seeded random inputs: its outputs must
        match running the original model once per sample (relative error <= 1e-4).

        Raises:
            UnsupportedError: the model cannot run at ``batch`` or gives different answers there.
        """
        meta = self.input_metadata()
        if all(spec["shape"] and (spec["shape"][0] == batch or not isinstance(spec["shape"][0], int))
               for spec in meta.values()):
            return self
        clone = OrtRunner(with_batch(self.model, batch), threads=self.threads, optimization=self.optimization,
                          profile_layers=self.profile_layers, inter_op_threads=self.inter_op_threads)
        clone.path = self.path
        _verify_batched(self, clone, batch)
        return clone

    def model_sha256(self) -> str:
        """sha256 of the model file (or of the serialised ModelProto)."""
        return model_hash(self.path) if self.path else model_hash(self.model)

    # ------------------------------------------------------------------ lifecycle
    def _activate(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 4  # errors are raised with their message, not logged
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[self.optimization]
        if self.threads:
            so.intra_op_num_threads = self.threads
        if self.inter_op_threads:
            so.inter_op_num_threads = int(self.inter_op_threads)
        if self.profile_layers:
            self._profile_dir = tempfile.mkdtemp(prefix="edgesqueeze-ortprof-")
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(self._profile_dir, "ort")
        from ..ortutil import make_session

        try:  # make_session also copes with IR versions newer than this onnxruntime knows
            self._session = make_session(self.model, session_options=so)
        except UnsupportedError as exc:
            raise UnsupportedError(exc.message, path=self.path) from exc
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            values = self._session.run(self._output_names, feeds)
        except Exception as exc:  # noqa: BLE001
            raise ort_error(exc, "onnxruntime failed to run the model", path=self.path) from exc
        return dict(zip(self._output_names, values))

    def _deactivate(self) -> None:
        self._session = None
        if self._profile_dir:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
            self._profile_dir = None

    # ------------------------------------------------------------------ profiling
    def layer_profile(self) -> List[dict]:
        """Stop onnxruntime's profiler and return per-node timings, slowest first.

        Returns:
            ``[{"name", "op", "count", "total_us", "mean_us", "percent"}]`` aggregated over every run so far.

        Raises:
            UnsupportedError: the runner was created without ``profile_layers=True`` or is not active.
        """
        if not (self.profile_layers and self._session is not None):
            raise UnsupportedError("per-layer profiling needs OrtRunner(..., profile_layers=True) and an "
                                   "active runner")
        path = self._session.end_profiling()
        return parse_ort_profile(path)


def parse_ort_profile(path: Union[str, os.PathLike]) -> List[dict]:
    """Aggregate an onnxruntime profile (Chrome trace JSON) into per-node kernel times (``*_kernel_time`` events).

    Raises:
        InputError: the file is not an onnxruntime profile.
    """
    try:
        events = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the onnxruntime profile: {exc}", path=str(path)) from exc
    agg: Dict[str, dict] = {}
    for ev in events if isinstance(events, list) else []:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        rec = agg.setdefault(name, {"name": name, "op": ev.get("args", {}).get("op_name", ""), "count": 0,
                                    "total_us": 0.0, "_durs": []})
        rec["count"] += 1
        rec["total_us"] += float(ev.get("dur", 0))
        rec["_durs"].append(float(ev.get("dur", 0)))
    out = []
    for r in agg.values():
        r["mean_us"] = r["total_us"] / max(1, r["count"])
        r["median_us"] = float(np.median(r.pop("_durs")))
        out.append(r)
    # medians and shares of their sum: one preempted run on a busy machine does not reorder the layers
    total = sum(r["median_us"] for r in out) or 1.0
    for r in out:
        r["percent"] = 100.0 * r["median_us"] / total
    out.sort(key=lambda r: (-r["median_us"], r["name"]))
    return out


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """Return a copy of ``model`` whose inputs' first dimension is ``batch`` (shapes re-inferred).

    Exporters often bake the batch size into a ``Reshape`` target (``[1, 1024]``); a constant Reshape
    shape whose first entry equals the old batch, used by Reshapes only, is rewritten to ``batch``.
    :meth:`OrtRunner.for_batch` proves the result against per-sample runs of the original model.

    Raises:
        UnsupportedError: an input is a scalar (no batch dimension).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    old = None
    for vi in out.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not len(dims):
            raise UnsupportedError(f"input '{vi.name}' has no batch dimension; cannot run at batch {batch}")
        if dims[0].HasField("dim_value"):
            old = old or dims[0].dim_value
        dims[0].Clear()
        dims[0].dim_value = int(batch)
    if old:
        users: Dict[str, set] = {}
        for n in out.graph.node:
            for i in n.input:
                users.setdefault(i, set()).add(n.op_type)
        for n in out.graph.node:
            if n.op_type != "Reshape" or len(n.input) < 2 or n.input[1] not in inits:
                continue
            t = inits[n.input[1]]
            if users.get(t.name) != {"Reshape"}:
                continue
            shape = onnx.numpy_helper.to_array(t)
            if shape.ndim == 1 and shape.size and shape[0] == old:
                shape = shape.copy()
                shape[0] = batch
                t.CopyFrom(onnx.numpy_helper.from_array(shape, t.name))
    del out.graph.value_info[:]
    for o in out.graph.output:
        o.type.tensor_type.ClearField("shape")
    return infer_shapes(out)


def _verify_batched(single: "OrtRunner", batched: "OrtRunner", batch: int) -> None:
    from ..model import random_feeds
    from ..ortutil import assert_close
    from ..errors import VerificationError

    feeds = random_feeds(batched.model, seed=0)[0]
    one = OrtRunner(single.model, threads=single.threads)
    with one, OrtRunner(batched.model, threads=single.threads) as many:
        got = many.infer(feeds)
        first = {k: int(s["shape"][0]) for k, s in single.input_metadata().items()}
        parts = [one.infer({k: v[i * first[k]:(i + 1) * first[k]] for k, v in feeds.items()})
                 for i in range(batch // max(first.values()))]
    ref = {k: np.concatenate([p[k] for p in parts], axis=0) for k in got}
    try:
        assert_close(ref, got, rtol=1e-4, what=f"batch {batch} vs per-sample outputs")
    except VerificationError as exc:
        raise UnsupportedError(f"the model cannot run at batch {batch}: {exc.message}", path=single.path) from exc


def _has_fp16(model: onnx.ModelProto) -> bool:
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
