"""Benchmarks: latency statistics, power and energy, memory bandwidth, roofline, reports.

>>> from edgesqueeze.backends import get_runner
>>> from edgesqueeze.bench import run_benchmark
>>> result = run_benchmark(get_runner("ort", "model.onnx"), feeds, iterations=200)   # doctest: +SKIP

Submodules: ``harness`` (timing loop), ``stats``, ``probes`` + ``tegrastats``/``ina3221``/``nvml``/``rapl``
(power), ``power`` (energy), ``bandwidth`` (EMC, GPM, analytic, roofline), ``schema`` (results format),
``trtexec`` (import), ``report`` and ``plots`` (Markdown and PNG; matplotlib is imported lazily).
"""
from __future__ import annotations

from .harness import run_benchmark
from .schema import SCHEMA, load_result, validate_result

__all__ = ["SCHEMA", "load_result", "run_benchmark", "validate_result"]
