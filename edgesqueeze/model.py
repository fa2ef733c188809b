"""Loading, validating and saving ONNX models.

``load_model`` is the single entry point every stage uses: it parses the file,
resolves external data, runs the full ONNX checker and shape inference, fixes
checks ``--input`` shapes (pinning them only with ``--static``) and, on request,
converts old opsets. Dynamic dimensions are kept; :func:`concrete_input_shapes` is the one rule
for the concrete shapes that checks need. ``save_model`` writes atomically and never overwrites the input.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import ModelProto, version_converter
from onnx.external_data_helper import _get_all_tensors, load_external_data_for_model  # noqa: PLC2701 - stable

from .errors import InputError, UnsupportedError
from .fileio import PathLike, atomic_path, refuse_overwrite, sha256_bytes, sha256_file, write_bytes_atomic
from .protowire import fields, length_field, split_fields

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
def regular_file_size(path: PathLike, what: str = "an .onnx file") -> int:
    """Return the size of the regular file ``path``, checked with ``stat`` before anything opens it.

    A FIFO would block a reader forever and a device (``/dev/zero``) would be read until memory runs out.

    Raises:
        InputError: ``path`` is missing, a directory, or not a regular file (FIFO, device, socket).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError("no such file", path=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}", path=str(path)) from exc
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"is a directory, expected {what}", path=str(path))
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"not a regular file (a FIFO, device or socket), expected {what}", path=str(path))
    return int(st.st_size)


def _check_model_size(path: Path) -> None:
    """Refuse an input model file that protobuf cannot parse (over 2 GB), before reading it."""
    size = regular_file_size(path)
    if size > _TWO_GB:
        raise InputError(f"the file holds {size} bytes; one ONNX protobuf is limited to 2 GB",
                         path=str(path), hint="save the weights as external data (onnx.save_model(..., "
                                              "save_as_external_data=True)) and load that model")


def _looks_like_text(data: bytes) -> bool:
    if data[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version, varint): not text
        return False
    head = data[:4096]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / max(1, len(head)) > 0.95


def _foreign_format(data: bytes, path: Path) -> Optional[InputError]:
    """The error for a file that is recognisably something else than ONNX (no ONNX file starts with these bytes):
    a PyTorch checkpoint (a zip holding data.pkl, or a legacy pickle), another zip, a gzip/tar archive."""
    export = (f"export it to ONNX first: edgesqueeze export net.py:make_model --weights {path.name} "
              f"--input 1x3x224x224 -o net.onnx")
    if data[:4] == b"PK\x03\x04":
        if b"data.pkl" in data[:1 << 16] or path.suffix.lower() in (".pt", ".pth"):
            return InputError("this is a PyTorch checkpoint (torch.save zip), not an ONNX model", path=str(path),
                              hint=export)
        return InputError("this is a zip archive, not an ONNX model", path=str(path),
                          hint="unzip it and give the .onnx file inside")
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return InputError("this is a Python pickle (a legacy PyTorch checkpoint?), not an ONNX model",
                          path=str(path), hint=export)
    if data[:2] == b"\x1f\x8b":
        return InputError("this is a gzip-compressed file (a .tar.gz archive, e.g. a bundle), not an ONNX model",
                          path=str(path), hint=f"extract it first (tar xzf {path.name}) and give the .onnx inside")
    if len(data) > 262 and data[257:262] == b"ustar":
        return InputError("this is a tar archive, not an ONNX model", path=str(path),
                          hint=f"extract it first (tar xf {path.name}) and give the .onnx inside")
    return None


def _parse_bytes(path: Path) -> Tuple[ModelProto, bytes]:
    """Parse ``path``; return the model and the file's bytes (reused by the checker and shape inference)."""
    _check_model_size(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}", path=str(path)) from exc
    if not data:
        raise InputError("the file is empty, expected an ONNX model", path=str(path))
    foreign = _foreign_format(data, path)
    if foreign is not None:
        raise foreign
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


def _check_external_files(model: ModelProto, path: Path) -> bool:
    """Raise InputError naming the tensor whose external-data file is missing or not a regular file;
    return whether the model has external data."""
    needed = False
    for t in _external_tensors(model):
        needed = True
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        full = (path.parent / loc).resolve()
        if not loc or not full.exists():
            raise InputError(f"external data file '{loc}' is missing", path=str(path), tensor=t.name,
                             hint=f"it must sit next to the model in {path.parent}")
        regular_file_size(full, "an external-data file")
    return needed


def _resolve_external_data(model: ModelProto, path: Path) -> None:
    if _check_external_files(model, path):
        try:
            load_external_data_for_model(model, str(path.parent))
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


#: models with more bytes of weights are checked without them (:func:`_check_light`)
_LIGHT_CHECK_BYTES = 16 << 20


