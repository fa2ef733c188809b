"""The class-dependent loss of Entezari & Saukh (SenSys-ML 2020) and the metrics it is judged by.

The loss is a class-weighted cross-entropy with the class-balanced weights of Cui et al. (2019),
``gamma_c = (1 - beta) / (1 - beta ** n_c)`` for a class with ``n_c`` training samples (normalised to sum to the
number of classes), plus a squared-hinge ranking term ``lam * sum_i max(0, 1 - y_i * r_i) ** 2`` as a surrogate of
the AUC of the important class: ``y_i`` is +1 for a sample of the important class and -1 otherwise, and ``r_i`` is
the model's score for the important class, its log-odds ``logit_p - logsumexp(other logits)``.

The metrics (AUC, false negatives / positives) are plain numpy; only the loss needs torch.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from .._lazy import require
from ..errors import InputError


def class_balanced_weights(counts: Sequence[int], beta: float = 0.999) -> np.ndarray:
    """Class-balanced weights ``(1 - beta) / (1 - beta ** n_c)``, normalised so they sum to the number of classes.

    Raises:
        InputError: ``beta`` outside [0, 1) or a class without samples.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if not 0.0 <= beta < 1.0:
        raise InputError(f"beta must be in [0, 1), got {beta}")
    if (counts <= 0).any():
        raise InputError("every class needs at least one training sample for class-balanced weights")
    w = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return w * (counts.size / w.sum())


def class_dependent_loss(counts: Sequence[int], positive: int, *, beta: float = 0.999, lam: float = 0.05):
    """Return ``loss(logits, targets)`` (torch tensors): class-balanced cross-entropy + ``lam`` x squared hinge.

    Args:
        counts: training samples per class (gives the class-balanced weights).
        positive: the important class.
        beta: the class-balanced weighting's beta (0 = plain cross-entropy weights).
        lam: weight of the ranking term (summed over the batch, as in the paper's formula).

    Raises:
        MissingDependencyError: torch is not installed.
        InputError: ``positive`` is not a class index.
    """
    torch = require("torch", "class-dependent pruning")
    if not 0 <= positive < len(counts):
        raise InputError(f"important class {positive} is not one of the {len(counts)} classes")
    weight = torch.tensor(class_balanced_weights(counts, beta), dtype=torch.float32)

    def loss(logits, targets):
        ce = torch.nn.functional.cross_entropy(logits, targets, weight=weight.to(logits.device))
        y = torch.where(targets == positive, 1.0, -1.0)
        return ce + lam * torch.sum(torch.clamp(1.0 - y * positive_score_t(logits, positive), min=0.0) ** 2)

    return loss


def positive_score_t(logits, positive: int):
    """Log-odds of class ``positive`` against all others (torch): ``logit_p - logsumexp(other logits)``."""
    torch = require("torch", "class-dependent pruning")
    others = torch.cat([logits[:, :positive], logits[:, positive + 1:]], dim=1)
    return logits[:, positive] - torch.logsumexp(others, dim=1)


def positive_score(logits: np.ndarray, positive: int) -> np.ndarray:
    """Numpy version of :func:`positive_score_t`."""
    logits = np.asarray(logits, dtype=np.float64)
    others = np.delete(logits, positive, axis=1)
    m = others.max(axis=1, keepdims=True)
    return logits[:, positive] - (m[:, 0] + np.log(np.exp(others - m).sum(axis=1)))


def auc_score(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None without both classes."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    npos, nneg = int(labels.sum()), int((~labels).sum())
    if npos == 0 or nneg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks = (first + (counts + 1) / 2.0)[inverse]   # average rank (1-based) over ties
    return float((ranks[labels].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def class_metrics(logits: np.ndarray, labels: np.ndarray, positive: Optional[int] = None) -> Dict[str, object]:
    """Accuracy, and for the important class: false negatives, false positives and AUC of its log-odds score.

    A false negative is a sample of the important class whose arg-max prediction is another class; a false
    positive is a sample of another class predicted as the important one.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    pred = logits.argmax(axis=1)
    out: Dict[str, object] = {"accuracy": float(np.mean(pred == labels)), "n": int(labels.size)}
    if positive is not None:
        pos = labels == positive
        out.update(fn=int(np.sum(pos & (pred != positive))), fp=int(np.sum(~pos & (pred == positive))),
                   positives=int(pos.sum()), auc=auc_score(positive_score(logits, positive), pos))
    return out
