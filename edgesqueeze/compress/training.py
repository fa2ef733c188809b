"""Pruning with training (``torch`` extra): iterative magnitude pruning with fine-tuning (Han et al. 2015),
lottery-ticket rounds with rewinding (Frankle & Carbin 2019), and class-dependent pruning (Entezari & Saukh 2020).

Models are given as a factory ``model_fn() -> torch.nn.Module`` (seeded here, so the initial weights ``W_0`` are
reproducible); the weights of every ``Linear`` and ``Conv`` layer are pruned, biases are kept. An ONNX graph run as
a module (:func:`.onnx_torch.onnx_module`) works the same way: its Conv / Gemm / MatMul weights are pruned, named
after their initializers. Data is a pair of arrays ``(x, labels)``; fine-tuning can add distillation from a
teacher's logits (``teacher=``). Every round reports sparsity, accuracy and, with an important class, its false
negatives, false positives and AUC.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._lazy import require
from ..errors import InputError
from .class_loss import class_dependent_loss, class_metrics
from .onnx_torch import TRAINABLE
from .sharing import kmeans_1d

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _torch():
    return require("torch", "pruning with training")


def prunable(module) -> List[Tuple[str, object]]:
    """``(name, parameter)`` of the weights of every Linear / Conv layer, in module order; for a module over an
    ONNX graph (:func:`.onnx_torch.onnx_module`), of every Conv / Gemm / MatMul weight, named by initializer."""
    torch = _torch()
    if hasattr(module, "graph") and hasattr(module, "names"):
        weights = {n.input[i] for n in module.graph.node if n.op_type in WEIGHT_OPS
                   for i in TRAINABLE[n.op_type][:1] if i < len(n.input)}
        return [(module.names[k], p) for k, p in module.params.items()
                if module.names[k] in weights and p.dim() >= 2]
    out = []
    for name, mod in module.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            out.append((f"{name}.weight" if name else "weight", mod.weight))
    return out


def apply_masks(module, masks: Dict[str, object]) -> None:
    """Zero the pruned weights in place."""
    torch = _torch()
    with torch.no_grad():
        for name, p in prunable(module):
            if name in masks:
                p.mul_(masks[name])


def mask_sparsity(masks: Dict[str, object]) -> float:
    """Fraction of pruned weights over all masks."""
    total = sum(int(m.numel()) for m in masks.values())
    kept = sum(int(m.sum().item()) for m in masks.values())
    return 1.0 - kept / max(total, 1)


def train(module, data, *, loss_fn: Optional[Callable] = None, masks: Optional[Dict[str, object]] = None,
          epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
          teacher: Optional[np.ndarray] = None, temperature: float = 4.0, progress: Optional[Callable] = None):
    """Train ``module`` with Adam on ``data = (x, labels)``, keeping pruned weights at zero.

    Args:
        teacher: the teacher's logits on ``x`` (aligned): adds Hinton's distillation term
            ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` to the loss.
        progress: called after every epoch with ``{"epoch", "loss"}`` (mean training loss).

    Returns:
        The module (trained in place).
    """
    torch = _torch()
    x, y = _tensors(data)
    loss_fn = _with_teacher(loss_fn or torch.nn.functional.cross_entropy, teacher, temperature)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    module.train()
    for epoch in range(1, epochs + 1):
        order, total = torch.randperm(x.shape[0], generator=gen), 0.0
        for start in range(0, x.shape[0], batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            loss = loss_fn(module(x[idx]), y[idx], idx)
            loss.backward()
            opt.step()
            if masks:
                apply_masks(module, masks)
            total += float(loss.detach()) * len(idx)
        if progress:
            progress({"epoch": epoch, "loss": total / x.shape[0]})
    module.eval()
    return module


def _with_teacher(loss_fn: Callable, teacher: Optional[np.ndarray], temperature: float) -> Callable:
    """``loss(logits, targets, idx)``: ``loss_fn`` plus the distillation term on the samples ``idx``."""
    torch = _torch()
    if teacher is None:
        return lambda out, y, idx: loss_fn(out, y)
    logits = torch.as_tensor(np.asarray(teacher, np.float32))

    def loss(out, y, idx):
        return loss_fn(out, y) + distillation_loss(out, logits[idx], temperature)

    return loss


def distillation_loss(student, teacher, temperature: float):
    """Hinton's soft-target term, ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` (batch mean), on
    logits ``[N, C, ...]``: the one definition that ``train`` and :func:`edgesqueeze.compress.recover.recover` use."""
    F = _torch().nn.functional
    return F.kl_div(F.log_softmax(student / temperature, 1), F.softmax(teacher / temperature, 1),
                    reduction="batchmean") * temperature ** 2


def predict(module, x, batch_size: int = 1024) -> np.ndarray:
    """Logits of ``module`` on ``x`` as a numpy array."""
    torch = _torch()
    xt = _tensors((x, np.zeros(len(x), np.int64)))[0]
    module.eval()
    with torch.no_grad():
        return np.concatenate([module(xt[i:i + batch_size]).numpy() for i in range(0, xt.shape[0], batch_size)])


def evaluate(module, data, positive: Optional[int] = None) -> Dict[str, object]:
    """Accuracy (and false negatives / positives and AUC of the important class) of ``module`` on ``data``."""
    x, y = data
    return class_metrics(predict(module, x), np.asarray(y), positive)


def _tensors(data):
    """``(x, labels)`` as torch tensors with plain row-major strides. An array with a size-1 axis can carry
    other strides (``x[:, None]`` gives an ``N x 1 x H x W`` batch channels-last strides) that send torch to
    other CPU kernels, whose last bits differ: the same values would train to a different model."""
    torch = _torch()
    x, y = data
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, np.float32))
    y = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y, np.int64))
    return x.clone(memory_format=torch.contiguous_format), y


def _prune_step(module, masks, fraction: float, *, score_fn, layerwise: bool) -> None:
    """Remove ``fraction`` of the remaining weights with the lowest score (per layer or over all layers)."""
    params = dict(prunable(module))
    scores = {n: score_fn(n, params[n].detach()) for n in masks}
    if layerwise:
        for n, m in masks.items():
            _drop_lowest([scores[n]], [m], fraction)
    else:
        _drop_lowest([scores[n] for n in masks], list(masks.values()), fraction)


def _drop_lowest(scores, masks, fraction: float) -> None:
    torch = _torch()
    alive = torch.cat([s[m.bool()].flatten() for s, m in zip(scores, masks)])
    k = int(round(fraction * alive.numel()))
    if k <= 0:
        return
    threshold = torch.kthvalue(alive, k).values
    # ties at the threshold: drop in order until k are gone, so the count is exact and deterministic
    budget = k
    for s, m in zip(scores, masks):
        below = (s < threshold) & m.bool()
        m[below] = 0
        budget -= int(below.sum())
    for s, m in zip(scores, masks):
        if budget <= 0:
            break
        at = ((s == threshold) & m.bool()).flatten().nonzero().flatten()[:budget]
        m.view(-1)[at] = 0
        budget -= int(at.numel())


def _row(round_: int, masks, metrics: Dict[str, object]) -> Dict[str, object]:
    row = {"round": round_, "sparsity": round(mask_sparsity(masks), 6)}
    row.update(metrics)
    return row


def iterative_pruning(module, train_data, val_data, *, schedule: Sequence[float] = (0.5, 0.75, 0.9),
                      epochs: int = 5, lr: float = 1e-3, batch_size: int = 64, layerwise: bool = True,
                      loss_fn: Optional[Callable] = None, positive: Optional[int] = None, seed: int = 0,
                      teacher: Optional[np.ndarray] = None, temperature: float = 4.0,
                      layer_sparsity: Optional[Dict[str, float]] = None, progress: Optional[Callable] = None):
    """Han et al.'s prune / fine-tune cycle on a trained ``module``: prune to each sparsity of ``schedule`` by
    magnitude, fine-tune ``epochs`` with the mask fixed, never rewinding.

    ``layer_sparsity`` ``{weight name: final sparsity}`` gives those layers their own target (Han et al. set a
    threshold per layer from its sensitivity: a big fully-connected layer takes far more pruning than a
    convolution). Such a layer follows the schedule's curve in kept weights: at step ``i`` it keeps
    ``(1 - final) ** (log(1 - schedule[i]) / log(1 - schedule[-1]))``, so a geometric schedule (each step
    removes the same fraction of what is left) prunes every layer geometrically towards its own target. The
    other layers follow ``schedule`` itself (per layer, or ranked together with ``layerwise=False``).
    ``teacher`` / ``temperature``: distil from these logits while fine-tuning (:func:`train`). ``progress`` is
    called with every epoch's ``{"round", "epoch", "loss"}`` and every step's history row.

    Returns:
        ``(module, masks, history)``: the pruned module (modified in place), masks ``{weight name: 0/1 tensor}``,
        and one row per step (step 0 = the dense model).

    Raises:
        InputError: a schedule that is not increasing in [0, 1), a layer sparsity outside [0, 1) or naming no
            prunable weight.
    """
    torch = _torch()
    if any(not 0.0 <= s < 1.0 for s in schedule) or list(schedule) != sorted(schedule):
        raise InputError(f"pruning schedule must increase within [0, 1), got {list(schedule)}")
    masks = {n: torch.ones_like(p) for n, p in prunable(module)}
    targets = _layer_targets(layer_sparsity or {}, masks, schedule)
    history = [_row(0, masks, evaluate(module, val_data, positive))]
    if progress:
        progress(history[0])
    for i, target in enumerate(schedule, 1):
        rest = {n: m for n, m in masks.items() if n not in targets}
        _prune_to(module, rest, target, layerwise)
        for n, per_step in targets.items():
            _prune_to(module, {n: masks[n]}, per_step[i - 1], True)
        apply_masks(module, masks)
        train(module, train_data, loss_fn=loss_fn, masks=masks, epochs=epochs, lr=lr, batch_size=batch_size,
              seed=seed + i, teacher=teacher, temperature=temperature, progress=_in_round(progress, i))
        history.append(_row(i, masks, evaluate(module, val_data, positive)))
        if progress:
            progress(history[-1])
    return module, masks, history


def geometric_schedule(final: float, steps: int) -> Tuple[float, ...]:
    """Sparsities after each of ``steps`` prune steps that each remove the same fraction of the weights left,
    ending at ``final``: ``1 - (1 - final) ** (i / steps)`` (the late steps, where pruning hurts most, are small).

    Raises:
        InputError: ``final`` outside [0, 1) or ``steps`` < 1.
    """
    if not 0.0 <= final < 1.0 or steps < 1:
        raise InputError(f"need a final sparsity in [0, 1) and steps >= 1, got {final} and {steps}")
    return tuple(round(1.0 - (1.0 - final) ** (i / steps), 6) for i in range(1, steps + 1))


def _layer_targets(layer_sparsity: Dict[str, float], masks, schedule: Sequence[float]) -> Dict[str, List[float]]:
    """Every step's sparsity for the layers of ``layer_sparsity`` (see :func:`iterative_pruning`)."""
    unknown = sorted(set(layer_sparsity) - set(masks))
    if unknown:
        raise InputError(f"no prunable weight named {unknown[0]} (prunable: {', '.join(masks)})", tensor=unknown[0])
    bad = {n: s for n, s in layer_sparsity.items() if not 0.0 <= s < 1.0}
    if bad:
        name = sorted(bad)[0]
        raise InputError(f"sparsity must be in [0, 1), got {bad[name]}", tensor=name)
    last = math.log1p(-schedule[-1]) if schedule and schedule[-1] > 0 else 0.0
    curve = [math.log1p(-s) / last if last else 1.0 for s in schedule]
    return {n: [1.0 - (1.0 - s) ** c for c in curve] for n, s in layer_sparsity.items()}