def _check_light(model: ModelProto, data: bytes) -> None:
    """The full checker on ``model`` with its large weights declared as graph inputs (no copy of them for the
    checker), after the checker's own test of those weights: the size of each one's ``raw_data`` (read from the
    serialised ``data``, the model's bytes) must match its shape and type."""
    for t, size in zip(model.graph.initializer, _raw_sizes(data)):
        want = raw_nbytes(t)
        if want > INLINE_WEIGHT_BYTES and size != want:
            raise onnx.checker.ValidationError(
                f"TensorProto (tensor name: {t.name}) raw_data size ({size} bytes) does not match the declared "
                f"shape and type ({want} bytes required).")
    light = _weights_as_inputs(model)
    try:
        _check_model(light)
    except onnx.checker.ValidationError as exc:
        if "Field 'shape' of 'type' is required" not in str(exc):  # outputs without a shape are valid ONNX
            raise
        _check_model(infer_shapes(light))


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
        elif data is not None and _tensor_payload(model) > _LIGHT_CHECK_BYTES:
            _check_light(model, data)
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


def _check_corrupt(model: ModelProto, path: Path, data: Optional[bytes]) -> Optional[ModelProto]:
    """:func:`_check`, where the checker's own failures on a corrupt file (bad UTF-8 in a name, a C++ error)
    become an :class:`InputError` naming the file."""
    try:
        return _check(model, path, data)
    except (UnicodeError, RuntimeError, ValueError, IndexError, OverflowError) as exc:
        raise InputError(f"the ONNX checker cannot read the model, the file is corrupt: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}", path=str(path)) from exc


def _load_external(model: ModelProto, path: Path, data: bytes, check: bool) -> Optional[ModelProto]:
    """Give ``model`` (parsed from ``data``, the file's bytes) its external data, checked.

    Whatever the size, nothing is serialised: the checker reads the path (``onnx.checker.check_model(path)``),
    shape inference the file's own bytes (without weights), and the inferred model, given its weights, is
    returned (issue 15: a 1.7 GB model no longer needs four times its size to load).
    """
    _check_external_files(model, path)
    if not model.graph.output:
        raise InputError("the graph has no outputs", path=str(path))
    try:
        if check:
            onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        if "Field 'shape' of 'type' is required" not in str(exc):  # outputs without a shape are valid ONNX
            raise InputError(f"the ONNX checker rejects the model: {str(exc).strip().splitlines()[0]}",
                             path=str(path), node=_error_node(model, str(exc))) from exc
    except (onnx.shape_inference.InferenceError, UnicodeError, RuntimeError, ValueError) as exc:
        raise InputError(f"the ONNX checker cannot check the model: {exc}", path=str(path)) from exc
    inferred = _infer_shapes_bytes(data, model)
    _resolve_external_data(inferred, path)
    return inferred


def _named_shapes(model: ModelProto, shapes: Optional[ShapeSpec], path: Optional[Path] = None) -> Dict[str, List[int]]:
    """``--input`` shapes keyed by input name, checked against the model (names, rank, fixed dims)."""
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    shapes = dict(shapes or {})
    where = str(path) if path is not None else None
    if None in shapes:
        if len(inputs) != 1:
            raise InputError(f"a bare --input shape needs a model with one input; this one has {len(inputs)}: "
                             f"{', '.join(names)}", path=where, hint="use --input name:1x3x224x224")
        shapes[names[0]] = shapes.pop(None)
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise InputError(f"no graph input named '{unknown[0]}'; the inputs are: {', '.join(names)}", path=where)
    for vi in inputs:
        dims, given = tensor_shape(vi), shapes.get(vi.name)
        if given is None:
            continue
        if dims and len(dims) != len(given):
            raise InputError(f"shape {format_shape(given)} has rank {len(given)}, the model's input has rank "
                             f"{len(dims)} ({format_shape(dims)})", path=where, tensor=vi.name)
        for have, want in zip(dims, given):
            if isinstance(have, int) and have != want:
                raise InputError(f"shape {format_shape(given)} conflicts with the model's fixed shape "
                                 f"{format_shape(dims)}", path=where, tensor=vi.name)
    return {k: [int(d) for d in v] for k, v in shapes.items()}


def _pin_shapes(model: ModelProto, shapes: Dict[str, List[int]]) -> bool:
    """Write ``shapes`` into the model's inputs (``--static``); True when an input changed."""
    changed = False
    for vi in graph_inputs(model):
        given = shapes.get(vi.name)
        if given is None:
            continue
        changed = changed or tensor_shape(vi) != list(given)
        shape_proto = vi.type.tensor_type.shape
        del shape_proto.dim[:]
        for d in given:
            shape_proto.dim.add().dim_value = int(d)
    return changed


def nonfinite_initializers(model: ModelProto) -> List[Tuple[str, str]]:
    """``(name, "NaN" | "Inf")`` of the floating-point initializers that hold NaN (listed first) or Inf: the usual
    cause of a model whose outputs are NaN for any input (an Inf alone may be deliberate: attention masks)."""
    nan, inf = [], []
    for t in _get_all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL or t.data_type not in _FLOAT_TYPES:
            continue
        a = onnx.numpy_helper.to_array(t)
        if np.isnan(a).any():
            nan.append((t.name, "NaN"))
        elif np.isinf(a).any():
            inf.append((t.name, "Inf"))
    return nan + inf


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


