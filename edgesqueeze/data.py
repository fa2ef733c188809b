"""One data-reader protocol for calibration, evaluation and benchmarks.

A reader is an iterable of feed dicts (``{input name: np.ndarray}``), one per model run, that can be
iterated more than once (calibration makes several passes when its memory budget asks for it). It also has
``labels`` (an array aligned with the samples it yields, or None), ``len()`` (number of feed dicts),
``describe()`` and ``sha256()`` (a hash of the data and of everything that shapes it, for caches).

Sources (``open_data(spec, model)``):

- ``data.npz``: one array per model input (by name; a one-input model also accepts a single unnamed array)
  and optional labels under ``label``/``labels``/``y``;
- ``data.npy``: one array for a one-input model (memory-mapped, so large sets are not loaded whole);
- an image folder (``images/``, ``images/?resize=256&crop=224&mean=...``, options in :class:`~edgesqueeze.imagedata.Preprocess`,
  defaults from a ``preprocess.json`` in the folder; :mod:`edgesqueeze.imagedata`): class sub-folders become
  labels, images are decoded batch by batch (Pillow needed);
- ``None`` or ``"random"``: seeded random data, labelled as random everywhere it is reported.

Data whose shape or dtype does not fit the model, or that holds NaN/Inf, is an :class:`InputError`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np
from onnx import ModelProto

from .errors import InputError
from .datareader import DataReader, NpzArchive, cast_dtype
from .fileio import sha256_file
from .imagedata import image_folder_reader
from .model import concrete_input_shapes, format_shape, input_specs, note_check_shapes, regular_file_size

LABEL_KEYS = ("label", "labels", "y", "target", "targets")
_CHECK_CHUNK = 1 << 22  # elements scanned at a time for NaN/Inf in memory-mapped arrays


# ------------------------------------------------------------------------------------------ model inputs
def _model_inputs(model: ModelProto, batch_size: int) -> Dict[str, dict]:
    """Input specs with the batch dimension resolved: ``{name: {"shape": [...], "dtype", "batch"}}``.

    Other dynamic dims stay symbolic (a name or None): the data's arrays give them, or :func:`_concrete`.
    """
    specs = input_specs(model)
    if not specs:
        raise InputError("the model has no inputs to feed")
    out = {}
    for name, spec in specs.items():
        shape = list(spec["shape"])
        if not shape:
            raise InputError("input has no shape information", tensor=name)
        batch = shape[0] if isinstance(shape[0], int) else int(batch_size)
        out[name] = {"shape": [batch] + shape[1:], "dtype": spec["dtype"], "batch": batch}
    batches = {s["batch"] for s in out.values()}
    if len(batches) != 1:
        raise InputError(f"the model's inputs have different batch sizes {sorted(batches)}")
    return out


def _check_finite(arr: np.ndarray, name: str, path: str) -> None:
    """Raise InputError naming the first sample that holds NaN or Inf."""
    if not np.issubdtype(arr.dtype, np.floating):
        return
    flat_per_sample = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
    step = max(1, _CHECK_CHUNK // max(1, flat_per_sample))
    for start in range(0, arr.shape[0], step):
        chunk = np.asarray(arr[start:start + step])
        if not np.all(np.isfinite(chunk)):
            bad = np.where(~np.isfinite(chunk.reshape(chunk.shape[0], -1)).all(axis=1))[0][0] + start
            sample = np.asarray(arr[bad])
            kind = "NaN" if np.isnan(sample).any() else "Inf"
            raise InputError(f"sample {bad} holds {kind} values ({int((~np.isfinite(sample)).sum())} of "
                             f"{sample.size}); calibration and evaluation need finite data", path=path, tensor=name)


# ------------------------------------------------------------------------------------------ readers
class ArrayReader(DataReader):
    """Feeds from in-memory or memory-mapped arrays ``{input name: [N, ...]}`` plus optional labels."""

    def __init__(self, inputs: Dict[str, dict], arrays: Dict[str, np.ndarray], labels: Optional[np.ndarray],
                 *, source: str, limit: Optional[int] = None, digest: str = ""):
        super().__init__(inputs)
        self.source = source
        self._digest = digest
        counts = {name: int(a.shape[0]) for name, a in arrays.items()}
        if len(set(counts.values())) != 1:
            raise InputError(f"the arrays hold different numbers of samples: {counts}", path=source)
        n = next(iter(counts.values()))
        if limit is not None:
            if int(limit) <= 0:
                raise InputError(f"--limit must be positive, got {limit}")
            n = min(n, int(limit))
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or labels.shape[0] < n:
                raise InputError(f"labels have shape {list(labels.shape)}; expected [{n}] (one per sample)",
                                 path=source, tensor="label")
            if not np.issubdtype(labels.dtype, np.integer):
                raise InputError(f"labels must be integers (class indices), got {labels.dtype}", path=source,
                                 tensor="label")
            if labels.shape[0] and int(labels[:n].min()) < 0:
                raise InputError(f"labels must be class indices >= 0, found {int(labels[:n].min())}", path=source,
                                 tensor="label")
        self.total = n
        self.dropped = n % self.batch
        self._n = n - self.dropped
        if self._n == 0:
            raise InputError(f"{n} sample(s) cannot fill one batch of {self.batch}", path=source)
        self._arrays = arrays
        self.labels = None if labels is None else np.asarray(labels[:self._n]).astype(np.int64)

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        b = self.batch
        for start in range(0, self._n, b):
            yield {name: np.ascontiguousarray(a[start:start + b]) for name, a in self._arrays.items()}

    def __len__(self) -> int:
        return self._n // self.batch

    def describe(self, batches: bool = True) -> str:
        return self._describe_counted(self.source, self._n, "samples", batches)

    def sha256(self) -> str:
        return self._hash(self._digest, self._n)


class RandomReader(DataReader):
    """Seeded random feeds (uniform in [-1, 1) for float inputs): for latency work only, never for accuracy."""

    is_random = True

    def __init__(self, inputs: Dict[str, dict], count: int = 8, seed: int = 0):
        super().__init__(inputs)
        if count <= 0:
            raise InputError(f"--limit must be positive, got {count}")
        self.count = int(count)
        self.seed = int(seed)

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.count):
            feed = {}
            for name, spec in self.inputs.items():
                dt = spec["dtype"]
                if np.issubdtype(dt, np.floating):
                    feed[name] = rng.uniform(-1.0, 1.0, size=spec["shape"]).astype(dt)
                elif dt == np.bool_:
                    feed[name] = rng.integers(0, 2, size=spec["shape"]).astype(np.bool_)
                else:
                    feed[name] = rng.integers(0, 10, size=spec["shape"]).astype(dt)
            yield feed

    def __len__(self) -> int:
        return self.count

    def describe(self, batches: bool = True) -> str:
        return f"random data (seed {self.seed}, {self.count} batches of {self.batch}; not real inputs)"

    def sha256(self) -> str:
        return self._hash("random", self.seed, self.count)


# ------------------------------------------------------------------------------------------ npz / npy
def _pick_keys(path: Path, keys, inputs: Dict[str, dict]) -> Dict[str, str]:
    """``{input name: array key}``: by name, or the single unnamed array of a one-input model."""
    names = list(inputs)
    data_keys = [k for k in keys if k not in LABEL_KEYS]
    if all(n in keys for n in names):
        return {n: n for n in names}
    if len(names) == 1 and len(data_keys) == 1:
        return {names[0]: data_keys[0]}
    missing = [n for n in names if n not in keys]
    raise InputError(f"no array named '{missing[0]}' (the model's input); the file holds: "
                     f"{', '.join(data_keys) or 'none'}",
                     path=str(path), hint="save one array per model input under the input's name")


def _read_npz(path: Path, inputs: Dict[str, dict], limit: Optional[int]):
    """The arrays the model uses and the labels of an ``.npz``: only those members are decompressed (their
    first ``limit`` samples), each within :func:`~edgesqueeze.datareader.max_data_bytes`."""
    with NpzArchive(path) as npz:
        picked = _pick_keys(path, npz.members, inputs)
        rows = None if limit is None or int(limit) <= 0 else int(limit)
        arrays = {name: npz.read(key, rows, len(inputs[name]["shape"])) for name, key in picked.items()}
        label_key = next((k for k in LABEL_KEYS if k in npz.members), None)
        labels = None if label_key is None else npz.read(label_key, rows)
    return arrays, labels


def _fits(dims, want) -> bool:
    """Array dims fit the model's dims: same rank, equal where the model's dim is fixed."""
    return len(dims) == len(want) and all(not isinstance(w, int) or d == w for d, w in zip(dims, want))


def _fit_array(arr: np.ndarray, spec: dict, name: str, path: str) -> np.ndarray:
    want = spec["shape"]
    if arr.ndim == len(want) - 1 and _fits(arr.shape, want[1:]):
        arr = arr[None]  # one sample without its batch axis
    if not _fits(arr.shape[1:], want[1:]):
        raise InputError(f"data shape {format_shape(arr.shape)} does not fit the model's input shape "
                         f"{format_shape(want)}; expected Nx{format_shape(want[1:])}", path=path, tensor=name)
    if any(not isinstance(w, int) for w in want[1:]):  # a dynamic dim: the data give it
        spec["shape"] = [spec["batch"]] + list(arr.shape[1:])
        note_check_shapes(f"{name}:{format_shape(spec['shape'])} (the shape of the data in {path})")
    return arr


def _concrete(inputs: Dict[str, dict], model: ModelProto, shapes) -> Dict[str, dict]:
    """``inputs`` with every dynamic dim given a value (``--input``, else the rules of the model's metadata)."""
    if all(isinstance(d, int) for spec in inputs.values() for d in spec["shape"]):
        return inputs
    concrete = concrete_input_shapes(model, shapes)
    out = {}
    for name, spec in inputs.items():
        dims = [d if isinstance(d, int) else c for d, c in zip(spec["shape"], concrete[name])]
        out[name] = dict(spec, shape=[spec["batch"]] + dims[1:])
    return out


def _array_reader(path: Path, inputs: Dict[str, dict], limit: Optional[int]) -> ArrayReader:
    labels = None
    if path.suffix == ".npz":
        arrays, labels = _read_npz(path, inputs, limit)
    else:
        if len(inputs) != 1:
            raise InputError(f"a .npy file holds one array; the model has {len(inputs)} inputs "
                             f"({', '.join(inputs)})", path=str(path), hint="use an .npz with one array per input")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot read the .npy file: {exc}", path=str(path)) from exc
        arrays = {next(iter(inputs)): arr}
    fitted = {}
    for name, arr in arrays.items():
        arr = _fit_array(arr, inputs[name], name, str(path))
        n = arr.shape[0] if limit is None else min(arr.shape[0], int(limit))
        _check_finite(arr[:n], name, str(path))
        if arr.dtype != inputs[name]["dtype"]:
            arr = cast_dtype(np.asarray(arr), inputs[name]["dtype"], name, str(path))
        fitted[name] = arr
    return ArrayReader(inputs, fitted, labels, source=str(path), limit=limit, digest=sha256_file(path))


# ------------------------------------------------------------------------------------------ entry point
def open_data(spec: Optional[str], model: ModelProto, *, batch_size: int = 1, limit: Optional[int] = None,
              seed: int = 0, shapes=None) -> DataReader:
    """Open calibration/evaluation data for ``model``.

    Args:
        spec: a ``.npz``/``.npy`` path, an image folder (optionally ``folder?resize=256&crop=224&mean=...``;
            a ``preprocess.json`` in the folder gives defaults), or None/``"random"`` for seeded random data.
        model: the model whose inputs the data must fit (shapes and dtypes are checked).
        batch_size: samples per feed dict when the model's batch dimension is dynamic (a fixed batch wins).
        limit: use at most this many samples (random data: this many batches; default 8).
        seed: seed of random data.
        shapes: ``--input`` shapes (:func:`edgesqueeze.model.parse_input_shapes`): the dynamic dims of random
            data and image folders (arrays give their own; else :func:`edgesqueeze.model.concrete_input_shapes`).

    Returns:
        A :class:`DataReader`: iterable (repeatedly) of feed dicts, with ``labels``, ``len()``, ``describe()``,
        ``sha256()`` and ``is_random``.

    Raises:
        InputError: missing or unreadable file, shape/dtype that does not fit the model, NaN/Inf in the data,
            bad preprocessing options.
        MissingDependencyError: an image folder without Pillow installed.
    """
    if batch_size <= 0:
        raise InputError(f"batch size must be positive, got {batch_size}")
    inputs = _model_inputs(model, batch_size)
    if spec is None or str(spec) == "random":
        return RandomReader(_concrete(inputs, model, shapes), count=8 if limit is None else int(limit), seed=seed)
    text = str(spec)
    query = ""
    if "?" in text and not Path(text).exists():
        text, _, query = text.partition("?")
    path = Path(text)
    if not path.exists():
        raise InputError("no such file or folder", path=str(path))
    if path.is_dir():
        return image_folder_reader(path, query, _concrete(inputs, model, shapes), limit)
    regular_file_size(path, "an .npz/.npy file or an image folder")
    if path.suffix.lower() not in (".npz", ".npy"):
        raise InputError(f"unknown data format '{path.suffix}'", path=str(path),
                         hint="give an .npz/.npy file, an image folder, or 'random'")
    if query:
        raise InputError("preprocessing options apply to image folders only", path=str(path))
    return _array_reader(path, inputs, limit)


__all__ = ["DataReader", "ArrayReader", "RandomReader", "open_data", "LABEL_KEYS"]
