"""How much does the benchmark harness itself cost? NoopRunner against a 1 ms inference (goal: < 1 %).

A NoopRunner busy-waits ``delay_ms`` per inference (a busy-wait, so the scheduler's tick does not blur it).
For each configuration the harness runs N timed iterations R times and reports:

- ``sample cost``: median measured latency minus the true delay (two clock reads + the call, inside a sample);
- ``loop cost``: wall time of the timed loop minus the sum of the samples, per iteration (outside a sample);
- ``overhead``: (sample cost + loop cost) / delay: what the harness adds to each inference;
- ``wall per iteration``: loop wall time / N, for transparency: on a shared machine it also holds the
  time the OS took the CPU away in the middle of a busy-wait (the mean latency shows the same; the median
  does not), which is the machine's noise, not the harness's cost.

Configurations: plain; with a progress callback; with power sampling every 10 ms from an INA3221 hwmon
tree built in a temporary folder (the polling thread competes for the GIL).

    python benchmarks/bench_harness_overhead.py            # prints a Markdown table
    python benchmarks/bench_harness_overhead.py --json out.json --iterations 2000 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgesqueeze.backends import NoopRunner  # noqa: E402
from edgesqueeze.bench import run_benchmark  # noqa: E402
from edgesqueeze.bench.ina3221 import Ina3221Probe  # noqa: E402


def ina3221_tree(root: Path) -> str:
    h = root / "bus" / "i2c" / "devices" / "1-0040"
    (h / "hwmon" / "hwmon1").mkdir(parents=True)
    (h / "name").write_text("ina3221\n")
    for ch, label in enumerate(["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"], start=1):
        (h / "hwmon" / "hwmon1" / f"in{ch}_label").write_text(label + "\n")
        (h / "hwmon" / "hwmon1" / f"in{ch}_input").write_text("5000\n")
        (h / "hwmon" / "hwmon1" / f"curr{ch}_input").write_text("300\n")
    return str(root)


def measure(delay_ms: float, iterations: int, repeats: int, mode: str, sysfs: str) -> dict:
    rows = []
    for _ in range(repeats):
        kw = {"power": "none"}
        if mode == "progress":
            calls = []
            kw["progress"] = lambda phase, done, total: calls.append(done)
        elif mode == "power":
            kw.update(power=Ina3221Probe(sysfs), power_interval_ms=10, idle_s=0.05)
        r = run_benchmark(NoopRunner(delay_ms=delay_ms), {"x": np.zeros(1, np.float32)}, warmup=50,
                          iterations=iterations, **kw)
        run = r["runs"][0]
        per_iter_ms = run["wall_s"] * 1000 / run["iterations"]
        rows.append({"median_ms": run["latency_ms"]["stats"]["median"], "loop_us": run["harness_overhead_us"],
                     "per_iter_ms": per_iter_ms, "mean_ms": run["latency_ms"]["stats"]["mean"]})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out = {"delay_ms": delay_ms, "mode": mode, "iterations": iterations, "repeats": repeats,
           "sample_cost_us": (med["median_ms"] - delay_ms) * 1000, "loop_cost_us": med["loop_us"],
           "per_iteration_ms": med["per_iter_ms"], "mean_latency_ms": med["mean_ms"]}
    cost_ms = (out["sample_cost_us"] + out["loop_cost_us"]) / 1000
    out["overhead_pct"] = cost_ms / delay_ms * 100 if delay_ms else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sysfs = ina3221_tree(Path(tmp))
        rows = [measure(0.0, args.iterations, args.repeats, "plain", sysfs)]
        for mode in ("plain", "progress", "power"):
            rows.append(measure(1.0, args.iterations, args.repeats, mode, sysfs))
    print("| inference | harness mode | sample cost (µs) | loop cost (µs/iter) | overhead | mean latency (ms) | "
          "wall per iteration (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ov = "-" if r["overhead_pct"] is None else f"{r['overhead_pct']:.3f} %"
        what = "no-op" if not r["delay_ms"] else f"{r['delay_ms']:g} ms busy-wait"
        print(f"| {what} | {r['mode']} | "
              f"{r['sample_cost_us']:.2f} | {r['loop_cost_us']:.2f} | {ov} | {r['mean_latency_ms']:.4f} | "
              f"{r['per_iteration_ms']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