# ----------------------------------------------------------------------------- dynamic dimensions
# A model keeps its symbolic dimensions through every stage; where a check needs numbers (verification feeds,
# random data, the roofline) they come, per input, from --input, else the data given, else these rules:
# the leading (batch-like) dimension is 1; the spatial dims of an image input come from the metadata an
# exporter records (Ultralytics: imgsz); anything else is an InputError that suggests a realistic shape.
_log = logging.getLogger("edgesqueeze.shapes")
_SUGGESTED_DIM = {4: 640, 3: 128}  # an image's side (rank 4), a sequence length (rank 3); other ranks: 16


def dynamic_inputs(model: ModelProto) -> Dict[str, List[Union[int, str, None]]]:
    """``{name: dims}`` of the model's inputs that have a symbolic or unknown dimension (or no shape)."""
    out = {}
    for vi in graph_inputs(model):
        dims = tensor_shape(vi)
        if not vi.type.tensor_type.HasField("shape") or any(not isinstance(d, int) for d in dims):
            out[vi.name] = dims
    return out


def metadata_image_size(model: ModelProto) -> Optional[List[int]]:
    """``[height, width]`` an exporter recorded in ``metadata_props`` (Ultralytics ``imgsz``), or None."""
    props = {p.key: p.value for p in model.metadata_props}
    found = [int(v) for v in re.findall(r"\d+", props.get("imgsz", ""))]
    if len(found) == 1:
        return found * 2
    return found if len(found) == 2 and all(found) else None


def _suggest(name: str, dims: Sequence[Union[int, str, None]]) -> str:
    side = _SUGGESTED_DIM.get(len(dims), 16)
    shape = [d if isinstance(d, int) else 1 if i == 0 else side for i, d in enumerate(dims)] or [1, 3, 640, 640]
    return f"{name}:{format_shape(shape)}"


def _resolve_input(vi: onnx.ValueInfoProto, imgsz: Optional[List[int]], path: Optional[str]) -> Tuple[List[int], List[str]]:
    """Concrete dims of one dynamic input by the rules above, and the reasons; InputError when one has none."""
    dims = tensor_shape(vi)
    if not dims:
        raise InputError("the input has no shape, so a concrete shape for checks is unknown", path=path,
                         tensor=vi.name, hint=f"give one, e.g. --input {_suggest(vi.name, [])}")
    zero = [i for i, d in enumerate(vi.type.tensor_type.shape.dim) if d.HasField("dim_value") and d.dim_value == 0]
    if zero:
        raise InputError(f"axis {zero[0]} of input shape {format_shape(dims).replace('?', '0')} is zero-sized (dim_value "
                         f"0): such an input holds no data", path=path, tensor=vi.name,
                         hint=f"re-export the model with real sizes, or give them with --input "
                              f"{_suggest(vi.name, dims)}")
    out, why = [], []
    for i, d in enumerate(dims):
        label = f"'{d}'" if d else f"{i}"
        if isinstance(d, int):
            out.append(d)
        elif i == 0:
            out.append(1)
            why.append(f"{d or 'axis 0'}=1 by default")
        elif imgsz is not None and len(dims) == 4 and i >= 2:
            out.append(imgsz[i - 2])
            why.append(f"{d or f'axis {i}'}={imgsz[i - 2]} from the model's imgsz metadata")
        else:
            raise InputError(f"dynamic dimension {label} (axis {i}) of input shape {format_shape(dims)} has no "
                             f"value for the checks and the model records none", path=path, tensor=vi.name,
                             hint=f"give a concrete shape for checks with --input {_suggest(vi.name, dims)}; the model "
                                  f"keeps its dynamic dims")
    return out, why


def concrete_input_shapes(model: ModelProto, given: Optional[ShapeSpec] = None, *,
                          path: Optional[PathLike] = None, skip: Sequence[str] = ()) -> Dict[str, List[int]]:
    """Concrete shapes for checks: ``{name: dims}`` for every input of ``model``.

    Static inputs keep their shape; ``given`` (``--input``, as :func:`parse_input_shapes` returns) wins for the
    inputs it names; other dynamic dims follow the rules above. Inputs in ``skip`` (shaped by data) are left
    out. Logs one line on the ``edgesqueeze.shapes`` logger saying which shapes were chosen and why.

    Raises:
        InputError: a given shape does not fit the model, or a dynamic dim has no value (names the tensor and
            the dimension and suggests ``--input``).
    """
    where = str(path) if path is not None else None
    named = _named_shapes(model, given, Path(path) if path is not None else None)
    imgsz = metadata_image_size(model)
    shapes, notes, dynamic_names = {}, [], set(dynamic_inputs(model))
    for vi in graph_inputs(model):
        if vi.name in skip:
            continue
        dims = tensor_shape(vi)
        dynamic = vi.name in dynamic_names
        if vi.name in named:
            shapes[vi.name] = named[vi.name]
            if dynamic:
                notes.append(f"{vi.name}:{format_shape(named[vi.name])} (from --input)")
        elif not dynamic:
            shapes[vi.name] = list(dims)
        else:
            shapes[vi.name], why = _resolve_input(vi, imgsz, where)
            notes.append(f"{vi.name}:{format_shape(shapes[vi.name])} ({', '.join(why)})")
    if notes:
        note_check_shapes("; ".join(notes))
    return shapes


