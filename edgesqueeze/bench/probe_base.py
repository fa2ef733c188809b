"""The power-probe base class every probe module builds on (:mod:`edgesqueeze.bench.probes` picks one)."""
from __future__ import annotations

from typing import Callable, List, Optional


class PowerProbe:
    """Base class. ``available`` and ``reason`` say whether power is measurable and why not."""

    name = "none"
    streaming = False  # True: the probe pushes samples itself (start/stop) instead of being polled

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        self.rails: List[str] = []
        self.total_source: Optional[str] = None
        self.interval_ms = 100.0

    def read(self) -> dict:
        """Read one sample now."""
        raise NotImplementedError

    def start(self, sink: Callable[[dict], None]) -> None:
        """Streaming probes: start delivering samples to ``sink``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Streaming probes: stop; polled probes: release resources."""

    def describe(self) -> dict:
        """JSON-ready description for results."""
        return {"probe": self.name, "available": self.available, "reason": self.reason, "rails": list(self.rails),
                "total_source": self.total_source, "interval_ms": self.interval_ms}


class NullProbe(PowerProbe):
    """No power measurement; ``reason`` says why (e.g. what the other probes found)."""

    name = "none"

    def __init__(self, reason: str = "power measurement was not requested (--power none)") -> None:
        super().__init__()
        self.reason = reason

    def read(self) -> dict:
        return {"total_mw": None, "rails": {}, "energy_mj": None}
