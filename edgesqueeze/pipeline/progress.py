"""Progress for the build pipeline: one tqdm bar per stage on a terminal, one log line per stage otherwise."""
from __future__ import annotations

import sys
import time
from typing import Callable

class Progress:
    """One tqdm bar per stage on a terminal; one log line per stage otherwise."""

    def __init__(self, enabled: bool, log: Callable[[str], None], stages: int):
        self.enabled = enabled and sys.stderr.isatty()
        self.log = log
        self.index = 0
        self.stages = stages

    def stage(self, name: str, total: int = 1) -> "Bar":
        """The bar of the next stage, ``[i/n] name``; ``total`` steps (one unless the stage says more)."""
        self.index += 1
        return Bar(self, f"[{self.index}/{self.stages}] {name}", total)


class Bar:
    def __init__(self, progress: "Progress", desc: str, total: int):
        self.progress, self.desc, self.total = progress, desc, max(1, total)
        self.bar = None
        self.t0 = time.perf_counter()
        self.note = ""

    def __enter__(self) -> "Bar":
        if self.progress.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, file=sys.stderr, leave=True, dynamic_ncols=True,
                            bar_format="{desc:<22} {bar:30} {n_fmt}/{total_fmt} {elapsed}{postfix}")
        return self

    def set_total(self, total: int) -> None:
        """The stage knows its amount of work (batches) once it has opened its data."""
        self.total = max(1, total)
        if self.bar is not None:
            self.bar.reset(total=self.total)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def done(self, note: str) -> None:
        self.note = note

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.bar is not None:
            if exc_type is None:
                self.bar.n = self.total
                self.bar.set_postfix_str(self.note, refresh=False)
            self.bar.close()
        elif exc_type is None:
            self.progress.log(f"{self.desc}: {self.note} ({self.seconds:.1f} s)")


class CountingReader:
    """Wraps a DataReader so that iterating it advances a progress bar; everything else is delegated."""

    def __init__(self, reader, bar: Bar):
        self._reader, self._bar = reader, bar

    def __iter__(self):
        for feed in self._reader:
            yield feed
            self._bar.update(1)

    def __len__(self) -> int:
        return len(self._reader)

    def __getattr__(self, name):
        return getattr(self._reader, name)
