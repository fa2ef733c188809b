"""The pass registry: each pass is a function ``(graph, ctx) -> graph`` registered by name with its opset range.

A pass rewrites an onnx-graphsurgeon ``Graph``; it never mutates a weight in place (a folded weight is a new
constant, so a weight shared by two nodes stays right for the other one) and it records what it fused in the
:class:`PassContext`, which becomes the optimizer's report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import InputError

MAX_OPSET = 10 ** 6


@dataclass(frozen=True)
class Pass:
    """A registered graph pass.

    Attributes:
        name: the name users give to ``--passes`` / ``--skip``.
        fn: ``fn(graph, ctx) -> graph``.
        opsets: the ai.onnx opset range ``(min, max)`` the pass supports (inclusive).
        default: in the default pipeline (for every target).
        gpu_only: in the default pipeline only for GPU targets (still runs when asked by name).
        description: one line for ``--help`` and the docs.
    """

    name: str
    fn: Callable
    opsets: Tuple[int, int]
    default: bool
    gpu_only: bool
    description: str

    def supports(self, opset: int) -> bool:
        """True when the pass can run on a model of ai.onnx ``opset``."""
        return self.opsets[0] <= opset <= self.opsets[1]


#: every registered pass, by name, in pipeline order
PASSES: Dict[str, Pass] = {}


def register(name: str, *, opsets: Tuple[int, int] = (1, MAX_OPSET), default: bool = True, gpu_only: bool = False,
             description: str = "") -> Callable:
    """Decorator: register ``fn(graph, ctx) -> graph`` as pass ``name`` (pipeline order = registration order)."""
    def wrap(fn: Callable) -> Callable:
        if name in PASSES:
            raise ValueError(f"pass '{name}' registered twice")
        PASSES[name] = Pass(name, fn, opsets, default, gpu_only, description or (fn.__doc__ or "").split("\n")[0])
        return fn
    return wrap


def get_pass(name: str) -> Pass:
    """Return the pass called ``name``.

    Raises:
        InputError: no such pass (the message lists the known ones).
    """
    if name not in PASSES:
        raise InputError(f"unknown pass '{name}'; known passes: {', '.join(PASSES)}")
    return PASSES[name]


@dataclass
class PassContext:
    """What a pass may read (target, opset) and write (fusion records, fresh names)."""

    opset: int
    target: Optional[str] = None
    gpu: bool = False
    fusions: Dict[str, List[List[str]]] = field(default_factory=dict)
    _names: set = field(default_factory=set)
    _counter: int = 0

    def record(self, kind: str, nodes) -> None:
        """Record one fusion of ``kind`` made of ``nodes`` (gs nodes or names)."""
        self.fusions.setdefault(kind, []).append([getattr(n, "name", n) or "" for n in nodes])

    def reserve(self, names) -> None:
        """Mark ``names`` as taken (tensor and node names already in the graph)."""
        self._names.update(names)

    def unique(self, base: str) -> str:
        """Return a fresh, deterministic name derived from ``base``."""
        base = base or "es"
        name = base
        while name in self._names:
            self._counter += 1
            name = f"{base}_{self._counter}"
        self._names.add(name)
        return name
