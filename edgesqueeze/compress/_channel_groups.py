"""Channel groups for channel pruning: a union-find over producers' output channels, and tensor layouts."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np


class Groups:
    """Union-find over channel groups with a size, the producers' filter norms and a frozen reason."""

    def __init__(self):
        self.parent: List[int] = []
        self.size: List[int] = []
        self.frozen: Dict[int, str] = {}
        self.scores: Dict[int, np.ndarray] = {}
        self.producers: Dict[int, List[str]] = {}

    def new(self, size: int, producer: Optional[str] = None, score: Optional[np.ndarray] = None,
            frozen: Optional[str] = None) -> int:
        g = len(self.parent)
        self.parent.append(g)
        self.size.append(size)
        self.producers[g] = [producer] if producer else []
        if score is not None:
            self.scores[g] = score
        if frozen:
            self.frozen[g] = frozen
        return g

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self.parent[b] = a
        if a in self.scores and b in self.scores:
            self.scores[a] = self.scores[a] + self.scores.pop(b)
        elif b in self.scores:
            self.scores[a] = self.scores.pop(b)
        self.producers[a] += self.producers.pop(b, [])
        if b in self.frozen:
            self.frozen.setdefault(a, self.frozen.pop(b))

    def freeze(self, g: int, reason: str) -> None:
        self.frozen.setdefault(self.find(g), reason)


class Layout:
    """The channel groups along axis 1 of a tensor: segments of (group, size); ``rep`` > 1 after a Flatten."""

    def __init__(self, segments: List[Tuple[int, int]], rep: int = 1):
        self.segments = segments
        self.rep = rep

    @property
    def channels(self) -> int:
        return sum(n for _, n in self.segments)


def unite(a: Layout, b: Layout, groups: Groups) -> bool:
    """Unite two layouts segment by segment (same structure needed); False when they cannot be matched."""
    if a.rep != b.rep or [n for _, n in a.segments] != [n for _, n in b.segments]:
        return False
    for (ga, _), (gb, _) in zip(a.segments, b.segments):
        groups.union(ga, gb)
    return True
