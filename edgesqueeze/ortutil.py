"""Small helpers to run models on ONNX Runtime's CPU provider and compare outputs.

The full runner interface (activate / infer / deactivate, profiling) lives in
:mod:`edgesqueeze.backends`; this module is the low-level piece every stage uses
to prove a graph change numerically.
"""
from __future__ import annotations

import os
import re
import tempfile
import weakref
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from .errors import UnsupportedError, VerificationError
from .model import is_weight_stub, model_bytes, put_back_weights, split_weights, strip_weights, weight_array

ModelLike = Union[onnx.ModelProto, str, bytes]


def make_session(model: ModelLike, *, threads: Optional[int] = None, optimize: bool = False,
                 extra_outputs: Sequence[str] = (), session_options=None, shared: Optional["SharedWeights"] = None,
                 aliases: Optional[Mapping[str, str]] = None):
    """Create an onnxruntime CPU ``InferenceSession`` for ``model``.

    Args:
        model: a ModelProto, a path, or serialised bytes.
        threads: intra-op threads (None = onnxruntime's default).
        optimize: enable onnxruntime's graph optimizations (off by default so that what runs is what we wrote).
        extra_outputs: intermediate tensors to expose as extra graph outputs (model must be a ModelProto).
        session_options: a prepared ``onnxruntime.SessionOptions`` (then ``threads``/``optimize`` are ignored).
        shared: a :class:`SharedWeights` pool: the large weights of a ModelProto are read from it (decoded once,
            never copied by onnxruntime; sessions with graph optimizations off only).
        aliases: ``{weight name in model: name in the pool}`` for weights known to hold the same bytes as a
            weight the pool already has (another model's, e.g. the original of an optimized model).

    Raises:
        UnsupportedError: onnxruntime cannot load the model (the message says why).
    """
    import onnxruntime as ort

    weights = {}
    if shared is not None and isinstance(model, onnx.ModelProto) and not optimize and session_options is None:
        try:
            return shared.session(model, threads=threads, extra_outputs=extra_outputs, aliases=aliases)
        except Exception as exc:  # noqa: BLE001 - the copying path below gives onnxruntime's own error, or works
            if any(is_weight_stub(t) for t in model.graph.initializer):  # only the pool has those weights
                try:
                    model = shared.complete(model, aliases)
                except KeyError:
                    raise ort_error(exc, "onnxruntime cannot load the model") from exc
    if isinstance(model, onnx.ModelProto):  # large weights go to onnxruntime as arrays, never serialised
        model, weights = split_weights(model)
    if extra_outputs:
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(model) if isinstance(model, str) else onnx.load_from_string(model)
        model = expose_outputs(model, extra_outputs)
    so = session_options
    if so is None:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        if threads:
            so.intra_op_num_threads = int(threads)
    src = model_bytes(model) if isinstance(model, onnx.ModelProto) else model
    try:
        return _session(ort, src, so, weights)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        m = _IR_RE.search(str(exc))
        if m:  # a newer onnx wrote an IR version this onnxruntime does not know: the graph itself is fine
            proto = model if isinstance(model, onnx.ModelProto) else (
                onnx.load(model) if isinstance(model, str) else onnx.load_from_string(model))
            if proto.ir_version > int(m.group(1)):
                return _session(ort, model_bytes(with_ir_version(proto, int(m.group(1)))), so, weights)
        raise ort_error(exc, "onnxruntime cannot load the model") from exc


def _session(ort, src, so, weights):
    """An InferenceSession of ``src`` whose stub initializers take the arrays ``weights``.

    onnxruntime copies external initializers into the session (tests/test_big_models.py checks it), so the
    arrays are not kept: a session holds its weights once.
    """
    if weights:
        so.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()])
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


