"""Power probes and the background sampler that runs them during a benchmark.

A probe reads power now (``read()`` returns a sample) or streams samples by itself (tegrastats).
A sample is ``{"total_mw": float | None, "rails": {name: mW}, "energy_mj": float | None, ...}``:
``total_mw`` is instantaneous board/device power, ``energy_mj`` a cumulative energy counter
(NVML total energy, RAPL; already unwrapped). The :class:`PowerSampler` timestamps every sample
with ``time.perf_counter()``, the clock the harness times the inference window with.
"""
from __future__ import annotations

import threading
import time
from typing import List, Optional

from ..errors import DeviceError, InputError
from .ina3221 import Ina3221Probe
from .nvml import NvmlProbe
from .probe_base import NullProbe, PowerProbe
from .probe_tegrastats import TegrastatsProbe
from .rapl import RaplProbe

PROBES = ("auto", "tegrastats", "ina3221", "nvml", "rapl", "none")


class PowerSampler:
    """Poll (or listen to) a probe in a background thread; samples carry ``t`` from ``time.perf_counter()``.

    Args:
        probe: the probe; a probe that is not available yields no samples.
        interval_ms: polling interval for polled probes.
    """

    def __init__(self, probe: PowerProbe, interval_ms: float = 50.0) -> None:
        if interval_ms <= 0:
            raise InputError(f"the power sampling interval must be positive, got {interval_ms} ms")
        self.probe = probe
        self.interval = interval_ms / 1000.0
        self.samples: List[dict] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def _sink(self, sample: dict) -> None:
        sample = dict(sample)
        sample.setdefault("t", time.perf_counter())
        with self._lock:
            self.samples.append(sample)

    def _poll(self) -> None:
        next_t = time.perf_counter()
        while not self._stop.is_set():
            try:
                s = self.probe.read()
                s["t"] = time.perf_counter()
                with self._lock:
                    self.samples.append(s)
            except (OSError, ValueError):
                self.errors += 1
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.perf_counter()))

    def start(self) -> "PowerSampler":
        """Start sampling (no-op for an unavailable probe)."""
        if not self.probe.available:
            return self
        if self.probe.streaming:
            self.probe.start(self._sink)
        else:
            self._thread = threading.Thread(target=self._poll, name="edgesqueeze-power", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> List[dict]:
        """Stop sampling and return the samples (sorted by ``t``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.probe.stop()
        with self._lock:
            return sorted(self.samples, key=lambda s: s["t"])

    def snapshot(self) -> List[dict]:
        """The samples so far (copy)."""
        with self._lock:
            return list(self.samples)

    def __enter__(self) -> "PowerSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def select_probe(kind: str = "auto", *, sysfs_root: str = "/sys", interval_ms: float = 100.0) -> PowerProbe:
    """Return the probe for ``kind``; ``auto`` tries tegrastats, INA3221 sysfs, NVML, RAPL in that order.

    ``auto`` with nothing available returns a :class:`NullProbe` listing every reason.

    Raises:
        InputError: unknown probe name.
        DeviceError: an explicitly requested probe cannot work here (the message names it and says why).
    """
    kind = (kind or "auto").lower()
    if kind not in PROBES:
        raise InputError(f"unknown power probe '{kind}'; choose one of {', '.join(PROBES)}")
    if kind == "none":
        return NullProbe()
    makers = {"tegrastats": lambda: TegrastatsProbe(interval_ms=interval_ms),
              "ina3221": lambda: Ina3221Probe(sysfs_root),
              "nvml": NvmlProbe, "rapl": lambda: RaplProbe(sysfs_root)}
    if kind != "auto":
        probe = makers[kind]()
        if not probe.available:
            raise DeviceError(f"power probe '{kind}' is not available here: {probe.reason}",
                              hint="use --power auto to measure with whatever this machine has, or --power none")
        probe.interval_ms = interval_ms
        return probe
    reasons = []
    for name in ("tegrastats", "ina3221", "nvml", "rapl"):
        probe = makers[name]()
        if probe.available:
            probe.interval_ms = interval_ms
            return probe
        reasons.append(f"{name}: {probe.reason}")
    return NullProbe("not measurable here (" + "; ".join(reasons) + ")")


__all__ = ["PROBES", "NullProbe", "PowerProbe", "PowerSampler", "select_probe"]