def note_check_shapes(text: str) -> None:
    """Log (``edgesqueeze.shapes``, shown by the CLI once) the concrete shapes checks of a dynamic model use."""
    _log.info("dynamic input dims: checks run at " + text)


def infer_shapes(model: ModelProto, *, in_place: bool = False) -> ModelProto:
    """Run ONNX shape inference (with data propagation) and return the inferred model.

    Falls back to the model unchanged when inference itself fails on an exotic op. ``in_place``: fill in
    ``model`` itself and return it (its weights are not copied).
    """
    light, stripped = strip_weights(model)  # the large weights take no part in inference: not serialised
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort here; the checker already ran
        return model
    if in_place:
        return _graft(model, inferred, light) or model
    return inferred if put_back_weights(inferred, stripped) else model


def _graft(model: ModelProto, result: ModelProto, light: ModelProto) -> Optional[ModelProto]:
    """Make ``model`` what ``result`` is, where ``result`` was computed from ``light`` (``model`` with stub
    weights, :func:`strip_weights`) and kept its initializers as they were: everything but the initializers is
    taken from ``result`` and ``model`` keeps its own weights (no copy). Returns ``model``, or None (``model``
    unchanged) when ``result`` changed an initializer."""
    if list(result.graph.initializer) != list(light.graph.initializer):
        return None
    for field, _ in model.ListFields():
        if field.name != "graph":
            model.ClearField(field.name)
    for field, _ in model.graph.ListFields():
        if field.name != "initializer":
            model.graph.ClearField(field.name)
    _copy_without(result, model, "graph")
    _copy_without(result.graph, model.graph, "initializer")
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
               check: bool = True, pin: bool = False, require_static: bool = False) -> ModelProto:
    """Load and validate an ONNX model; its dynamic dimensions are kept unless ``pin``.

    Args:
        path: the ``.onnx`` file. External-data files are resolved relative to it.
        input_shapes: ``--input`` shapes, ``{name: [dims]}`` (key ``None`` for a model with one input), as
            returned by :func:`parse_input_shapes`: checked against the model here; they only give the
            concrete shapes of checks (:func:`concrete_input_shapes`) unless ``pin``.
        opset: when given and the model's ai.onnx opset is lower, convert it with onnx's version converter.
        check: run the full ONNX checker.
        pin: ``--static``: write concrete shapes (``input_shapes``, else the rules of
            :func:`concrete_input_shapes`) into the model's inputs, so that the model becomes static.
        require_static: refuse a model whose inputs still have a dynamic dimension (after ``pin``).

    Returns:
        The validated model with inferred shapes (``value_info`` filled in).

    Raises:
        InputError: missing, unreadable, truncated or non-ONNX file; missing external data; a graph without
            outputs; a checker failure; ``input_shapes`` that do not fit the model; with ``pin``, a dynamic
            dimension that has no value; with ``require_static``, a dynamic input.
        UnsupportedError: the opset conversion failed.
    """
    path = Path(path)
    model, data = _parse_bytes(path)
    inferred = None
    if next(_external_tensors(model), None) is not None:
        inferred = _load_external(model, path, data, check)
        model = inferred if inferred is not None else model
        data = None  # the file's bytes no longer describe the model
    elif check:
        inferred = _check_corrupt(model, path, data)
    elif not model.graph.output:
        raise InputError("the graph has no outputs", path=str(path))
    if opset is not None and 0 < opset_version(model) < opset:
        model = convert_opset(model, opset, path=str(path), in_place=True)
        data = inferred = None
    shapes = _named_shapes(model, input_shapes, path)
    changed = pin and _pin_shapes(model, concrete_input_shapes(model, shapes, path=path))
    if changed:
        data = inferred = None  # pinned shapes rewrote the inputs
    for name, dims in dynamic_inputs(model).items() if require_static else ():
        raise InputError(f"input shape {format_shape(dims)} is dynamic; this needs a static model", path=str(path),
                         tensor=name, hint=f"pin it with --input {_suggest(name, dims)} --static")
    if data is not None and inferred is None and _tensor_payload(model) > _LIGHT_CHECK_BYTES:
        return infer_shapes(model, in_place=True)  # large weights: inferred without them, not copied
    if data is not None:  # the model is still exactly the file: infer from its bytes, no re-serialisation
        return inferred if inferred is not None else _infer_shapes_bytes(data, model)
    if inferred is not None:  # external data over 2 GB, unchanged: checked and inferred without its weights
        return inferred
    if changed:
        del model.graph.value_info[:]
        for out in model.graph.output:
            # outputs may carry stale symbolic dims; let inference recompute them
            tt = out.type.tensor_type
            if tt.HasField("shape") and any(not isinstance(d, int) for d in tensor_shape(out)):
                tt.ClearField("shape")
    return infer_shapes(model, in_place=True)  # the model is this function's own: no copy of its weights


