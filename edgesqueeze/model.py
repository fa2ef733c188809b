"""Loading, validating and saving ONNX models.

``load_model`` is the single entry point every stage uses: it parses the file,
resolves external data, runs the full ONNX checker and shape inference, fixes
dynamic input dimensions from user-given shapes and, on request, converts old
opsets. ``save_model`` writes atomically and never overwrites the input.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import ModelProto, version_converter
from onnx.external_data_helper import _get_all_tensors, load_external_data_for_model  # noqa: PLC2701 - stable

from .errors import InputError, UnsupportedError
from .fileio import PathLike, atomic_path, refuse_overwrite, sha256_bytes

ShapeSpec = Mapping[Optional[str], Sequence[int]]
_TWO_GB = 2 ** 31 - 1
_SHAPE_RE = re.compile(r"^\d+(x\d+)*$")


# ----------------------------------------------------------------------------- shapes
def parse_shape(text: str) -> List[int]:
    """Parse ``"1x3x224x224"`` into ``[1, 3, 224, 224]``.

    Raises:
        InputError: the text is not a list of positive integers separated by ``x``.
    """
    text = text.strip().lower().replace(",", "x")
    if not _SHAPE_RE.match(text):
        raise InputError(f"bad shape '{text}': expected dimensions like 1x3x224x224")
    dims = [int(d) for d in text.split("x")]
    if any(d <= 0 for d in dims):
        raise InputError(f"bad shape '{text}': every dimension must be positive")
    return dims


def parse_input_shapes(specs: Union[None, str, Iterable[str]]) -> Dict[Optional[str], List[int]]:
    """Parse ``--input`` values: ``name:1x3x224x224`` or a bare ``1x3x224x224``.

    A bare shape is stored under the key ``None`` and applies to a model with one input.

    Raises:
        InputError: a shape cannot be parsed or a name is given twice.
    """
    if specs is None:
        return {}
    if isinstance(specs, str):
        specs = [specs]
    shapes: Dict[Optional[str], List[int]] = {}
    for spec in specs:
        for part in str(spec).split(";"):
            part = part.strip()
            if not part:
                continue
            name, sep, shape = part.rpartition(":")
            key = name if sep else None
            if key in shapes:
                raise InputError(f"input shape given twice for '{key or '<the only input>'}'")
            shapes[key] = parse_shape(shape)
    return shapes


def format_shape(dims: Sequence[Union[int, str, None]]) -> str:
    """Format a shape for messages: ``1x3xNx224`` (symbolic dims by name, unknown as ``?``)."""
    return "x".join("?" if d is None or d == "" else str(d) for d in dims)


def tensor_shape(value_info: onnx.ValueInfoProto) -> List[Union[int, str, None]]:
    """Return the dims of a value info: ints, symbolic names, or None when unknown."""
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return []
    out: List[Union[int, str, None]] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def graph_inputs(model: ModelProto) -> List[onnx.ValueInfoProto]:
    """Return the graph inputs that are real inputs (not initializers, as IR < 4 models list them)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_specs(model: ModelProto) -> Dict[str, dict]:
    """Return ``{name: {"shape": [...], "dtype": numpy dtype}}`` for the model's real inputs."""
    specs = {}
    for vi in graph_inputs(model):
        elem = vi.type.tensor_type.elem_type
        specs[vi.name] = {"shape": tensor_shape(vi), "dtype": np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))}
    return specs


def opset_version(model: ModelProto, domain: str = "") -> int:
    """Return the model's opset for ``domain`` ("" = ai.onnx), or 0 when not imported."""
    for op in model.opset_import:
        if op.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(op.version)
    return 0


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """Yield ``graph`` and every subgraph below it (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from iter_graphs(sub)


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Yield every node of ``graph`` and of its subgraphs."""
    for g in iter_graphs(graph):
        yield from g.node


# ----------------------------------------------------------------------------- loading
def _looks_like_text(data: bytes) -> bool:
    if data[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version, varint): not text
        return False
    head = data[:4096]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / max(1, len(head)) > 0.95


