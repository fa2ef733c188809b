"""Run two models, bundles or backends on the same data and measure how far apart their outputs are.

A side is a path to an ``.onnx`` model, a bundle folder or ``.tar.gz`` (its deploy
model), optionally prefixed by a backend: ``trt:model.onnx``, ``ort:bundle/``.

Per output the result holds the max and mean absolute error, the max relative error
(``max|b - a| / max|a|``, robust where ``a`` crosses zero) and the mean relative error
(``mean|b - a| / mean|a|``), all over the whole data set with side A as the reference;
for classifier-like outputs (last dimension > 1) the top-1 agreement, and with labels
each side's top-1 accuracy.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import onnx

from .backends import get_runner
from .bundle import extract_archive, verify_bundle
from .data import open_data
from .errors import InputError
from .model import input_specs, load_model

BACKEND_PREFIXES = ("ort", "trt")


@dataclass
class Side:
    """One side of a comparison: what to run and how to name it."""

    label: str
    backend: str
    model: onnx.ModelProto
    path: Optional[str] = None


def parse_side(spec: Union[str, Path, onnx.ModelProto], backend: Optional[str] = None,
               stack: Optional[contextlib.ExitStack] = None) -> Side:
    """Resolve ``spec`` (model path, bundle folder/archive, ``backend:path`` or a ModelProto) into a :class:`Side`.

    Raises:
        InputError: the path does not exist, is not a model or a bundle, or names an unknown backend.
    """
    if isinstance(spec, onnx.ModelProto):
        return Side(label="model", backend=backend or "ort", model=spec)
    text = str(spec)
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in BACKEND_PREFIXES:
        backend, text = backend or prefix.lower(), rest
    path = Path(text)
    backend = (backend or "ort").lower()
    if not path.exists():
        raise InputError("no such model or bundle", path=text)
    if path.is_dir() or text.endswith((".tar.gz", ".tgz")):
        model_path = bundle_deploy_model(path, stack)
        label = f"{backend}:{text} ({model_path.name})"
        return Side(label=label, backend=backend, model=load_model(model_path, require_static=False),
                    path=str(model_path))
    return Side(label=f"{backend}:{text}", backend=backend, model=load_model(path, require_static=False),
                path=str(path))


def bundle_deploy_model(bundle: Path, stack: Optional[contextlib.ExitStack] = None) -> Path:
    """Verify a bundle (folder or archive) and return the path of its deploy model.

    Raises:
        InputError / VerificationError: not a bundle, or its files do not match the manifest.
    """
    if bundle.is_file():
        tmp = tempfile.mkdtemp(prefix="edgesqueeze-bundle-")
        if stack is not None:
            stack.callback(shutil.rmtree, tmp, True)
        bundle = extract_archive(bundle, tmp)
    manifest = verify_bundle(bundle)
    rel = manifest["models"].get("deploy")
    if not rel:
        raise InputError("the bundle's manifest names no deploy model", path=str(bundle / "manifest.json"))
    return bundle / rel


class _Stats:
    """Streaming error statistics for one output."""

    def __init__(self) -> None:
        self.n = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.sum_ref = 0.0
        self.max_ref = 0.0
        self.top1_same = 0
        self.top1_n = 0
        self.nonfinite = 0
        self.shape_mismatch: Optional[Tuple[list, list]] = None

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            self.shape_mismatch = (list(a.shape), list(b.shape))
            return
        bad = ~(np.isfinite(a) & np.isfinite(b))
        self.nonfinite += int(bad.sum())
        diff = np.where(bad, 0.0, np.abs(b - a))
        ref = np.where(bad, 0.0, np.abs(a))
        self.n += diff.size
        if diff.size:
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.max_ref = max(self.max_ref, float(ref.max()))
        self.sum_abs += float(diff.sum())
        self.sum_ref += float(ref.sum())
        if is_classifier_output(a):
            self.top1_same += int(np.sum(a.argmax(-1) == b.argmax(-1)))
            self.top1_n += int(np.prod(a.shape[:-1]))

    def result(self) -> dict:
        if self.shape_mismatch:
            return {"shape_mismatch": self.shape_mismatch}
        mean_abs = self.sum_abs / self.n if self.n else 0.0
        mean_ref = self.sum_ref / self.n if self.n else 0.0
        return {"max_abs": self.max_abs, "mean_abs": mean_abs,
                "max_rel": self.max_abs / self.max_ref if self.max_ref > 0 else (0.0 if self.max_abs == 0 else float("inf")),
                "mean_rel": mean_abs / mean_ref if mean_ref > 0 else (0.0 if mean_abs == 0 else float("inf")),
                "top1_agreement": self.top1_same / self.top1_n if self.top1_n else None,
                "nonfinite": self.nonfinite, "elements": self.n}


def is_classifier_output(arr: np.ndarray) -> bool:
    """True for a float output whose last dimension holds more than one class score."""
    return arr.ndim >= 1 and arr.shape[-1] > 1 and np.issubdtype(np.asarray(arr).dtype, np.floating)


def _cast_feeds(feeds: Mapping[str, np.ndarray], meta: Mapping[str, dict]) -> Dict[str, np.ndarray]:
    out = {}
    for name, arr in feeds.items():
        want = meta.get(name, {}).get("dtype")
        out[name] = arr.astype(want) if want is not None and arr.dtype != np.dtype(want) else arr
    return out


def _pair_outputs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> List[Tuple[str, str]]:
    common = [n for n in a if n in b]
    if common:
        return [(n, n) for n in common]
    if len(a) == len(b):  # renamed outputs: pair by position
        return list(zip(a, b))
    raise InputError(f"the two sides share no output name and have {len(a)} vs {len(b)} outputs")


def compare_runs(run_a: Callable[[Mapping[str, np.ndarray]], Dict[str, np.ndarray]],
                 run_b: Callable[[Mapping[str, np.ndarray]], Dict[str, np.ndarray]],
                 feeds: Iterable[Mapping[str, np.ndarray]], labels: Optional[np.ndarray] = None,
                 progress: Optional[Callable[[int], None]] = None) -> dict:
    """Run both callables on every feed dict and accumulate the error statistics (side A is the reference).

    Returns:
        ``{"samples", "outputs": {name: stats}, "accuracy": {"a", "b", "n"} | None}``.
    """
    stats: Dict[str, _Stats] = {}
    names: Optional[List[Tuple[str, str]]] = None
    correct = [0, 0]
    seen = 0
    label_out: Optional[Tuple[str, str]] = None
    for feed in feeds:
        out_a, out_b = run_a(feed), run_b(feed)
        if names is None:
            names = _pair_outputs(out_a, out_b)
            label_out = next((p for p in names if is_classifier_output(out_a[p[0]])), None)
        batch = 1
        for na, nb in names:
            stats.setdefault(na if na == nb else f"{na} | {nb}", _Stats()).add(out_a[na], out_b[nb])
        if label_out is not None:
            sa, sb = np.asarray(out_a[label_out[0]]), np.asarray(out_b[label_out[1]])
            batch = sa.shape[0] if sa.ndim >= 2 else 1
            if labels is not None and seen + batch <= len(labels):
                want = labels[seen:seen + batch]
                correct[0] += int(np.sum(sa.reshape(batch, -1).argmax(-1) == want))
                correct[1] += int(np.sum(sb.reshape(batch, -1).argmax(-1) == want))
        seen += batch
        if progress:
            progress(1)
    if names is None:
        raise InputError("the data set is empty: nothing to compare")
    accuracy = None
    if labels is not None and label_out is not None:
        n = min(seen, len(labels))
        accuracy = {"a": correct[0] / n if n else None, "b": correct[1] / n if n else None, "n": n,
                    "output": label_out[0]}
    return {"samples": seen, "outputs": {k: s.result() for k, s in stats.items()}, "accuracy": accuracy}


@contextlib.contextmanager
def _runner(side: Side, threads: Optional[int] = None) -> Iterator[Callable]:
    runner = get_runner(side.backend, side.model, **({"threads": threads} if side.backend == "ort" else {}))
    with runner:
        meta = runner.input_metadata()
        yield lambda feeds: runner.infer(_cast_feeds(feeds, meta))


def compare(a, b, data: Optional[str] = None, *, backend_a: Optional[str] = None, backend_b: Optional[str] = None,
            limit: Optional[int] = None, threads: Optional[int] = None, seed: int = 0,
            progress: Optional[Callable[[int], None]] = None) -> dict:
    """Compare two models / bundles / backends on the same data (side A is the reference).

    Args:
        a, b: ``.onnx`` paths, bundle folders or archives (their deploy model), ``backend:path`` or ModelProtos.
        data: ``.npz``/``.npy``/image folder (see :func:`edgesqueeze.data.open_data`), or None for seeded random data.
        backend_a, backend_b: ``ort`` (default) or ``trt``; overrides a ``backend:`` prefix.
        limit: compare at most this many feed dicts.
        threads: onnxruntime threads.
        progress: called with 1 after each feed dict.

    Returns:
        ``{"a": label, "b": label, "data": description, "random_data": bool, "samples", "outputs": {name: {max_abs,
        mean_abs, max_rel, mean_rel, top1_agreement, nonfinite, elements}}, "accuracy": {"a", "b", "n"} | None}``.

    Raises:
        InputError: a side or the data cannot be read, or the two sides have incompatible outputs.
        MissingDependencyError: a ``trt`` side without TensorRT installed.
    """
    with contextlib.ExitStack() as stack:
        side_a = parse_side(a, backend_a, stack)
        side_b = parse_side(b, backend_b, stack)
        _check_same_inputs(side_a, side_b)
        reader = open_data(data, side_a.model, limit=limit, seed=seed)
        with _runner(side_a, threads) as run_a, _runner(side_b, threads) as run_b:
            result = compare_runs(run_a, run_b, reader, getattr(reader, "labels", None), progress)
        result.update({"a": side_a.label, "b": side_b.label, "data": reader.describe(),
                       "random_data": bool(getattr(reader, "is_random", False))})
        return result


def _check_same_inputs(side_a: Side, side_b: Side) -> None:
    """Both sides get A's feeds: B must take inputs of the same names (else the error would blame the data)."""
    names_a, names_b = sorted(input_specs(side_a.model)), sorted(input_specs(side_b.model))
    if names_a != names_b:
        raise InputError(f"B takes inputs {', '.join(names_b)} but A takes {', '.join(names_a)}: compare models of "
                         f"the same network", path=side_b.label)