class SharedWeights:
    """Large weights of models verified against each other, handed to onnxruntime sessions without copies.

    Each weight is decoded once into an array (an ``OrtValue`` over it, ``SessionOptions.add_initializer``) that
    onnxruntime reads in place: the original model's weights are kept under their names, so that an optimized
    model's untouched weights (given as ``aliases``) share them; a candidate's new weights live as long as its
    session. Prepacking is off, so a session adds no copy of its own. The session's graph declares each large
    weight as external data in an empty placeholder file that onnxruntime never reads (the shared value
    overrides it).
    """

    def __init__(self) -> None:
        self._values: Dict[str, object] = {}
        self._tensors: Dict[str, onnx.TensorProto] = {}  # the pool model's own weights (references, no copies)
        self._folder = tempfile.mkdtemp(prefix="esq-weights-")
        open(os.path.join(self._folder, _PLACEHOLDER), "wb").close()
        self._cleanup = weakref.finalize(self, _remove_folder, self._folder)

    def retain(self, names) -> None:
        """Keep only the weights ``names`` in the pool (sessions still running keep theirs)."""
        keep = set(names)
        for name in [n for n in self._values if n not in keep]:
            del self._values[name]
        self._tensors = {k: v for k, v in self._tensors.items() if k in keep}

    def complete(self, model: onnx.ModelProto, aliases: Optional[Mapping[str, str]]) -> onnx.ModelProto:
        """A copy of ``model`` whose weight stubs (named in ``aliases``) hold the pool model's weights again, for
        a session made without the pool.

        Raises:
            KeyError: a stub the pool has no weight for.
        """
        out = onnx.ModelProto()
        out.CopyFrom(model)
        stubs = [t.name for t in out.graph.initializer if is_weight_stub(t)]
        if not put_back_weights(out, {n: self._tensors[(aliases or {}).get(n, n)] for n in stubs}):
            raise KeyError("a weight stub does not match the pool's weight")
        return out

    def close(self) -> None:
        """Release the arrays and the placeholder folder."""
        self._values.clear()
        self._tensors.clear()
        self._cleanup()

    def session(self, model: onnx.ModelProto, *, threads: Optional[int] = None, extra_outputs: Sequence[str] = (),
                aliases: Optional[Mapping[str, str]] = None):
        """An onnxruntime CPU session of ``model`` (graph optimizations off) reading its large weights from the
        pool (also the stubs of :func:`edgesqueeze.model.strip_weights` named in ``aliases``).

        ``aliases`` None: ``model`` is the pool's own model; its weights join the pool under their names (or
        are taken from it). Otherwise a weight named in ``aliases`` is read from the pool under its alias, and
        any other one is decoded for this session alone.
        """
        import onnxruntime as ort

        light, stripped = strip_weights(model)
        if aliases is None:
            self._tensors.update(stripped)
        own = {}
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.add_session_config_entry("session.disable_prepacking", "1")
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", self._folder)
        if threads:
            so.intra_op_num_threads = int(threads)
        for t in light.graph.initializer:
            if t.name not in stripped and not is_weight_stub(t):
                continue
            key = aliases.get(t.name) if aliases is not None else t.name
            value = self._values.get(key) if key is not None else None
            if value is None:
                source = stripped[t.name] if t.name in stripped else self._tensors[key]
                value = ort.OrtValue.ortvalue_from_numpy(weight_array(source))
                if aliases is None:
                    self._values[t.name] = value
            own[t.name] = value
            so.add_initializer(t.name, value)
            del t.external_data[:]
            t.external_data.add(key="location", value=_PLACEHOLDER)
        if extra_outputs:
            light = expose_outputs(light, extra_outputs)
        try:
            sess = ort.InferenceSession(model_bytes(light), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - as make_session: an IR version newer than onnxruntime's
            m = _IR_RE.search(str(exc))
            if not m or light.ir_version <= int(m.group(1)):
                raise
            light.ir_version = int(m.group(1))
            sess = ort.InferenceSession(model_bytes(light), so, providers=["CPUExecutionProvider"])
        sess._edgesqueeze_weights = own  # the session reads these arrays: they live as long as it does
        return sess


_PLACEHOLDER = "placeholder.bin"


def _remove_folder(folder: str) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


_IR_RE = re.compile(r"max supported IR version: (\d+)")
_NODE_RE = re.compile(r"node\. Name:'([^']*)'")


def ort_error_text(exc: BaseException) -> str:
    """onnxruntime's error message: its first line without the error-code prefix, source paths and C++ signatures."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"/onnxruntime_src/\S+ [\w:~]+\([^)]*\)\s*", "", text)
    return re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)


def ort_error(exc: BaseException, what: str, **where) -> UnsupportedError:
    """The error to raise for an onnxruntime exception (onnxruntime raises Fail, InvalidGraph, RuntimeException...).

    Returns ``UnsupportedError("<what>: <onnxruntime's message>")`` naming the node onnxruntime names;
    ``where`` (path, tensor, hint, node) is passed on. Use as ``raise ort_error(exc, "...") from exc``.
    """
    m = _NODE_RE.search(str(exc))
    if m and "node" not in where:
        where["node"] = m.group(1)
    return UnsupportedError(f"{what}: {ort_error_text(exc)}", **where)


def with_ir_version(model: onnx.ModelProto, ir_version: int) -> onnx.ModelProto:
    """Return a copy of ``model`` labelled with an older IR version (for runtimes that lag behind onnx)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.ir_version = ir_version
    return out


def expose_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """Return a copy of ``model`` whose graph also outputs the intermediate tensors ``names``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return out


def run_model(model: ModelLike, feeds: Mapping[str, np.ndarray], *, session=None,
              output_names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Run ``model`` once on ``feeds`` and return ``{output name: array}``."""
    sess = session or make_session(model)
    names = list(output_names) if output_names else [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(names, dict(feeds))
    except Exception as exc:  # noqa: BLE001 - onnxruntime run-time failures (bad shapes, kernel errors)
        raise ort_error(exc, "onnxruntime failed to run the model") from exc
    return dict(zip(names, values))


def compare_outputs(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> Dict[str, dict]:
    """Per-output error statistics: max/mean absolute error, max relative error (to the reference's scale).

    The relative error is ``max|a - r| / max(max|r|, tiny)``: robust where the reference crosses zero.
    """
    stats = {}
    for name, ref in reference.items():
        if name not in actual:
            stats[name] = {"missing": True}
            continue
        r = np.asarray(ref, dtype=np.float64)
        a = np.asarray(actual[name], dtype=np.float64)
        if r.shape != a.shape:
            stats[name] = {"shape_mismatch": [list(r.shape), list(a.shape)]}
            continue
        diff = np.abs(a - r)
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        finite = bool(np.all(np.isfinite(a)) == np.all(np.isfinite(r)))
        max_abs = float(np.max(diff)) if diff.size else 0.0
        stats[name] = {"max_abs": max_abs, "mean_abs": float(np.mean(diff)) if diff.size else 0.0,
                       "max_rel": max_abs / max(scale, 1e-12), "ref_scale": scale, "finite_match": finite}
    return stats


def assert_close(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], rtol: float = 1e-4,
                 what: str = "outputs") -> Dict[str, dict]:
    """Raise :class:`VerificationError` unless every output's relative error is within ``rtol``."""
    stats = compare_outputs(reference, actual)
    for name, s in stats.items():
        if s.get("missing") or s.get("shape_mismatch") or not s.get("finite_match", True) or s["max_rel"] > rtol:
            detail = ("missing" if s.get("missing") else f"shapes {s['shape_mismatch']}" if s.get("shape_mismatch")
                      else "non-finite values differ" if not s.get("finite_match", True)
                      else f"relative error {s['max_rel']:.3g} > {rtol:g}")
            raise VerificationError(f"{what} disagree: {detail}", tensor=name)
    return stats


def run_many(model: ModelLike, feeds_list: List[Mapping[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
    """Run ``model`` on each feed dict with one session."""
    sess = make_session(model)
    return [run_model(model, f, session=sess) for f in feeds_list]