def _parse_bytes(path: Path) -> Tuple[ModelProto, bytes]:
    """Parse ``path``; return the model and the file's bytes (reused by the checker and shape inference)."""
    if not path.exists():
        raise InputError("no such file", path=str(path))
    if path.is_dir():
        raise InputError("is a directory, expected an .onnx file", path=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}", path=str(path)) from exc
    if not data:
        raise InputError("the file is empty, expected an ONNX model", path=str(path))
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (python) or RuntimeError (upb)
        if _looks_like_text(data):
            raise InputError("not an ONNX model: the file looks like text, not a protobuf model",
                             path=str(path)) from exc
        raise InputError(f"cannot parse the ONNX protobuf: the file is truncated or corrupt "
                         f"({len(data)} bytes read)", path=str(path)) from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        what = "text" if _looks_like_text(data) else "data"
        raise InputError(f"not an ONNX model: the file parses as {what} with no IR version or graph",
                         path=str(path))
    return model, data


def _external_tensors(model: ModelProto):
    for t in _get_all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            yield t


def _resolve_external_data(model: ModelProto, path: Path) -> None:
    base = path.parent
    needed = False
    for t in _external_tensors(model):
        needed = True
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        full = (base / loc).resolve()
        if not loc or not full.exists():
            raise InputError(f"external data file '{loc}' is missing", path=str(path), tensor=t.name,
                             hint=f"it must sit next to the model in {base}")
    if needed:
        try:
            load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise InputError(f"cannot read external data: {exc}", path=str(path)) from exc


def _error_node(model: ModelProto, text: str) -> Optional[str]:
    m = re.search(r"node \(([^)]*)\)|Node \(([^)]*)\)|node name: ([^\s,)]+)", text)
    if m:
        return next(g for g in m.groups() if g)
    for n in model.graph.node:
        if n.name and n.name in text:
            return n.name
    return None


def _check_model(model: Union[ModelProto, bytes]) -> None:
    """``onnx.checker.check_model(model, full_check=True)``; bytes skip a re-serialisation (proto fallback)."""
    if isinstance(model, bytes):
        try:
            onnx.checker.check_model(model, full_check=True)
            return
        except (TypeError, AttributeError):  # an onnx whose checker takes no bytes: parse and check the proto
            model = onnx.load_from_string(model)
    onnx.checker.check_model(model, full_check=True)


def _check(model: ModelProto, path: Path, data: Optional[bytes] = None) -> Optional[ModelProto]:
    """Run the full checker on ``model``; ``data`` are its serialised bytes when they are known to match.

    Returns the shape-inferred model when the retry below had to compute it from ``data`` (so the
    caller can reuse it), else None.
    """
    if not model.graph.output:
        raise InputError("the graph has no outputs", path=str(path))
    inferred = None
    try:
        size = len(data) if data is not None else model.ByteSize()
        if size > _TWO_GB:
            onnx.checker.check_model(str(path), full_check=True)
        else:
            try:
                _check_model(data if data is not None else model)
            except onnx.checker.ValidationError as exc:
                # outputs declared without a shape are valid ONNX; newer checkers want one: infer it, check again
                if "Field 'shape' of 'type' is required" not in str(exc):
                    raise
                if data is not None:
                    inferred = _infer_shapes_bytes(data, model)
                    _check_model(inferred)
                else:
                    _check_model(infer_shapes(model))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the ONNX checker rejects the model: {text}", path=str(path),
                         node=_error_node(model, str(exc))) from exc
    return inferred


def _apply_shapes(model: ModelProto, shapes: ShapeSpec, path: Path, require_static: bool) -> bool:
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    shapes = dict(shapes)
    if None in shapes:
        if len(inputs) != 1:
            raise InputError(f"a bare --input shape needs a model with one input; this one has {len(inputs)}: "
                             f"{', '.join(names)}", path=str(path), hint="use --input name:1x3x224x224")
        shapes[names[0]] = shapes.pop(None)
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise InputError(f"no graph input named '{unknown[0]}'; the inputs are: {', '.join(names)}", path=str(path))
    changed = False
    for vi in inputs:
        dims = tensor_shape(vi)
        given = shapes.get(vi.name)
        if given is not None:
            if dims and len(dims) != len(given):
                raise InputError(f"shape {format_shape(given)} has rank {len(given)}, the model's input has rank "
                                 f"{len(dims)} ({format_shape(dims)})", path=str(path), tensor=vi.name)
            for have, want in zip(dims, given):
                if isinstance(have, int) and have != want:
                    raise InputError(f"shape {format_shape(given)} conflicts with the model's fixed shape "
                                     f"{format_shape(dims)}", path=str(path), tensor=vi.name)
            shape_proto = vi.type.tensor_type.shape
            del shape_proto.dim[:]
            for d in given:
                shape_proto.dim.add().dim_value = int(d)
            changed = changed or dims != list(given)
        elif require_static:
            dyn = [d for d in dims if not isinstance(d, int)]
            if dyn or not vi.type.tensor_type.HasField("shape"):
                label = dyn[0] if dyn and dyn[0] else "?"
                example = "x".join(str(d) if isinstance(d, int) else "1" for d in dims) or "1x3x224x224"
                raise InputError(f"dynamic dimension '{label}' in shape {format_shape(dims)} has no value",
                                 path=str(path), tensor=vi.name, hint=f"give it with --input {vi.name}:{example}")
    return changed


