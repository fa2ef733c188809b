"""Recover a compressed network's accuracy by distillation from the original (Hinton et al. 2015), ``torch`` extra.

The student (the compressed ONNX) runs as a trainable torch module (:mod:`.onnx_torch`); the teacher runs on
onnxruntime. The loss is ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` on the first output, plus
cross entropy when labels are given. Every weight that is exactly zero (magnitude pruning, 2:4) stays zero: the
mask is re-applied after each step. Seeded and deterministic on the CPU; the result is exported back through
:func:`edgesqueeze.export.export_torch`, which verifies it on onnxruntime.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
from onnx import ModelProto

from .._lazy import require
from ..errors import InputError
from ..export import export_torch
from ..ortutil import make_session
from .onnx_torch import onnx_module


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def recover(student: ModelProto, teacher: ModelProto, x: np.ndarray, path, *, labels: Optional[np.ndarray] = None,
            val=None, epochs: int = 30, lr: float = 1e-2, temperature: float = 4.0, batch_size: int = 32,
            patience: int = 5, seed: int = 0, progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Distil ``teacher`` into ``student`` on inputs ``x`` and write the recovered model to ``path``.

    Args:
        val: ``(x_val, labels_val)`` for the per-epoch top-1 that drives early stopping (else the training loss).
        patience: epochs without improvement before stopping; the best epoch's weights are exported.
        progress: called once per epoch with ``{"epoch", "loss", "val_top1"}``.

    Returns:
        A report: epochs run, per-epoch history, the best epoch, the export report.
    """
    torch = require("torch", "accuracy recovery by distillation")
    F = torch.nn.functional
    if x.shape[0] == 0:
        raise InputError("no training samples")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    sess = make_session(teacher)
    name = sess.get_inputs()[0].name
    soft = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(x.shape[0])])
    module = onnx_module(student)
    masks = {k: (p.detach() != 0).float() for k, p in module.params.items() if p.dim() > 1}
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    xt, tt = torch.tensor(x), torch.tensor(soft)
    yt = torch.tensor(labels) if labels is not None else None
    best, best_state, history, stale = None, None, [], 0
    for epoch in range(1, epochs + 1):
        module.train()
        order, total = torch.randperm(len(xt), generator=gen), 0.0
        for s in range(0, len(xt), batch_size):
            idx = order[s:s + batch_size]
            out = module(xt[idx])
            out = out[0] if isinstance(out, tuple) else out
            loss = F.kl_div(F.log_softmax(out / temperature, 1), F.softmax(tt[idx] / temperature, 1),
                            reduction="batchmean") * temperature ** 2
            if yt is not None:
                loss = loss + F.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for k, m in masks.items():
                    module.params[k].mul_(m)
            total += float(loss.detach()) * len(idx)
        row = {"epoch": epoch, "loss": total / len(xt), "val_top1": None}
        if val is not None:
            row["val_top1"] = _top1(_predict(torch, module, val[0]), val[1])
        history.append(row)
        if progress:
            progress(row)
        score = row["val_top1"] if val is not None else -row["loss"]
        if best is None or score > best:
            best, stale = score, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    module.load_state_dict(best_state)
    shape = [d.dim_value or 1 for d in student.graph.input[0].type.tensor_type.shape.dim]
    exp = export_torch(module, torch.zeros(shape), Path(path), input_names=[name],
                       output_names=[o.name for o in student.graph.output], legacy=True)
    best_epoch = max(history, key=lambda r: r["val_top1"] if val is not None else -r["loss"])["epoch"]
    return {"epochs_run": len(history), "best_epoch": best_epoch, "history": history, "export": exp,
            "masked_weights": len(masks)}


def _predict(torch, module, x: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        out = module(torch.tensor(x))
    out = out[0] if isinstance(out, tuple) else out
    return out.numpy()
