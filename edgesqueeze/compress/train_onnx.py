"""The training-based pruning methods on an ONNX model (``torch`` extra): iterative magnitude pruning with
fine-tuning, lottery tickets with rewinding, and class-dependent pruning (Entezari & Saukh 2020).

The model runs as a trainable torch module over its own graph (:func:`.onnx_torch.onnx_module`); the methods are
those of :mod:`.training`, which prune every Conv / Gemm / MatMul weight of such a module. The result is exported
back through :func:`edgesqueeze.export.export_torch` (checked on onnxruntime); pruned weights are exact zeros, so
``compress --share`` and ``pack`` compress them further. Seeded and deterministic on the CPU: the same inputs and
options give a byte-identical model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from onnx import ModelProto

from .._lazy import require
from ..errors import InputError, UnsupportedError
from ..export import export_torch, opset_of_retrained
from .class_loss import class_dependent_loss
from .onnx_torch import onnx_module
from .training import evaluate, finetune_shared, iterative_pruning, lottery_ticket, predict, prunable

LABELS_HINT = "give an .npz with a 'label' array, or an image folder with one subfolder per class"


@dataclass(frozen=True)
class TrainOptions:
    """What to run. ``schedule`` (iterative pruning) or ``rounds`` (lottery tickets), not both.

    ``reinit``: lottery tickets from freshly drawn weights ``W_0`` (Frankle & Carbin) instead of rewinding to the
    model's own (trained) weights. ``distill``: iterative pruning fine-tunes with distillation from the unpruned
    model's logits (``temperature``). ``important_class``: train with the class-dependent loss (``beta``,
    ``lam``) and report that class's false negatives / positives; lottery tickets from a fresh ``W_0``
    (``reinit``) then also prune by magnitude increase ``|W_k| - |W_0|`` as the paper does, unless ``criterion``
    says otherwise. Rewinding to trained weights they prune by magnitude: after a few epochs from a trained
    network ``|W_k| - |W_0|`` is mostly noise (on the digits CNN, class-dependent tickets pruned by it lost 6
    points of top-1 at 40 % sparsity, plain ones none). ``watch_class``: report a class's false negatives /
    positives without changing the loss (the plain baseline of class-dependent pruning).

    ``layer_sparsity``: ``((weight name, final sparsity), ...)`` for iterative pruning, layers pruned to their own
    target along the schedule's curve (:func:`.training.iterative_pruning`). ``share``: ``(conv_bits,
    fc_bits)`` runs Deep Compression's trained quantization afterwards: every pruned weight shared with a 1-D
    k-means codebook and the shared values fine-tuned ``share_epochs`` (``share_lr``; distilled too with
    ``distill``); ``share_bits`` overrides the width per weight. The written model then has at most ``2**bits``
    distinct non-zero values per layer, which ``compress --share`` with the same bits keeps exactly.
    """

    schedule: Optional[Tuple[float, ...]] = None
    rounds: Optional[int] = None
    prune_rate: float = 0.2
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    layerwise: bool = True
    important_class: Optional[int] = None
    watch_class: Optional[int] = None
    beta: float = 0.999
    lam: float = 0.05
    criterion: Optional[str] = None
    reinit: bool = False
    distill: bool = False
    temperature: float = 4.0
    layer_sparsity: Optional[Tuple[Tuple[str, float], ...]] = None
    share: Optional[Tuple[int, int]] = None
    share_bits: Optional[Tuple[Tuple[str, int], ...]] = None
    share_epochs: int = 5
    share_lr: float = 1e-4
    seed: int = 0

    @property
    def method(self) -> str:
        return "lottery" if self.rounds is not None else "iterative"

    def check(self) -> None:
        """Raise InputError for options that contradict each other (the ranges are checked by the methods)."""
        if (self.schedule is None) == (self.rounds is None):
            raise InputError("choose one method: an iterative pruning schedule or a number of lottery rounds")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise InputError(f"need epochs >= 1, batch size >= 1 and lr > 0, got {self.epochs}, "
                             f"{self.batch_size}, {self.lr}")
        if self.distill and self.method == "lottery":
            raise InputError("distillation applies to iterative pruning (lottery rounds rewind, there is no "
                             "unpruned teacher to follow)")
        if None not in (self.important_class, self.watch_class) and self.important_class != self.watch_class:
            raise InputError("the watched class is the important class when both are given")
        if self.reinit and self.method == "iterative":
            raise InputError("re-initialising applies to lottery tickets (iterative pruning fine-tunes the model)")
        if self.layer_sparsity and self.method == "lottery":
            raise InputError("per-layer sparsities apply to iterative pruning (lottery rounds prune --prune-rate)")
        if self.share_bits and self.share is None:
            raise InputError("per-layer sharing bits need sharing (share=(conv_bits, fc_bits))")
        if self.share is not None and (self.share_epochs < 0 or self.share_lr <= 0):
            raise InputError(f"need share_epochs >= 0 and share_lr > 0, got {self.share_epochs}, {self.share_lr}")


def labelled_arrays(spec: str, model: ModelProto) -> Tuple[np.ndarray, np.ndarray]:
    """The inputs and labels of ``spec`` (an ``.npz`` with ``label``, or an image folder of class subfolders).

    Raises:
        InputError: no labels, or data that does not fit the model (:func:`edgesqueeze.data.open_data`).
        UnsupportedError: a model with more than one input.
    """
    from ..data import open_data

    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(names) != 1:
        raise UnsupportedError(f"training needs a model with one input, this one has {len(names)}: {names}")
    reader = open_data(spec, model)
    if reader.labels is None:
        raise InputError("no labels: pruning with training needs a class index per sample", path=str(spec),
                         hint=LABELS_HINT)
    x = np.concatenate([feed[names[0]] for feed in reader]).astype(np.float32)
    return x, np.asarray(reader.labels[:len(x)], np.int64)


def _reinit(module) -> None:
    """Draw fresh weights like torch's layers do (Kaiming-uniform weights, zero biases), from the global seed."""
    torch = require("torch", "pruning with training")
    weights = {name for name, _ in prunable(module)}
    biases = {n.input[2] for n in module.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2}
    with torch.no_grad():
        for key, p in module.params.items():
            if module.names[key] in weights:
                torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            elif module.names[key] in biases:
                p.zero_()