def convert_opset(model: ModelProto, opset: int, path: Optional[str] = None, *, in_place: bool = False
                  ) -> ModelProto:
    """Convert ``model`` to ai.onnx ``opset`` with onnx's version converter.

    ``in_place``: convert ``model`` itself where the converter leaves the weights as they are (no copy of them).

    Raises:
        UnsupportedError: the converter cannot convert one of the model's ops.
    """
    light, stripped = strip_weights(model)  # large weights are converted as they are: not serialised
    try:
        converted = version_converter.convert_version(light, opset)
        if in_place and _graft(model, converted, light) is not None:
            converted = model
        elif not put_back_weights(converted, stripped):
            converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(_weights_as_inputs(converted))
    except Exception as exc:  # noqa: BLE001 - the converter raises a bare RuntimeError
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedError(f"cannot convert the model from opset {opset_version(model)} to {opset}: {text}",
                               path=path) from exc
    return converted


# ----------------------------------------------------------------------------- what a model carries
_MODEL_FIELDS = ("producer_name", "producer_version", "domain", "model_version", "doc_string")


def _copy_dims(src: onnx.ValueInfoProto, dst: onnx.ValueInfoProto) -> None:
    """Give ``dst`` the dims of ``src`` (same tensor, same rank) where a symbolic dim was lost or renamed."""
    have, want = dst.type.tensor_type, src.type.tensor_type
    if not want.HasField("shape"):
        return
    if have.HasField("shape") and len(have.shape.dim) != len(want.shape.dim):
        return
    for i, d in enumerate(want.shape.dim):
        if i >= len(have.shape.dim):
            have.shape.dim.add().CopyFrom(d)
        elif not (d.HasField("dim_value") and d.dim_value > 0):
            have.shape.dim[i].CopyFrom(d)  # symbolic, '?', -1 or unnamed: as the source spells it


def copy_model_attributes(src: ModelProto, dst: ModelProto) -> ModelProto:
    """Carry over to ``dst`` (a model built from ``src``) what ``src`` carries besides its nodes and weights.

    Copies producer name/version, domain, model_version and doc strings (model and graph), merges
    ``metadata_props`` (``dst``'s own keys win: a stage may record what it did), and gives the graph inputs and
    outputs that keep their names the doc strings and symbolic dims of ``src``. Returns ``dst``.
    Every stage that builds a new ModelProto (graph surgery, FP16, QDQ, compat) calls this once.
    """
    for name in _MODEL_FIELDS:
        setattr(dst, name, getattr(src, name))
    if src.graph.doc_string:
        dst.graph.doc_string = src.graph.doc_string
    own = {p.key for p in dst.metadata_props}
    for prop in src.metadata_props:
        if prop.key not in own:
            dst.metadata_props.add(key=prop.key, value=prop.value)
    for old, new in ((src.graph.input, dst.graph.input), (src.graph.output, dst.graph.output)):
        by_name = {v.name: v for v in old}
        for vi in new:
            if vi.name in by_name:
                vi.doc_string = vi.doc_string or by_name[vi.name].doc_string
                _copy_dims(by_name[vi.name], vi)
    return dst


# ----------------------------------------------------------------------------- saving
def _tensor_payload(model: ModelProto) -> int:
    """A cheap lower bound of the model's serialised size: the bytes of its tensors' data (from their shapes,
    not by reading the data, which would copy it)."""
    total = 0
    for t in _get_all_tensors(model):
        total += raw_nbytes(t) or (len(t.raw_data) if t.HasField("raw_data") else 0)
        total += 4 * (len(t.float_data) + len(t.int32_data)) + 8 * (
            len(t.int64_data) + len(t.double_data) + len(t.uint64_data))
    return total


def fits_one_protobuf(model: ModelProto) -> bool:
    """Whether ``model`` serialises as one protobuf (under 2 GB; judged from its tensors' shapes, nothing read)."""
    return _tensor_payload(model) <= _TWO_GB


def payload_bytes(model: ModelProto) -> int:
    """The bytes of the model's tensor data, from their shapes (nothing read or serialised): about its size."""
    return _tensor_payload(model)


def weights_were_external(model: ModelProto, path: PathLike) -> bool:
    """Whether the model file ``path`` (that ``model`` was loaded from) kept its weights as external data: the
    file is smaller than the weights (cheap: nothing is read or serialised)."""
    return regular_file_size(path) < _tensor_payload(model)


