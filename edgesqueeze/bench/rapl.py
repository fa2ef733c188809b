"""Intel/AMD RAPL energy counters in ``/sys/class/powercap`` (x86 CPU power).

``intel-rapl:<N>[:<M>]/{name, energy_uj, max_energy_range_uj}``. The counter wraps: when a reading is
lower than the previous one, delta = e2 + max_energy_range_uj - e1. ``energy_uj`` is root-only since
Linux 5.10; in a VM RAPL is usually absent. Total = ``psys`` where present, else packages + DRAM
(DRAM energy is not part of the package domain).
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional

from .probe_base import PowerProbe


def _read_int(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return int(fh.read().strip())


def unwrap(prev: int, cur: int, max_range: int) -> int:
    """Energy delta (uJ) between two raw readings of a counter that wraps at ``max_range``."""
    return cur - prev if cur >= prev else cur + max_range - prev


class RaplDomain:
    """One powercap zone with a wrap-corrected cumulative counter."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.zone = os.path.basename(path)
        with open(os.path.join(path, "name"), encoding="utf-8") as fh:
            name = fh.read().strip()
        parent = os.path.basename(os.path.dirname(path))
        self.name = f"{parent}/{name}" if parent.startswith("intel-rapl:") else name
        self.kind = name.split("-")[0]  # package | core | uncore | dram | psys
        self.top_level = self.zone.count(":") == 1
        self.max_range = _read_int(os.path.join(path, "max_energy_range_uj"))
        self._last: Optional[int] = None
        self.total_uj = 0

    def sample(self) -> int:
        """Read the counter; return the cumulative energy (uJ) since the first read, wraps corrected."""
        raw = _read_int(os.path.join(self.path, "energy_uj"))
        if self._last is not None:
            self.total_uj += unwrap(self._last, raw, self.max_range)
        self._last = raw
        return self.total_uj


class RaplProbe(PowerProbe):
    """Poll RAPL energy counters; samples carry ``energy_mj`` (cumulative) and per-domain energies."""

    name = "rapl"

    def __init__(self, root: str = "/sys") -> None:
        super().__init__()
        base = os.path.join(root, "class", "powercap")
        zones = sorted(glob.glob(os.path.join(base, "intel-rapl:*")) +
                       glob.glob(os.path.join(base, "intel-rapl:*", "intel-rapl:*")))
        seen, self.domains = set(), []
        for z in zones:
            real = os.path.realpath(z)
            if real in seen or os.path.basename(z).count(":") > 2:
                continue
            seen.add(real)
            try:
                self.domains.append(RaplDomain(z))
            except (OSError, ValueError):
                continue
        if not self.domains:
            self.reason = f"no RAPL domains under {base} (not an x86 host, or a VM without RAPL)"
            return
        try:
            for d in self.domains:
                d.sample()
        except PermissionError:
            self.reason = "RAPL energy_uj is readable by root only (Linux >= 5.10); run as root or chmod it"
            return
        except (OSError, ValueError) as exc:
            self.reason = f"RAPL counters unreadable: {exc}"
            return
        self.rails = [d.name for d in self.domains]
        psys = [d for d in self.domains if d.kind == "psys"]
        self._total: List[RaplDomain] = psys or [d for d in self.domains if d.top_level or d.kind == "dram"]
        self.total_source = "+".join(d.name for d in self._total)
        self.available = True
        self.reason = f"{len(self.domains)} RAPL domains; total = {self.total_source}"

    def read(self) -> dict:
        energies: Dict[str, float] = {d.name: d.sample() / 1000.0 for d in self.domains}
        total = sum(energies[d.name] for d in self._total)
        return {"total_mw": None, "rails_energy_mj": energies, "rails": {}, "energy_mj": total}