def _class_counts(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=classes)


def train_onnx(model: ModelProto, train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray],
               path, opts: TrainOptions, progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Prune ``model`` with training on ``train = (x, labels)``, judge every round on ``val``, write ``path``.

    Returns:
        A report: method, options, one history row per round (sparsity, accuracy and, with an important class,
        fn, fp, positives, auc), the final row, the pruned weights and the export report.

    Raises:
        InputError: contradicting options, labels outside the model's classes, an empty training set.
        UnsupportedError: an op the torch module cannot run (named before training starts).
    """
    torch = require("torch", "pruning with training")
    opts.check()
    if len(train[0]) == 0:
        raise InputError("no training samples")
    torch.manual_seed(opts.seed)
    torch.use_deterministic_algorithms(True)
    positive = opts.important_class if opts.important_class is not None else opts.watch_class
    module = onnx_module(model)
    classes = predict(module, val[0][:1]).shape[1]
    _check_labels(train[1], val[1], classes, positive)
    loss_fn = (class_dependent_loss(_class_counts(train[1], classes), positive, beta=opts.beta, lam=opts.lam)
               if opts.important_class is not None else None)
    teacher = predict(module, train[0]) if opts.distill else None
    if opts.method == "iterative":
        module, masks, history = iterative_pruning(
            module, train, val, schedule=opts.schedule, epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size,
            layerwise=opts.layerwise, loss_fn=loss_fn, positive=positive, seed=opts.seed, teacher=teacher,
            temperature=opts.temperature, layer_sparsity=dict(opts.layer_sparsity or ()), progress=progress)
    else:
        def make():
            m = onnx_module(model)
            if opts.reinit:
                _reinit(m)
            return m

        module, masks, history = lottery_ticket(
            make, train, val, rounds=opts.rounds, prune_rate=opts.prune_rate, epochs=opts.epochs, lr=opts.lr,
            batch_size=opts.batch_size, layerwise=opts.layerwise, positive=positive,
            class_dependent=opts.important_class is not None, beta=opts.beta, lam=opts.lam, criterion=_criterion(opts),
            seed=opts.seed, progress=progress)
    report = {"method": opts.method, "options": _options(opts), "history": history, "final": history[-1],
              "pruned": {n: {"weights": int(m.numel()), "kept": int(m.sum())} for n, m in masks.items()}}
    if opts.share is not None:
        report["shared"] = _trained_quantization(module, train, val, opts, loss_fn, teacher, positive)
    report["export"] = export_module(module, model, path)
    return report


def _trained_quantization(module, train, val, opts: TrainOptions, loss_fn, teacher, positive) -> dict:
    """Share the pruned weights and fine-tune the shared values (Han et al.); the layers and the val metrics."""
    layers = finetune_shared(module, train, conv_bits=opts.share[0], fc_bits=opts.share[1],
                             bits=dict(opts.share_bits or ()), epochs=opts.share_epochs, lr=opts.share_lr,
                             batch_size=opts.batch_size, seed=opts.seed, loss_fn=loss_fn, teacher=teacher,
                             temperature=opts.temperature)
    return {"layers": layers, **evaluate(module, val, positive)}


def _criterion(opts: TrainOptions) -> str:
    if opts.criterion:
        return opts.criterion
    return "increase" if opts.important_class is not None and opts.reinit else "magnitude"


def _check_labels(ytrain: np.ndarray, yval: np.ndarray, classes: int, positive: Optional[int]) -> None:
    top = int(max(ytrain.max(initial=0), yval.max(initial=0)))
    if top >= classes:
        raise InputError(f"label {top} is not one of the model's {classes} classes (its first output's width)")
    if positive is not None and not 0 <= positive < classes:
        raise InputError(f"important class {positive} is not one of the model's {classes} classes")


def _options(opts: TrainOptions) -> dict:
    out = dict(vars(opts))
    out["schedule"] = list(opts.schedule) if opts.schedule is not None else None
    for key in ("layer_sparsity", "share_bits"):
        out[key] = dict(out[key]) if out[key] else None
    out["share"] = list(opts.share) if opts.share is not None else None
    return out


def export_module(module, model: ModelProto, path) -> dict:
    """Write ``module`` (:func:`.onnx_torch.onnx_module` of ``model``) as ONNX at ``path`` with ``model``'s input
    and output names and static input shape, through :func:`edgesqueeze.export.export_torch` (TorchScript path,
    checked on onnxruntime); returns its report."""
    torch = require("torch", "pruning with training")
    name = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}][0]
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return export_torch(module, torch.zeros(shape), Path(path), input_names=[name],
                        output_names=[o.name for o in model.graph.output], legacy=True,
                        opset=opset_of_retrained(model))


def parse_schedule(text: str) -> Tuple[float, ...]:
    """``"0.5,0.75,0.9"`` -> ``(0.5, 0.75, 0.9)``; InputError for anything else."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"expected sparsities such as 0.5,0.75,0.9, got '{text}'") from None


__all__: Sequence[str] = ["TrainOptions", "labelled_arrays", "train_onnx", "export_module", "parse_schedule",
                          "LABELS_HINT"]