#: weights above this many bytes are handed to onnxruntime as arrays (:func:`split_weights`), not serialised
INLINE_WEIGHT_BYTES = 1 << 16
_STUB_LOCATION = "<edgesqueeze:in-memory>"  # an external-data location no file has: the data comes with the stub


def _copy_without(src, dst, skip: str):
    """Copy every set field of message ``src`` into ``dst`` except the field ``skip`` (not read at all: a
    tensor's ``raw_data`` is not copied)."""
    for field in src.DESCRIPTOR.fields:
        if field.name == skip:
            continue
        if field.is_repeated:
            value = getattr(src, field.name)
            if len(value):
                getattr(dst, field.name).extend(value)
        elif not src.HasField(field.name):
            continue
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(getattr(src, field.name))
        else:
            setattr(dst, field.name, getattr(src, field.name))
    return dst


def raw_nbytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's ``raw_data`` computed from its shape (reading ``raw_data`` would copy it); 0 when it
    has none or a type without a plain numpy equivalent."""
    if not t.HasField("raw_data") or t.data_type not in _ARRAY_TYPES:
        return 0
    return int(np.prod(t.dims, dtype=np.int64)) * _ARRAY_TYPES[t.data_type].itemsize


_ARRAY_TYPES = {k: np.dtype(v) for k, v in {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT64: np.int64}.items()}
_TENSOR_TYPES = {v: k for k, v in _ARRAY_TYPES.items()}


def strip_weights(model: ModelProto, inline_bytes: int = INLINE_WEIGHT_BYTES
                   ) -> Tuple[ModelProto, Dict[str, onnx.TensorProto]]:
    """The model with each main-graph weight over ``inline_bytes`` replaced by a stub initializer (name, type,
    shape, an external-data marker), and ``{name: the weight}`` (the model's own tensors, not copies)."""
    light = _copy_without(model, ModelProto(), "graph")
    graph = _copy_without(model.graph, light.graph, "initializer")
    stripped: Dict[str, onnx.TensorProto] = {}
    for t in model.graph.initializer:
        if raw_nbytes(t) <= inline_bytes or t.data_location == onnx.TensorProto.EXTERNAL or t.name in stripped:
            graph.initializer.append(t)
            continue
        stripped[t.name] = t
        graph.initializer.append(weight_stub(t.name, t.data_type, t.dims))
    return light, stripped


def weight_stub(name: str, data_type: int, dims: Sequence[int]) -> onnx.TensorProto:
    """The stub of a large weight (:func:`strip_weights`): its name, type and shape, and an external-data marker
    that :func:`put_back_weights` and :func:`put_back_arrays` recognise."""
    stub = onnx.TensorProto(name=name, data_type=data_type, dims=dims)
    stub.data_location = onnx.TensorProto.EXTERNAL
    stub.external_data.add(key="location", value=_STUB_LOCATION)
    return stub


def is_weight_stub(t: onnx.TensorProto) -> bool:
    """Whether ``t`` is a stub of :func:`weight_stub`."""
    return t.data_location == onnx.TensorProto.EXTERNAL and [e.value for e in t.external_data] == [_STUB_LOCATION]


def tensor_type_of(array: np.ndarray) -> Optional[int]:
    """The ONNX data type of ``array`` when it has a plain raw encoding (:func:`put_back_arrays`), else None."""
    return _TENSOR_TYPES.get(array.dtype.newbyteorder("="))


def put_back_arrays(light: ModelProto, arrays: Dict[str, np.ndarray]) -> bool:
    """Fill the stubs of ``light`` named in ``arrays`` with those arrays' little-endian bytes, in place, taking
    each array out of ``arrays`` once written (so that at most one weight is held twice at a time); False when
    a stub's shape or type does not match its array."""
    for t in light.graph.initializer:
        if t.name not in arrays or [e.value for e in t.external_data] != [_STUB_LOCATION]:
            continue
        a = arrays.pop(t.name)
        if list(a.shape) != list(t.dims) or tensor_type_of(a) != t.data_type:
            return False
        del t.external_data[:]
        t.ClearField("data_location")
        t.raw_data = np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()
        del a
    return True


def _weights_as_inputs(model: ModelProto) -> ModelProto:
    """The model with each large weight declared as a graph input of its type and shape instead (what the
    checker needs of it), for checks without serialising the weights."""
    light, stripped = strip_weights(model)
    keep = [t for t in light.graph.initializer if t.name not in stripped]
    del light.graph.initializer[:]
    light.graph.initializer.extend(keep)
    listed = {i.name for i in light.graph.input}
    light.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in stripped.values() if t.name not in listed)
    light.ir_version = max(light.ir_version, 4)
    return light


def checkable(model: ModelProto) -> ModelProto:
    """What to give ``onnx.checker.check_model``: ``model`` itself, or over 2 GB (one protobuf's limit, which
    the checker would serialise) the model with its large weights declared as graph inputs of their type and
    shape."""
    return model if _tensor_payload(model) <= _TWO_GB else _weights_as_inputs(model)


