"""Seeded random weights for numerical checks of models whose weights are constant fills.

The light Model-Zoo models build every weight with ``ConstantOfShape``: all outputs come out (nearly) equal,
which hides wrong rewrites. :func:`materialize_random_weights` folds those into initializers and replaces each
floating-point weight by seeded random values of the same shape, scaled so that activations stay finite through
deep networks (He-style for weights, positive variances for BatchNorm).
"""
from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import ModelProto, numpy_helper
from onnx_graphsurgeon.logger import G_LOGGER

from edgesqueeze.passes._graph import ir_version_for
from edgesqueeze.passes.optimizer import _prepare, _restore


def _roles(model: ModelProto):
    roles = {}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            for i, role in enumerate(("x", "bn_scale", "bn_bias", "bn_mean", "bn_var")):
                if i < len(node.input) and i:
                    roles[node.input[i]] = role
        elif node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > 2:
            roles.setdefault(node.input[2], "bias")
        elif node.op_type in ("Mul", "Div"):
            for name in node.input:
                roles.setdefault(name, "scale")
        elif node.op_type in ("Add", "Sub"):
            for name in node.input:
                roles.setdefault(name, "bias")
    return roles


def _random(name: str, shape, dtype, role: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if role == "bn_var":
        v = rng.uniform(0.5, 1.5, shape)
    elif role in ("bn_scale", "scale"):
        v = rng.uniform(0.5, 1.5, shape)
    elif role in ("bias", "bn_bias", "bn_mean") or len(shape) <= 1:
        v = rng.normal(0.0, 0.1, shape)
    else:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        v = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
    return v.astype(dtype)


def materialize_random_weights(model: ModelProto, seed: int = 0) -> ModelProto:
    """Return a copy of ``model`` whose every floating-point weight is a seeded random initializer.

    Weights produced by ``ConstantOfShape`` (or any constant subgraph) are first folded into initializers;
    initializers listed as graph inputs (IR < 4) stop being inputs. Integer tensors (shapes, indices) are kept.
    The values depend only on ``seed`` and each tensor's name, so the result is deterministic.

    Returns:
        A new ModelProto; ``model`` is not modified.
    """
    prepared, saved = _prepare(model)
    level = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR  # its warnings go to stdout
    try:
        graph = gs.import_onnx(prepared)
        graph.fold_constants(fold_shapes=False, error_ok=True).cleanup(remove_unused_graph_inputs=False)
        out = gs.export_onnx(graph, do_type_check=False)
    finally:
        G_LOGGER.severity = level
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.ir_version = ir_version_for(model)
    roles = _roles(out)
    inits = []
    for t in out.graph.initializer:
        arr = numpy_helper.to_array(t)
        if np.issubdtype(arr.dtype, np.floating) and arr.size > 1:
            arr = _random(t.name, arr.shape, arr.dtype, roles.get(t.name, "weight"), seed)
        inits.append(numpy_helper.from_array(arr, t.name))
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    _restore(out, saved)
    onnx.checker.check_model(out)
    return out
