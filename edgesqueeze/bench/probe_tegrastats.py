"""Power (and EMC, GPU load) from a running ``tegrastats --interval N`` on a Jetson."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from typing import Callable, List, Optional, Sequence

from .probe_base import PowerProbe
from .tegrastats import TegrastatsParseError, parse_line


class TegrastatsProbe(PowerProbe):
    """Stream samples from tegrastats; each parsed line becomes a sample stamped on arrival.

    Args:
        interval_ms: tegrastats' ``--interval``.
        command: the command to run (default ``tegrastats --interval N``); tests pass a script that
            prints recorded lines.
    """

    name = "tegrastats"
    streaming = True

    def __init__(self, interval_ms: float = 100.0, command: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.interval_ms = interval_ms
        self.raw: List[str] = []
        self.skipped = 0
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None
        exe = shutil.which("tegrastats")
        if command is None and exe is None:
            self.reason = "tegrastats not found on PATH (not a Jetson)"
            return
        self.command: List[str] = list(command) if command else [exe, "--interval", str(int(interval_ms))]
        self.available = True
        self.reason = f"{' '.join(self.command)}"

    def start(self, sink: Callable[[dict], None]) -> None:
        try:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, bufsize=1)
        except OSError as exc:
            self.available = False
            self.reason = f"cannot start tegrastats: {exc}"
            return
        self._thread = threading.Thread(target=self._pump, args=(sink,), name="edgesqueeze-tegrastats", daemon=True)
        self._thread.start()

    def _pump(self, sink: Callable[[dict], None]) -> None:
        for line in self._proc.stdout:
            t = time.perf_counter()
            line = line.rstrip("\n")
            if not line.strip():
                continue
            self.raw.append(line)
            try:
                s = parse_line(line)
            except TegrastatsParseError:
                self.skipped += 1
                continue
            s["t"] = t
            if not self.rails and s["rails"]:
                self.rails = sorted(s["rails"])
                self.total_source = s["total_source"]
            sink(s)

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None

    def describe(self) -> dict:
        d = super().describe()
        d["raw"] = list(self.raw)
        d["skipped_lines"] = self.skipped
        return d