def infer_shapes(model: ModelProto) -> ModelProto:
    """Run ONNX shape inference (with data propagation) and return the inferred model.

    Falls back to the model unchanged when inference itself fails on an exotic op.
    """
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort here; the checker already ran
        return model


def _infer_shapes_bytes(data: bytes, model: ModelProto) -> ModelProto:
    """:func:`infer_shapes` of ``model`` computed from its serialised bytes ``data`` (no re-serialisation).

    Falls back to ``model`` unchanged when inference fails, like :func:`infer_shapes`.
    """
    try:
        return onnx.shape_inference.infer_shapes(data, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort here; the checker already ran
        return model


def load_model(path: PathLike, input_shapes: Optional[ShapeSpec] = None, *, opset: Optional[int] = None,
               check: bool = True, require_static: bool = True) -> ModelProto:
    """Load and validate an ONNX model.

    Args:
        path: the ``.onnx`` file. External-data files are resolved relative to it.
        input_shapes: shapes for dynamic inputs, ``{name: [dims]}`` (key ``None`` for a model with one input),
            as returned by :func:`parse_input_shapes`.
        opset: when given and the model's ai.onnx opset is lower, convert it with onnx's version converter.
        check: run the full ONNX checker.
        require_static: fail when an input still has a dynamic dimension after ``input_shapes`` are applied.

    Returns:
        The validated model with inferred shapes (``value_info`` filled in).

    Raises:
        InputError: missing, unreadable, truncated or non-ONNX file; missing external data; a graph without
            outputs; a checker failure; a dynamic input dimension without a given shape.
        UnsupportedError: the opset conversion failed.
    """
    path = Path(path)
    model, data = _parse_bytes(path)
    if next(_external_tensors(model), None) is not None:
        _resolve_external_data(model, path)
        data = None  # the file's bytes no longer describe the model
    inferred = None
    if check:
        inferred = _check(model, path, data)
    elif not model.graph.output:
        raise InputError("the graph has no outputs", path=str(path))
    if opset is not None and 0 < opset_version(model) < opset:
        model = convert_opset(model, opset, path=str(path))
        data = inferred = None
    before = [vi.SerializeToString(deterministic=True) for vi in model.graph.input] if input_shapes else None
    changed = _apply_shapes(model, input_shapes or {}, path, require_static)
    if before is not None and before != [vi.SerializeToString(deterministic=True) for vi in model.graph.input]:
        data = inferred = None  # given shapes rewrote the inputs
    if data is not None:  # the model is still exactly the file: infer from its bytes, no re-serialisation
        return inferred if inferred is not None else _infer_shapes_bytes(data, model)
    if changed:
        del model.graph.value_info[:]
        for out in model.graph.output:
            # outputs may carry stale symbolic dims; let inference recompute them
            tt = out.type.tensor_type
            if tt.HasField("shape") and any(not isinstance(d, int) for d in tensor_shape(out)):
                tt.ClearField("shape")
    return infer_shapes(model)


def convert_opset(model: ModelProto, opset: int, path: Optional[str] = None) -> ModelProto:
    """Convert ``model`` to ai.onnx ``opset`` with onnx's version converter.

    Raises:
        UnsupportedError: the converter cannot convert one of the model's ops.
    """
    try:
        converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted)
    except Exception as exc:  # noqa: BLE001 - the converter raises a bare RuntimeError
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedError(f"cannot convert the model from opset {opset_version(model)} to {opset}: {text}",
                               path=path) from exc
    return converted