def put_back_weights(light: ModelProto, stripped: Mapping[str, onnx.TensorProto]) -> bool:
    """Replace the stubs of :func:`strip_weights` in ``light`` (or a model made from it) by the weights, in
    place; False (``light`` partly restored) when a stub was renamed, reshaped or retyped on the way."""
    for t in light.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL or [e.value for e in t.external_data] != [_STUB_LOCATION]:
            continue
        name = t.name
        orig = stripped.get(t.name)
        if orig is None or list(orig.dims) != list(t.dims) or orig.data_type != t.data_type:
            return False
        t.CopyFrom(orig)
        t.name = name
    return True


def split_weights(model: ModelProto, inline_bytes: int = INLINE_WEIGHT_BYTES) -> Tuple[ModelProto, Dict[str, np.ndarray]]:
    """The model without its large main-graph weights, and those weights as read-only little-endian arrays.

    Each weight over ``inline_bytes`` becomes a stub initializer (name, type, shape, an external-data marker): the
    light model serialises in milliseconds whatever the size of the weights (onnxruntime takes the arrays with
    ``SessionOptions.add_external_initializers``). ``model`` is not changed; nothing is serialised.
    """
    light, stripped = strip_weights(model, inline_bytes)
    return light, {name: weight_array(t) for name, t in stripped.items()}


def weight_array(t: onnx.TensorProto) -> np.ndarray:
    """The read-only little-endian array of a tensor with ``raw_data`` of a plain numpy type (one copy of the
    bytes, none more)."""
    return np.frombuffer(t.raw_data, _ARRAY_TYPES[t.data_type].newbyteorder("<")).reshape(tuple(t.dims))


def model_bytes(model: ModelProto) -> bytes:
    """Serialise ``model`` deterministically."""
    return model.SerializeToString(deterministic=True)


def data_file_of(path: PathLike) -> Path:
    """The one external-data file :func:`save_model` writes next to ``path``: ``<name>.onnx.data``."""
    return Path(path).with_name(Path(path).name + ".data")


