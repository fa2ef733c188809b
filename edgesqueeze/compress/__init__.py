"""Model compression on ONNX weights: pruning (magnitude, 2:4, channels), low-rank factorisation, weight
sharing, and the Huffman-coded ``.esq`` storage format (``edgesqueeze.compress.esq``).

Every function takes a ModelProto (never modified) and returns ``(new model, report dict)``. The training-based
parts (iterative pruning with fine-tuning, lottery tickets, class-dependent pruning) live in
``edgesqueeze.compress.training`` and need the ``torch`` extra.
"""
from __future__ import annotations

from .channels import prune_channels
from .lowrank import low_rank
from .magnitude import prune_magnitude
from .sharing import kmeans_1d, share_weights
from .sparse24 import is_2_4, sparsify_2_4

__all__ = ["prune_magnitude", "sparsify_2_4", "is_2_4", "prune_channels", "low_rank", "share_weights",
           "kmeans_1d"]