def _prune_to(module, masks, target: float, layerwise: bool) -> None:
    """Prune the weights of ``masks`` by magnitude until they reach sparsity ``target`` together."""
    if not masks:
        return
    current = mask_sparsity(masks)
    fraction = (target - current) / (1.0 - current) if current < 1.0 else 0.0
    if fraction > 0:
        _prune_step(module, masks, fraction, score_fn=lambda n, w: w.abs(), layerwise=layerwise)


def _in_round(progress: Optional[Callable], round_: int) -> Optional[Callable]:
    return (lambda row: progress({"round": round_, **row})) if progress else None


def lottery_ticket(model_fn: Callable, train_data, val_data, *, rounds: int = 5, prune_rate: float = 0.2,
                   epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, layerwise: bool = True,
                   positive: Optional[int] = None, class_dependent: bool = False, beta: float = 0.999,
                   lam: float = 0.05, criterion: Optional[str] = None, seed: int = 0,
                   progress: Optional[Callable] = None):
    """Lottery-ticket rounds with rewinding; with ``class_dependent`` the variant of Entezari & Saukh.

    Each round trains the masked network from the initial weights ``W_0``, removes ``prune_rate`` of the
    remaining weights, and rewinds the survivors to ``W_0``. Plain lottery tickets train with cross-entropy and
    prune the smallest ``|W_k|``; the class-dependent variant trains with :func:`class_dependent_loss` (needs
    ``positive``) and prunes the smallest magnitude increase ``|W_k| - |W_0|``.

    Args:
        model_fn: builds the network (called once, after ``torch.manual_seed(seed)``).
        train_data, val_data: ``(x, labels)`` arrays.
        rounds: pruning rounds after the dense round 0 (sparsity after k rounds: ``1 - (1 - prune_rate) ** k``).
        prune_rate: fraction of the remaining weights removed per round.
        epochs, lr, batch_size: training of every round (Adam).
        layerwise: prune the same fraction in every layer (else one global ranking).
        positive: the important class (metrics for it; required when ``class_dependent``).
        beta, lam: parameters of the class-dependent loss.
        criterion: ``"magnitude"`` (|W_k|) or ``"increase"`` (|W_k| - |W_0|); by default ``"increase"`` with
            ``class_dependent`` and ``"magnitude"`` without (set it to separate the effect of loss and criterion).
        seed: seeds the initial weights and the batch order.
        progress: called with every epoch's ``{"round", "epoch", "loss"}`` and every round's history row.

    Returns:
        ``(module, masks, history)``: the last round's trained sparse module, its masks and one row per round:
        round, sparsity, accuracy, n and, with ``positive``, fn, fp, positives, auc.

    Raises:
        InputError: ``prune_rate`` outside (0, 1), ``rounds`` < 0, ``class_dependent`` without ``positive``, or an
            unknown ``criterion``.
    """
    torch = _torch()
    criterion = criterion or ("increase" if class_dependent else "magnitude")
    if criterion not in ("magnitude", "increase"):
        raise InputError(f"unknown pruning criterion '{criterion}' (use 'magnitude' or 'increase')")
    if not 0.0 < prune_rate < 1.0 or rounds < 0:
        raise InputError(f"need 0 < prune_rate < 1 and rounds >= 0, got {prune_rate} and {rounds}")
    if class_dependent and positive is None:
        raise InputError("class-dependent pruning needs the important class (positive=...)")
    torch.manual_seed(seed)
    module = model_fn()
    init = copy.deepcopy(module.state_dict())
    w0 = {n: p.detach().clone() for n, p in prunable(module)}
    masks = {n: torch.ones_like(p) for n, p in prunable(module)}
    loss_fn = None
    if class_dependent:
        counts = np.bincount(np.asarray(train_data[1]), minlength=int(np.max(train_data[1])) + 1)
        loss_fn = class_dependent_loss(counts, positive, beta=beta, lam=lam)
    if criterion == "increase":
        score = lambda n, w: w.abs() - w0[n].abs()  # noqa: E731 - magnitude increase since W_0
    else:
        score = lambda n, w: w.abs()  # noqa: E731
    history = []
    for k in range(rounds + 1):
        if k > 0:
            _prune_step(module, masks, prune_rate, score_fn=score, layerwise=layerwise)
            module.load_state_dict(init)          # rewind the survivors to W_0
            apply_masks(module, masks)
        train(module, train_data, loss_fn=loss_fn, masks=masks, epochs=epochs, lr=lr, batch_size=batch_size,
              seed=seed, progress=_in_round(progress, k))
        history.append(_row(k, masks, evaluate(module, val_data, positive)))
        if progress:
            progress(history[-1])
    return module, masks, history