def model_hash(model: Union[ModelProto, PathLike]) -> str:
    """Return the sha256 of a model's serialised bytes, or of a model file (followed by the bytes of its
    :func:`data_file_of` when it has one), read in chunks."""
    if isinstance(model, ModelProto):
        if fits_one_protobuf(model):
            return sha256_bytes(model_bytes(model))
        h = hashlib.sha256()  # over one protobuf's limit: the same bytes, hashed piece by piece
        for piece in _stream_pieces(model)[1]:
            h.update(piece)
        return h.hexdigest()
    if not data_file_of(model).is_file():
        known = _WRITTEN.get(str(Path(model).resolve()))
        st = Path(model).stat()
        if known is not None and known[:3] == (st.st_ino, st.st_size, st.st_mtime_ns):
            return known[3]
        return sha256_file(model)
    h = hashlib.sha256()
    for part in (Path(model), data_file_of(model)):
        with open(part, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


_DATA_ALIGN = 4096  # offsets of external weights: page-aligned, so that onnxruntime can map them


def _write_external(model: ModelProto, path: Path) -> None:
    """Write ``model`` as ``path`` with its weights over 1 KB in one data file (:func:`data_file_of`), one
    weight at a time, page-aligned; ``model`` itself is not changed."""
    light, stripped = strip_weights(model, inline_bytes=1024)
    data_path = data_file_of(path)
    offsets = {}
    with atomic_path(data_path) as tmp:
        with open(tmp, "wb") as fh:
            for name, t in stripped.items():
                fh.seek(-fh.tell() % _DATA_ALIGN, os.SEEK_CUR)
                offsets[name] = fh.tell()
                fh.write(t.raw_data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
    for t in light.graph.initializer:
        if t.name in offsets and t.data_location == onnx.TensorProto.EXTERNAL:
            del t.external_data[:]
            for key, value in (("location", data_path.name), ("offset", offsets[t.name]),
                               ("length", raw_nbytes(stripped[t.name]))):
                t.external_data.add(key=key, value=str(value))
    write_bytes_atomic(path, model_bytes(light))


def _raw_sizes(data: bytes) -> List[int]:
    """The ``raw_data`` length of each main-graph initializer of the serialised model ``data`` (-1: none)."""
    sizes: List[int] = []
    for field, _, gpos, gend in fields(data):
        if field != 7:  # ModelProto.graph
            continue
        for gfield, _, tpos, tend in fields(data, gpos, gend):
            if gfield == 5:  # GraphProto.initializer
                sizes.append(next((stop - start for f, _, start, stop in fields(data, tpos, tend) if f == 9), -1))
    return sizes


def _stream_pieces(model: ModelProto) -> Tuple[int, Iterator[bytes]]:
    """``(size, pieces)``: the bytes of ``model_bytes(model)`` as a sequence of pieces, each large weight's data
    read on its own (nothing is serialised whole; graph = field 7 of ModelProto, initializer = field 5 of
    GraphProto, raw_data = field 9 of TensorProto)."""
    head, tail = split_fields(model_bytes(_copy_without(model, ModelProto(), "graph")), 7)
    ghead, gtail = split_fields(model_bytes(_copy_without(model.graph, onnx.GraphProto(), "initializer")), 5)
    records = []  # (size of the TensorProto, its bytes before raw_data, raw size, bytes after) or (size, bytes)
    for t in model.graph.initializer:
        n = raw_nbytes(t)
        if n <= INLINE_WEIGHT_BYTES:
            data = model_bytes(t)
            records.append((len(data), data))
            continue
        thead, ttail = split_fields(model_bytes(_copy_without(t, onnx.TensorProto(), "raw_data")), 9)
        records.append((len(thead) + len(length_field(9, n)) + n + len(ttail), (t, thead, n, ttail)))
    gsize = len(ghead) + len(gtail) + sum(len(length_field(5, size)) + size for size, _ in records)
    total = len(head) + len(length_field(7, gsize)) + gsize + len(tail)

    def pieces():
        yield head + length_field(7, gsize) + ghead
        for size, rec in records:
            yield length_field(5, size)
            if isinstance(rec, bytes):
                yield rec
                continue
            t, thead, n, ttail = rec
            raw = t.raw_data
            if len(raw) != n:
                raise AssertionError(f"tensor '{t.name}': {len(raw)} bytes of data for {n} declared")
            yield thead + length_field(9, n)
            yield raw
            del raw
            yield ttail
        yield gtail + tail

    return total, pieces()


def _write_inline(pieces: Iterable[bytes], path: Path) -> str:
    """Write the pieces of :func:`_stream_pieces` as the file ``path`` (no serialised copy of the whole model);
    returns the file's sha256 (:func:`model_hash` reuses it)."""
    h = hashlib.sha256()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            for piece in pieces:
                h.update(piece)
                fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
    digest = h.hexdigest()
    st = path.stat()
    _WRITTEN[str(path.resolve())] = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
    return digest


#: sha256 of the files :func:`save_model` wrote in this process, by path: (inode, size, mtime, digest)
_WRITTEN: Dict[str, tuple] = {}


def save_model(model: ModelProto, path: PathLike, *, inputs: Sequence[Optional[PathLike]] = (),
               external: Optional[bool] = None) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + rename).

    Args:
        model: the model to write (not changed).
        path: destination ``.onnx`` path; its directory is created if needed.
        inputs: paths that must not be overwritten (the models the output was made from).
        external: write the weights (each over 1 KB) as external data, in one file ``<name>.onnx.data`` next to
            the model (:func:`data_file_of`), page-aligned; None: only when the model does not fit in one
            protobuf (2 GB). Nothing of the model is serialised whole then.

    Returns:
        The written path.

    Raises:
        InputError: ``path`` names one of ``inputs``, or it cannot be written.
    """
    path = Path(path)
    refuse_overwrite(path, *[p for p in inputs if p])
    if external:
        refuse_overwrite(data_file_of(path), *[p for p in inputs if p])
    try:
        streamed = None if external or _tensor_payload(model) > _TWO_GB else _stream_pieces(model)
        if streamed is not None and streamed[0] <= _TWO_GB:
            _write_inline(streamed[1], path)
        else:  # protobuf cannot hold > 2 GB: weights go to <name>.data next to the model
            _write_external(model, path)
    except OSError as exc:
        raise InputError(f"cannot write the model: {exc.strerror}", path=str(path)) from exc
    return path


# ----------------------------------------------------------------------------- data
def random_feeds(model: ModelProto, seed: int = 0, *, low: float = -1.0, high: float = 1.0,
                 batches: int = 1, shapes: Optional[ShapeSpec] = None) -> List[Dict[str, np.ndarray]]:
    """Return ``batches`` seeded random feed dicts for the model's inputs.

    Dynamic dims take ``shapes`` (``--input``), else the rules of :func:`concrete_input_shapes`.
    Floating inputs are uniform in ``[low, high)``, integer inputs in ``[0, 10)``, booleans random.

    Raises:
        InputError: a dynamic dimension has no value (see :func:`concrete_input_shapes`).
    """
    rng = np.random.default_rng(seed)
    feeds = []
    specs = input_specs(model)
    concrete = concrete_input_shapes(model, shapes)
    for _ in range(batches):
        feed = {}
        for name, spec in specs.items():
            shape = concrete[name]
            dt = spec["dtype"]
            if np.issubdtype(dt, np.floating):
                feed[name] = rng.uniform(low, high, size=shape).astype(dt)
            elif dt == np.bool_:
                feed[name] = rng.integers(0, 2, size=shape).astype(np.bool_)
            else:
                feed[name] = rng.integers(0, 10, size=shape).astype(dt)
        feeds.append(feed)
    return feeds
