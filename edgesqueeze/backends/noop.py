"""A runner that does nothing (or spins for a fixed time): it measures the benchmark harness itself."""
from __future__ import annotations

import time
from typing import Dict, Mapping, Optional

import numpy as np

from ..errors import InputError
from .base import InputMetadata, Runner


class NoopRunner(Runner):
    """A runner whose inference is empty or a busy-wait of ``delay_ms``.

    With ``delay_ms=0`` the measured latency is the harness's own per-sample cost (two clock reads and a
    method call); with ``delay_ms=1`` the loop's wall time beyond N x 1 ms is the harness overhead.
    A busy-wait, not ``time.sleep``, because sleep overshoots by the scheduler's tick.

    Args:
        inputs: input metadata to validate against (default: one float32 input ``x`` of shape [1]).
        outputs: arrays every ``infer`` returns (default: none).
        delay_ms: time each inference takes.
    """

    name = "noop"

    def __init__(self, inputs: Optional[Mapping[str, dict]] = None,
                 outputs: Optional[Mapping[str, np.ndarray]] = None, delay_ms: float = 0.0) -> None:
        super().__init__()
        if delay_ms < 0:
            raise InputError(f"delay_ms must be >= 0, got {delay_ms}")
        self._meta = InputMetadata(inputs or {"x": {"shape": [1], "dtype": np.dtype(np.float32)}})
        self._outputs = dict(outputs or {})
        self._delay_ns = int(round(delay_ms * 1e6))

    def input_metadata(self) -> InputMetadata:
        return self._meta

    def describe(self) -> dict:
        return {"name": self.name, "version": None, "precision": "none", "delay_ms": self._delay_ns / 1e6}

    def for_batch(self, batch: int) -> "NoopRunner":
        meta = {n: {"shape": [batch] + list(s["shape"][1:]), "dtype": s["dtype"]} for n, s in self._meta.items()}
        return NoopRunner(meta, self._outputs, self._delay_ns / 1e6)

    def _activate(self) -> None:
        pass

    def _infer(self, feeds) -> Dict[str, np.ndarray]:
        if self._delay_ns:
            end = time.perf_counter_ns() + self._delay_ns
            while time.perf_counter_ns() < end:
                pass
        return self._outputs

    def _deactivate(self) -> None:
        pass
