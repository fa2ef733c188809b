"""Recover a compressed network's accuracy by distillation from the original (Hinton et al. 2015), ``torch`` extra.

The student (the compressed ONNX) runs as a trainable torch module (:mod:`.onnx_torch`); the teacher runs on
onnxruntime. The loss is ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` on the first output's logits
(the input of a final Softmax when the graph ends in one), plus cross entropy when labels are given, plus FitNets
hint losses (Romero et al. 2015) on named intermediate tensors, through a 1x1 convolution regressor when the
student's channels differ from the teacher's (after channel pruning). Every weight that is exactly zero
(magnitude pruning, 2:4) stays zero: the mask is re-applied after each step; a weight with a k-means codebook
(``compress --share``) keeps its clusters: each step's update is averaged over the cluster, which fine-tunes
the centroids as Deep Compression does. Seeded and deterministic on the CPU; the result is exported back
through :func:`edgesqueeze.export.export_torch` (verified on onnxruntime) and re-fused by the optimizer.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import ModelProto

from .._lazy import require
from ..errors import InputError
from ..export import export_torch, opset_of_retrained
from ..fileio import atomic_path
from ..ortutil import make_session
from ..passes.optimizer import optimize
from ..plugins.dwsep import has_custom_nodes
from .onnx_torch import logits_of, onnx_module
from .training import distillation_loss

MAX_CODEBOOK = 256  # a weight with at most this many distinct values (and 4x as many entries) is shared
# --lr auto: the candidates of the short range test, and its length. Measured (benchmarks/RESULTS.md, "Channel
# pruning + recovery"): the digits CNN at 90 % magnitude pruning needs 1e-2, PP-OCR's classifier after
# --channels 0.5 diverges at 1e-2 and recovers at 1e-3: no single rate serves both.
LR_CANDIDATES = (1e-2, 3e-3, 1e-3, 3e-4)
PROBE_STEPS = 24
PROBE_SAMPLES = 256


@dataclass(frozen=True)
class RecoverOptions:
    """Training settings of :func:`recover` (the CLI's flags)."""

    epochs: int = 30
    lr: Optional[float] = None                # None: the short range test over LR_CANDIDATES picks it
    temperature: float = 4.0
    batch_size: int = 32
    patience: int = 5
    seed: int = 0
    hints: Tuple[Tuple[str, str], ...] = ()   # (student tensor, teacher tensor)
    hint_weight: float = 1.0
    output: Optional[str] = None              # the graph output to distil (None: the first)


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def _teacher_outputs(teacher: ModelProto, x: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Run the teacher on onnxruntime one sample at a time, reading ``names`` (graph outputs or intermediates)."""
    have = {o.name for o in teacher.graph.output}
    sess = make_session(teacher, optimize=True, extra_outputs=[n for n in dict.fromkeys(names) if n not in have])
    feed = sess.get_inputs()[0].name
    outs = [sess.run(list(names), {feed: x[i:i + 1]}) for i in range(x.shape[0])]
    return {n: np.concatenate([o[k] for o in outs]) for k, n in enumerate(names)}


def _codebooks(torch, module) -> Dict[str, object]:
    """Per shared weight: its cluster index of every entry (zeros excluded: the mask keeps them)."""
    books = {}
    for k, p in module.params.items():
        w = p.detach().numpy()
        if w.ndim < 2:
            continue
        values, idx = np.unique(w, return_inverse=True)
        if len(values) <= MAX_CODEBOOK and w.size >= 4 * len(values):
            books[k] = (torch.tensor(idx.reshape(-1)), len(values))
    return books


def _project(torch, module, masks, books) -> None:
    """Hold the compression after a step: zeros back to zero, each cluster back to one (its mean) value."""
    with torch.no_grad():
        for k, m in masks.items():
            module.params[k].mul_(m)
        for k, (idx, count) in books.items():
            p = module.params[k]
            flat = p.reshape(-1)
            sums = torch.zeros(count, dtype=p.dtype).index_add_(0, idx, flat)
            sizes = torch.zeros(count, dtype=p.dtype).index_add_(0, idx, torch.ones_like(flat))
            p.copy_((sums / sizes)[idx].reshape(p.shape))


def _regressors(torch, module, x0, hints, teacher_vals):
    """A 1x1 convolution per hint whose student and teacher channel counts differ (FitNets' regressor)."""
    with torch.no_grad():
        module(x0)
    regs = torch.nn.ModuleDict()
    for i, (s, t) in enumerate(hints):
        cs, ct = module.tapped[s].shape, teacher_vals[t].shape
        if len(cs) != len(ct) or cs[2:] != ct[2:]:
            raise InputError(f"hint {s}:{t}: shapes {list(cs)} and {list(ct)[1:]} differ beyond the channels",
                             tensor=s)
        if cs[1] != ct[1]:
            conv = {3: torch.nn.Conv1d, 4: torch.nn.Conv2d, 5: torch.nn.Conv3d}.get(len(cs), None)
            regs[str(i)] = conv(cs[1], ct[1], 1) if conv else torch.nn.Linear(cs[1], ct[1])
    return regs


def recover(student: ModelProto, teacher: ModelProto, x: np.ndarray, path, *, labels: Optional[np.ndarray] = None,
            val=None, options: RecoverOptions = RecoverOptions(),
            progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Distil ``teacher`` into ``student`` on inputs ``x`` and write the recovered model to ``path``.

    Args:
        labels: class labels of ``x`` (cross entropy is added), or None (distillation only).
        val: ``(x_val, labels_val or None)``: per epoch, top-1 against the labels (or agreement with the
            teacher without them), which drives early stopping (else the training loss does).
        options: epochs, learning rate (None: picked by a short range test, :func:`_probe_lr`), temperature, batch size, patience, seed, hints, the output to
            distil (the first by default; its logits: the input of a final Softmax).
        progress: called once with ``{"probe": {"lr", "losses", "steps"}}`` when the rate was probed, after
            every step with ``{"epoch", "step", "steps", "loss"}`` and after every epoch with
            ``{"epoch", "loss", "val", "metric", "end": True}``.

    Returns:
        A report: epochs run, per-epoch history, the best epoch, masked and shared weights, the export report.

    Raises:
        InputError: no samples, a hint tensor with an incompatible shape.
        UnsupportedError: an op the torch interpreter does not take (named), a tensor the model lacks.
    """
    torch = require("torch", "accuracy recovery by distillation")
    if x.shape[0] == 0:
        raise InputError("no training samples")
    o = options
    torch.manual_seed(o.seed)
    torch.use_deterministic_algorithms(True)
    out_name = o.output or student.graph.output[0].name
    for m, role in ((student, "student"), (teacher, "teacher")):
        if out_name not in {t.name for t in m.graph.output}:
            raise InputError(f"the {role} has no graph output '{out_name}' to distil "
                             f"(outputs: {', '.join(t.name for t in m.graph.output)})", tensor=out_name)
    s_logit = logits_of(student, out_name)
    t_logit = logits_of(teacher, out_name)
    module = onnx_module(student, taps=[s_logit] + [s for s, _ in o.hints])
    names = [t_logit] + [t for _, t in o.hints]
    tvals = _teacher_outputs(teacher, x, names)
    masks = {k: (p.detach() != 0).float() for k, p in module.params.items() if p.dim() > 1}
    books = _codebooks(torch, module)
    regs = _regressors(torch, module, torch.tensor(x[:1]), o.hints, tvals) if o.hints else torch.nn.ModuleDict()
    vsoft = _teacher_outputs(teacher, val[0], [t_logit])[t_logit] if val is not None else None
    batch = _Batch(torch, module, regs, x, labels, tvals, names, (masks, books), o)
    probe = _probe_lr(torch, batch) if o.lr is None else None
    lr = o.lr if probe is None else probe["lr"]
    if progress and probe is not None:
        progress({"probe": probe})
    opt = torch.optim.Adam(list(module.parameters()) + list(regs.parameters()), lr=lr)
    state = _train(torch, batch, opt, val, vsoft, progress)
    module.load_state_dict(state["best_state"])
    report = _export(torch, module, student, x, Path(path))
    hist = state["history"]
    return {"epochs_run": len(hist), "best_epoch": state["best_epoch"], "history": hist, "lr": lr,
            "lr_probe": probe, "val_metric": state["metric"], "masked_weights": len(masks),
            "shared_weights": len(books), **report}


class _Batch:
    """The training problem: the loss on a batch of sample indices, one optimizer step, the compression held."""

    def __init__(self, torch, module, regs, x, labels, tvals, names, held, options):
        self.torch, self.module, self.regs, self.x, self.labels = torch, module, regs, x, labels
        self.tvals, self.names, self.held, self.o = tvals, names, held, options

    def loss(self, idx: np.ndarray):
        """Distillation (+ cross entropy with labels, + hints) on the samples ``idx``."""
        torch, o, F = self.torch, self.o, self.torch.nn.functional
        self.module(torch.tensor(self.x[idx]))
        out = self.module.tapped[self.module.taps[0]]
        loss = distillation_loss(out, torch.tensor(self.tvals[self.names[0]][idx]), o.temperature)
        if self.labels is not None:
            loss = loss + F.cross_entropy(out, torch.tensor(self.labels[idx]).long())
        for i, (_, tn) in enumerate(o.hints):
            hs = self.module.tapped[self.module.taps[1 + i]]
            hs = self.regs[str(i)](hs) if str(i) in self.regs else hs
            loss = loss + o.hint_weight * F.mse_loss(hs, torch.tensor(self.tvals[tn][idx]))
        return loss

    def step(self, opt, idx: np.ndarray) -> float:
        loss = self.loss(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _project(self.torch, self.module, *self.held)
        return float(loss.detach())

    def state(self):
        return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in (self.module, self.regs)]

    def restore(self, state) -> None:
        self.module.load_state_dict(state[0])
        self.regs.load_state_dict(state[1])


def _probe_lr(torch, batch: _Batch) -> dict:
    """``--lr auto``: from the same start, PROBE_STEPS Adam steps at each of LR_CANDIDATES (the same batches);
    the rate whose loss on PROBE_SAMPLES fixed training samples ends lowest wins (a short learning-rate range
    test; a diverging rate scores None). The module is left as it was."""
    o, n = batch.o, len(batch.x)
    gen = torch.Generator().manual_seed(o.seed + 1)
    fixed = torch.randperm(n, generator=gen)[:PROBE_SAMPLES].numpy()
    steps = [torch.randint(n, (min(o.batch_size, n),), generator=gen).numpy() for _ in range(PROBE_STEPS)]
    start, scores = batch.state(), {}
    for lr in LR_CANDIDATES:
        batch.restore(start)
        opt = torch.optim.Adam(list(batch.module.parameters()) + list(batch.regs.parameters()), lr=lr)
        batch.module.train()
        for idx in steps:
            batch.step(opt, idx)
        batch.module.eval()
        with torch.no_grad():
            end = float(sum(batch.loss(fixed[s:s + 64]) * len(fixed[s:s + 64]) for s in range(0, len(fixed), 64)))
        scores[lr] = end / len(fixed) if np.isfinite(end) else None
    batch.restore(start)
    best = min(LR_CANDIDATES, key=lambda r: (float("inf") if scores[r] is None else scores[r], -r))
    return {"lr": best, "losses": scores, "steps": PROBE_STEPS}


def _epoch(torch, batch: _Batch, opt, epoch: int, gen, progress) -> float:
    o, x = batch.o, batch.x
    order, total, steps = torch.randperm(len(x), generator=gen), 0.0, (len(x) + o.batch_size - 1) // o.batch_size
    batch.module.train()
    for step, s in enumerate(range(0, len(x), o.batch_size), 1):
        idx = order[s:s + o.batch_size].numpy()
        total += batch.step(opt, idx) * len(idx)
        if progress:
            progress({"epoch": epoch, "step": step, "steps": steps, "loss": total / (s + len(idx))})
    return total / len(x)


def _train(torch, batch: _Batch, opt, val, vsoft, progress) -> dict:
    """Epochs at a constant rate, the best epoch's weights kept (validation metric, else training loss), stopping
    after ``patience`` epochs without improvement. (A cosine decay to zero over the epochs measured no better on
    ppocr_cls, 95.1 vs 95.3 % top-1, and worse on the 90 %-pruned digits CNN in 20 epochs, 86.0 vs 89.25 %.)"""
    o, module = batch.o, batch.module
    gen = torch.Generator().manual_seed(o.seed)
    metric = None if val is None else ("top1" if val[1] is not None else "agreement")
    best, best_state, best_epoch, history, stale = None, None, 0, [], 0
    for epoch in range(1, o.epochs + 1):
        loss = _epoch(torch, batch, opt, epoch, gen, progress)
        row = {"epoch": epoch, "loss": loss, "val": None, "metric": metric}
        if val is not None:
            pred = _predict(torch, module, val[0])
            row["val"] = _agree(pred, np.eye(pred.shape[1])[val[1]]) if val[1] is not None else _agree(pred, vsoft)
        history.append(row)
        if progress:
            progress({**row, "end": True})
        score = row["val"] if val is not None else -row["loss"]
        if best is None or score > best:
            best, stale, best_epoch = score, 0, epoch
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            stale += 1
            if stale >= o.patience:
                break
    return {"best_state": best_state, "best_epoch": best_epoch, "history": history, "metric": metric}


def _dynamic_axes(student: ModelProto) -> Dict[str, Dict[int, str]]:
    inp = student.graph.input[0]
    axes = {i: (d.dim_param or f"d{i}") for i, d in enumerate(inp.type.tensor_type.shape.dim) if d.dim_value <= 0}
    return {inp.name: axes} if axes else {}


def _export(torch, module, student: ModelProto, x: np.ndarray, path: Path) -> dict:
    """Export through ``export_torch`` (verified on onnxruntime), then re-fuse with the optimizer: the CPU passes,
    plus the GPU fusions when the student carried custom ``edgesqueeze::`` nodes."""
    name = student.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmpdir:
        raw = Path(tmpdir) / "exported.onnx"
        exp = export_torch(module, torch.tensor(x[:1]), raw, input_names=[name],
                           output_names=[o.name for o in student.graph.output], legacy=True,
                           dynamic_axes=_dynamic_axes(student) or None, opset=opset_of_retrained(student))
        exported = onnx.load(str(raw))
    # the student's custom nodes came from the GPU fusions (any GPU target runs the same ones)
    fused, rep = optimize(exported, target="orin-nano" if has_custom_nodes(student) else None,
                          feeds=[{name: x[:1]}])
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(fused, str(tmp))
    exp["path"] = str(path)
    return {"export": exp, "fusions": {k: v["count"] for k, v in rep["fusions"].items()}}


def _predict(torch, module, x: np.ndarray) -> np.ndarray:
    """The student's logits on ``x`` (eval mode, batches of 64)."""
    module.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(x), 64):
            module(torch.tensor(x[s:s + 64]))
            outs.append(module.tapped[module.taps[0]].numpy())
    return np.concatenate(outs)
