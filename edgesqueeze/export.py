"""Export a PyTorch module to ONNX and prove that onnxruntime computes what torch computes.

Needs the ``torch`` extra (``pip install 'edgesqueeze[torch]'``); torch is imported only here, lazily.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._lazy import require
from .errors import InputError, UnsupportedError, VerificationError
from .fileio import PathLike, atomic_path
from .model import load_model, model_hash, opset_version, parse_shape
from .ortutil import make_session

DEFAULT_OPSET = 18
TORCHSCRIPT_OPSETS = (9, 20)   # what torch's TorchScript exporter (legacy=True) writes: constant folding .. max


def opset_of_retrained(model) -> int:
    """The ai.onnx opset to re-export a retrained copy of ``model`` at (``recover``, ``train``): the model's own,
    so a board's TensorRT that read the original reads the copy, within what the TorchScript exporter writes."""
    lo, hi = TORCHSCRIPT_OPSETS
    return min(max(opset_version(model), lo), hi)


def load_factory(spec: str):
    """Import ``path/to/net.py:make_model`` (or ``package.module:make_model``) and return the callable.

    Raises:
        InputError: the file, module or attribute does not exist, or importing it fails.
    """
    if ":" not in spec:
        raise InputError(f"'{spec}' is not FILE.py:FACTORY or module:FACTORY",
                         hint="e.g. edgesqueeze export examples/digits_model.py:make_model ...")
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise InputError("no such file", path=str(path))
        name = f"_edgesqueeze_user_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.path.insert(0, str(path.parent.resolve()))
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code can raise anything
            raise InputError(f"importing the model file failed: {type(exc).__name__}: {exc}", path=str(path)) from exc
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot import module '{target}': {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise InputError(f"'{attr}' is not a callable in {target}", hint="name the function that builds the model")
    return factory


def load_weights(module, weights: PathLike) -> None:
    """Load a state dict (or a checkpoint holding one under state_dict/model_state_dict/model) into ``module``.

    Raises:
        InputError: the file is missing, unreadable or does not fit the module.
    """
    torch = require("torch", "loading PyTorch weights")
    path = Path(weights)
    if not path.is_file():
        raise InputError("no such weights file", path=str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read PyTorch weights: {type(exc).__name__}: {exc}", path=str(path)) from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"the weights do not fit the model: {_state_dict_mismatch(module, state, exc)}",
                         path=str(path)) from exc


def _state_dict_mismatch(module, state, exc: Exception) -> str:
    """One line saying how a state dict differs from ``module``'s (torch's own message spans many lines)."""
    own = module.state_dict()
    if not isinstance(state, dict):
        return f"the file holds a {type(state).__name__}, not a state dict"
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and hasattr(state[k], "shape")
             and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (first: {unexpected[0]})")
    if shape:
        k = shape[0]
        parts.append(f"{len(shape)} shape mismatch(es) (first: {k}: file {list(state[k].shape)}, "
                     f"model {list(own[k].shape)})")
    return "; ".join(parts) or str(exc).strip().splitlines()[0]


def _as_tuple(example_inputs) -> tuple:
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    return (example_inputs,)


def _verify_export(torch, module, model, args, input_names, output_names, trials: int, seed: int, rtol: float,
                   atol: float, path: Path) -> List[float]:
    """Run ``trials`` seeded random inputs through onnxruntime and torch; return the worst error per trial.

    Raises:
        VerificationError: a shape differs, or an error exceeds ``atol + rtol * |torch|``.
    """
    sess = make_session(model)
    rng = np.random.default_rng(seed)
    errors: List[float] = []
    for trial in range(trials):
        feeds = {}
        tensors = []
        for name, ex in zip(input_names, args):
            if ex.dtype.is_floating_point:
                arr = rng.standard_normal(tuple(ex.shape)).astype(np.float32)
            else:
                arr = rng.integers(0, 10, size=tuple(ex.shape)).astype(str(ex.dtype).replace("torch.", ""))
            feeds[name] = arr
            tensors.append(torch.from_numpy(arr))
        with torch.no_grad():
            ref = module(*tensors)
        ref = ref if isinstance(ref, (list, tuple)) else (ref,)
        got = sess.run(output_names, feeds)
        worst = 0.0
        for oname, r, g in zip(output_names, ref, got):
            r = r.detach().numpy()
            if r.shape != g.shape:
                raise VerificationError(f"onnxruntime output shape {g.shape} != torch {r.shape}", tensor=oname)
            err = np.abs(r.astype(np.float64) - g)
            bound = atol + rtol * np.abs(r)
            if np.any(err > bound):
                raise VerificationError(f"onnxruntime disagrees with torch on random input {trial}: "
                                        f"max abs error {float(err.max()):.3g}", tensor=oname,
                                        path=str(path), hint="the export is wrong; nothing was written")
            worst = max(worst, float(err.max()) if err.size else 0.0)
        errors.append(worst)
    return errors


def export_torch(module, example_inputs, path: PathLike, *, input_names: Optional[Sequence[str]] = None,
                 output_names: Optional[Sequence[str]] = None, opset: int = DEFAULT_OPSET, legacy: bool = False,
                 verify: bool = True, rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0,
                 trials: int = 3, on_start: Optional[Callable[[], None]] = None,
                 dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None) -> Dict[str, Any]:
    """Export ``module`` to ONNX at ``path`` and check onnxruntime against torch on random inputs.

    Args:
        module: a ``torch.nn.Module`` (put in eval mode here).
        example_inputs: a tensor or a tuple of tensors with the static shapes to export.
        path: the ``.onnx`` file to write (atomically; written only when the check passes).
        input_names / output_names: ONNX tensor names (default ``input``/``output`` with an index when several).
        opset: ai.onnx opset to target.
        legacy: use the TorchScript exporter instead of the torch.export (dynamo) one.
        verify: run the numerical check (``trials`` seeded random inputs, ``|ort - torch| <= atol + rtol*|torch|``).
        on_start: called once the module has run on the example input, before the export itself (progress).
        dynamic_axes: ``{input_name: {axis: dim_name}}`` (:func:`parse_dynamic_axes`): those axes are exported as
            symbolic dims (torch.onnx.export's ``dynamic_axes``; ``dynamic_shapes`` for the dynamo exporter).

    Returns:
        A report: path, sha256, opset, inputs, outputs, max absolute error per trial.

    Raises:
        MissingDependencyError: torch (or onnxscript for the default exporter) is missing.
        UnsupportedError: torch cannot export the module.
        VerificationError: onnxruntime's outputs differ from torch's.
    """
    torch = require("torch", "exporting PyTorch models")
    if not legacy:
        require("onnxscript", "torch's default ONNX exporter")
    module.eval()
    args = _as_tuple(example_inputs)
    n_in = len(args)
    input_names = list(input_names or (["input"] if n_in == 1 else [f"input_{i}" for i in range(n_in)]))
    with torch.no_grad():
        try:
            sample_out = module(*args)
        except Exception as exc:  # noqa: BLE001 - user code can raise anything
            shapes = ", ".join("x".join(map(str, a.shape)) for a in args)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"the model fails on an example input of shape {shapes}: {type(exc).__name__}: {text}",
                             hint="check --input") from exc
    if on_start is not None:  # the model runs: the (slow) export starts now
        on_start()
    outs = sample_out if isinstance(sample_out, (list, tuple)) else (sample_out,)
    output_names = list(output_names or (["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]))
    path = Path(path)
    report: Dict[str, Any] = {"path": str(path), "opset": opset, "exporter": "torchscript" if legacy else "dynamo",
                              "inputs": {n: list(a.shape) for n, a in zip(input_names, args)}, "outputs": output_names}
    with atomic_path(path, suffix=".onnx") as tmp:
        sink = io.StringIO()
        logging.disable(logging.WARNING)  # torch logs about optional torchvision ops on every export
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                warnings.simplefilter("ignore")
                torch.onnx.export(module, args, str(tmp), input_names=input_names, output_names=output_names,
                                  opset_version=opset, dynamo=not legacy, external_data=False,
                                  **_dynamic_kwargs(torch, dynamic_axes, input_names, legacy))
        except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedError(f"torch cannot export the model: {first}", path=str(path)) from exc
        finally:
            logging.disable(logging.NOTSET)
        model = load_model(tmp)
        if verify:
            errors = _verify_export(torch, module, model, args, input_names, output_names, trials, seed, rtol, atol,
                                    path)
            report["verification"] = {"trials": trials, "max_abs_error": errors, "rtol": rtol, "atol": atol}
    report["sha256"] = model_hash(path)
    if dynamic_axes:
        report["dynamic_axes"] = {n: {str(a): d for a, d in axes.items()} for n, axes in dynamic_axes.items()}
    return report


_AXIS_WORDS = {"batch": 0, "n": 0, "channels": 1, "c": 1, "height": 2, "h": 2, "width": 3, "w": 3}


def parse_dynamic_axes(specs: Sequence[str], input_names: Sequence[str],
                       ranks: Sequence[int]) -> Dict[str, Dict[int, str]]:
    """Parse ``--dynamic-axes`` values: ``input:0,2,3`` or ``input:batch,height,width`` (NCHW words).

    An axis given by number gets the name ``<input>_dim<axis>``, by word the word itself (``batch``).

    Raises:
        InputError: an unknown input name, an unknown word, or an axis outside the input's rank.
    """
    out: Dict[str, Dict[int, str]] = {}
    for spec in specs:
        name, sep, axes = spec.rpartition(":")
        if not sep:
            if len(input_names) != 1:
                raise InputError(f"--dynamic-axes {spec!r}: name the input (name:axes); inputs are "
                                 f"{', '.join(input_names)}")
            name = input_names[0]
        if name not in input_names:
            raise InputError(f"--dynamic-axes {spec!r}: no input named {name!r} (inputs: {', '.join(input_names)})")
        rank = ranks[list(input_names).index(name)]
        for word in (a.strip() for a in axes.split(",") if a.strip()):
            axis = int(word) if word.lstrip("-").isdigit() else _AXIS_WORDS.get(word.lower())
            if axis is None:
                raise InputError(f"--dynamic-axes {spec!r}: {word!r} is not an axis number or one of "
                                 f"{', '.join(sorted(_AXIS_WORDS))}")
            axis = axis + rank if axis < 0 else axis
            if not 0 <= axis < rank:
                raise InputError(f"--dynamic-axes {spec!r}: axis {word} is outside the input's rank {rank}")
            out.setdefault(name, {})[axis] = word if not word.lstrip("-").isdigit() else f"{name}_dim{axis}"
    return out


def _dynamic_kwargs(torch, dynamic_axes, input_names, legacy: bool) -> Dict[str, Any]:
    """torch.onnx.export's keyword for dynamic dims: ``dynamic_axes`` (TorchScript) or ``dynamic_shapes`` (dynamo)."""
    if not dynamic_axes:
        return {}
    if legacy:
        return {"dynamic_axes": {n: dict(a) for n, a in dynamic_axes.items()}}
    dims: Dict[str, Any] = {}
    shapes = []
    for name in input_names:
        axes = dynamic_axes.get(name) or {}
        shapes.append({a: dims.setdefault(d, torch.export.Dim(d.replace(".", "_"))) for a, d in axes.items()}
                      or None)
    return {"dynamic_shapes": tuple(shapes)}


def parse_example_shapes(shapes: Sequence[str]) -> Tuple[List[Optional[str]], List[List[int]]]:
    """Parse ``--input`` values for export: ``1x3x224x224`` or ``name:1x3x224x224`` (one per model input)."""
    names, dims = [], []
    for spec in shapes:
        name, sep, shape = spec.rpartition(":")
        names.append(name if sep else None)
        dims.append(parse_shape(shape))
    return names, dims