# ----------------------------------------------------------------------------- saving
def _tensor_payload(model: ModelProto) -> int:
    """A cheap lower bound of the model's serialised size: the bytes of its tensors' data."""
    total = 0
    for t in _get_all_tensors(model):
        total += len(t.raw_data) + 4 * (len(t.float_data) + len(t.int32_data)) + 8 * (
            len(t.int64_data) + len(t.double_data) + len(t.uint64_data))
    return total


def _serialise_if_small(model: ModelProto) -> Optional[bytes]:
    """Return ``model_bytes(model)`` when the model fits in one protobuf (<= 2 GB), else None.

    Serialises once instead of ``ByteSize()`` + serialise (upb computes ``ByteSize`` by encoding).
    The decision is the same as ``model.ByteSize() <= 2 GB``: the tensor payload is a lower bound of
    the size, and the serialised length is the size.
    """
    if _tensor_payload(model) > _TWO_GB:
        return None
    try:
        data = model_bytes(model)
    except Exception:  # noqa: BLE001 - protobuf refuses to encode > 2 GB (the error type varies by backend)
        if model.ByteSize() > _TWO_GB:
            return None
        raise
    return data if len(data) <= _TWO_GB else None


def model_bytes(model: ModelProto) -> bytes:
    """Serialise ``model`` deterministically."""
    return model.SerializeToString(deterministic=True)


def model_hash(model: Union[ModelProto, PathLike]) -> str:
    """Return the sha256 of a model's serialised bytes (or of a model file)."""
    if isinstance(model, ModelProto):
        return sha256_bytes(model_bytes(model))
    return sha256_bytes(Path(model).read_bytes())


def save_model(model: ModelProto, path: PathLike, *, inputs: Sequence[Optional[PathLike]] = ()) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + rename).

    Args:
        model: the model to write.
        path: destination ``.onnx`` path; its directory is created if needed.
        inputs: paths that must not be overwritten (the models the output was made from).

    Returns:
        The written path.

    Raises:
        InputError: ``path`` names one of ``inputs``, or it cannot be written.
    """
    path = Path(path)
    refuse_overwrite(path, *[p for p in inputs if p])
    try:
        data = _serialise_if_small(model)
        if data is not None:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
        else:  # protobuf cannot hold > 2 GB: weights go to <name>.data next to the model
            located = [t.HasField("data_location") for t in _get_all_tensors(model)]
            with atomic_path(path) as tmp:
                onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=path.name + ".data")
            # onnx.save_model moved the weights out of ``model`` itself: read them back, so that the caller's
            # model is as it was (a copy before saving would hold > 2 GB twice)
            load_external_data_for_model(model, str(path.parent))
            for t, had in zip(_get_all_tensors(model), located):
                if not had:
                    t.ClearField("data_location")
    except OSError as exc:
        raise InputError(f"cannot write the model: {exc.strerror}", path=str(path)) from exc
    return path


# ----------------------------------------------------------------------------- data
def random_feeds(model: ModelProto, seed: int = 0, *, low: float = -1.0, high: float = 1.0,
                 batches: int = 1) -> List[Dict[str, np.ndarray]]:
    """Return ``batches`` seeded random feed dicts for the model's inputs (static shapes required).

    Floating inputs are uniform in ``[low, high)``, integer inputs in ``[0, 10)``, booleans random.

    Raises:
        InputError: an input has a dynamic dimension.
    """
    rng = np.random.default_rng(seed)
    feeds = []
    specs = input_specs(model)
    for _ in range(batches):
        feed = {}
        for name, spec in specs.items():
            shape = spec["shape"]
            if any(not isinstance(d, int) for d in shape):
                raise InputError(f"dynamic dimension in {format_shape(shape)}", tensor=name,
                                 hint=f"give it with --input {name}:1x...")
            dt = spec["dtype"]
            if np.issubdtype(dt, np.floating):
                feed[name] = rng.uniform(low, high, size=shape).astype(dt)
            elif dt == np.bool_:
                feed[name] = rng.integers(0, 2, size=shape).astype(np.bool_)
            else:
                feed[name] = rng.integers(0, 10, size=shape).astype(dt)
        feeds.append(feed)
    return feeds
