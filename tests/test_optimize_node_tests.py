"""The ONNX backend node tests still produce their reference outputs after optimize.

The onnx wheel ships the node-test *definitions* (``onnx/backend/test/case/node``) but not always the generated
``onnx/backend/test/data/node/*`` folders; both hold the same models and reference data, so this reads the
folders when present and otherwise builds the cases in memory with ``collect_testcases`` (~10 s).

A case is skipped (and counted, with the reason) when it has non-tensor inputs/outputs (sequences, optionals,
maps), when onnxruntime cannot run the original model, or when onnxruntime's own result already disagrees with
the reference. Everything else must still match the reference after ``optimize`` (default passes, and the GPU
pipeline with the depthwise-separable fusion).
"""
from __future__ import annotations

import warnings
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgesqueeze.ortutil import make_session
from edgesqueeze.passes import optimize

# ops the passes rewrite or fold: always in the fast subset
FOCUS = ("conv", "batchnorm", "gemm", "matmul", "identity", "dropout", "reshape", "transpose", "cast", "pad",
         "shape", "size", "constant", "clip", "relu", "leakyrelu", "sigmoid", "hardsigmoid", "hardswish", "mul",
         "add", "sub", "div", "split", "flatten", "squeeze", "unsqueeze", "expand")


def _from_folder(folder: Path):
    model = onnx.load(str(folder / "model.onnx"))
    data = folder / "test_data_set_0"

    def read(prefix, n):
        out = []
        for i in range(n):
            path = data / f"{prefix}_{i}.pb"
            if not path.exists():
                return None
            t = onnx.TensorProto()
            t.ParseFromString(path.read_bytes())
            out.append(numpy_helper.to_array(t))
        return out

    return folder.name, model, read("input", len(model.graph.input)), read("output", len(model.graph.output))


@lru_cache(maxsize=1)
def _cases():
    root = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
    if root.is_dir() and any(root.iterdir()):
        return "data/node folders", [_from_folder(d) for d in sorted(root.iterdir()) if (d / "model.onnx").exists()]
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    return "collect_testcases()", [(c.name, c.model, list(c.data_sets[0][0]), list(c.data_sets[0][1]))
                                   for c in cases]


def _close(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.allclose(a.astype(np.complex128 if a.dtype.kind == "c" else np.float64),
                                b.astype(np.complex128 if b.dtype.kind == "c" else np.float64),
                                rtol=1e-3, atol=1e-5, equal_nan=True))
    return bool(np.array_equal(a, b))


def _sweep(cases, target=None):
    stats, failures = Counter(), []
    for name, model, inputs, outputs in cases:
        ios = list(model.graph.input) + list(model.graph.output)
        if inputs is None or outputs is None or any(not vi.type.HasField("tensor_type") for vi in ios) or \
                not all(isinstance(x, np.ndarray) for x in list(inputs) + list(outputs)):
            stats["skipped: non-tensor inputs or outputs"] += 1
            continue
        feeds = {vi.name: x for vi, x in zip(model.graph.input, inputs)}
        try:
            got = make_session(model).run(None, feeds)
        except Exception:  # noqa: BLE001 - any onnxruntime failure means: not a case we can check
            stats["skipped: onnxruntime cannot run the original"] += 1
            continue
        if not all(_close(g, r) for g, r in zip(got, outputs)):
            stats["skipped: onnxruntime disagrees with the reference"] += 1
            continue
        try:
            out, _ = optimize(model, target=target, verify=False)
            after = make_session(out).run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - reported below with the case name
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if all(_close(g, r) for g, r in zip(after, outputs)):
            stats["run: matches the reference after optimize"] += 1
        else:
            failures.append(f"{name}: output differs from the reference after optimize")
    return stats, failures


def _report(source, stats, failures):
    lines = [f"node tests from {source}:"] + [f"  {v:5d} {k}" for k, v in sorted(stats.items())]
    print("\n".join(lines))
    assert not failures, "\n".join(failures[:20])


def test_node_tests_subset():
    """Every 16th case plus every case of an op the passes touch."""
    source, cases = _cases()
    subset = [c for i, c in enumerate(cases) if i % 16 == 0 or any(c[0].startswith(f"test_{op}") for op in FOCUS)]
    stats, failures = _sweep(subset)
    assert stats["run: matches the reference after optimize"] >= 200
    _report(source, stats, failures)


@pytest.mark.slow
@pytest.mark.parametrize("target", [None, "orin-nano"], ids=["default-passes", "orin-nano-passes"])
def test_node_tests_all(target):
    source, cases = _cases()
    stats, failures = _sweep(cases, target=target)
    assert stats["run: matches the reference after optimize"] >= 1000
    _report(source, stats, failures)