def finetune_shared(module, train_data, *, conv_bits: int = 8, fc_bits: int = 5, epochs: int = 5,
                    lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                    loss_fn: Optional[Callable] = None, teacher: Optional[np.ndarray] = None,
                    temperature: float = 4.0, bits: Optional[Dict[str, int]] = None) -> Dict[str, dict]:
    """Han et al.'s trained quantization: share every Linear / Conv weight with 1-D k-means (linear
    initialisation; pruned zeros stay zero), then fine-tune the shared values (centroids) themselves.

    The gradient of a centroid is the sum of the gradients of the weights in its cluster; the other parameters
    (biases) train as usual; ``teacher`` adds distillation as in :func:`train`. Afterwards each layer holds at
    most ``2**bits`` distinct non-zero values, so
    :func:`edgesqueeze.compress.share_weights` on the exported model reproduces them exactly.

    ``bits`` overrides the width per weight name (``{name: bits}``).

    Returns:
        ``{weight name: {"bits", "codebook" (size), "nonzero"}}``; the module is modified in place.

    Raises:
        InputError: bits outside 1..16, or an override naming no prunable weight.
    """
    torch = _torch()
    bits = dict(bits or {})
    names = dict(prunable(module))
    unknown = sorted(set(bits) - set(names))
    if unknown:
        raise InputError(f"no prunable weight named {unknown[0]} (prunable: {', '.join(names)})", tensor=unknown[0])
    for b in [conv_bits, fc_bits, *bits.values()]:
        if not 1 <= int(b) <= 16:
            raise InputError(f"bits must be in 1..16, got {b}")
    shared = {}
    for name, p in names.items():
        w = p.detach().cpu().numpy()
        nz = w != 0
        b = int(bits.get(name, conv_bits if p.dim() > 2 else fc_bits))
        code, labels = kmeans_1d(w[nz], 2 ** b)
        shared[name] = (p, torch.tensor(code, requires_grad=True), torch.as_tensor(labels),
                        torch.as_tensor(nz), b)
    weights = {id(p) for p, *_ in shared.values()}
    others = [p for p in module.parameters() if id(p) not in weights]
    opt = torch.optim.Adam([c for _, c, *_ in shared.values()] + others, lr=lr)

    def load():
        with torch.no_grad():
            for p, code, labels, nz, _ in shared.values():
                p.zero_()
                p[nz] = code[labels]

    x, y = _tensors(train_data)
    loss_fn = _with_teacher(loss_fn or torch.nn.functional.cross_entropy, teacher, temperature)
    gen = torch.Generator().manual_seed(seed)
    module.train()
    load()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            for p, *_ in shared.values():
                p.grad = None
            loss_fn(module(x[idx]), y[idx], idx).backward()
            for p, code, labels, nz, _ in shared.values():
                code.grad = torch.zeros_like(code).index_add_(0, labels, p.grad[nz])
            opt.step()
            load()
    module.eval()
    return {n: {"bits": b, "codebook": int(c.numel()), "nonzero": int(nz.sum())}
            for n, (_, c, _, nz, b) in shared.items()}
