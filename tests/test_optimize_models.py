"""The onnx package's light Model-Zoo models: optimize, compare on onnxruntime with materialised random weights.

The light models build their weights with ConstantOfShape (constant fills), so their outputs are degenerate;
each is also checked with every weight replaced by seeded random values, on the logits (the Softmax input)
as well as on the outputs, because random networks saturate their Softmax.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgesqueeze.model import load_model, random_feeds
from edgesqueeze.ortutil import expose_outputs, run_model
from edgesqueeze.passes import DEFAULT_OPSET, optimize
from random_weights import materialize_random_weights

FAST = ["squeezenet", "resnet50", "inception_v1", "shufflenet"]
# DenseNet-121 / Inception-v2 (~1000 nodes) and the big-FC models (60-140 M weights): slow on 2 shared cores
SLOW = ["densenet121", "inception_v2", "bvlc_alexnet", "zfnet512", "vgg19"]


def _logits(model):
    return [n.input[0] for n in model.graph.node if n.op_type == "Softmax"]


def _check(light_models_dir, name, target=None):
    model = load_model(light_models_dir / f"light_{name}.onnx", opset=DEFAULT_OPSET)
    # the constant-fill model: ConstantOfShape weights fold away and the outputs still agree
    out, report = optimize(model, target=target)
    assert report["verification"]["status"] == "passed"
    assert "ConstantOfShape" not in report["ops_after"]
    # the same architecture with random weights; the check covers the logits (the Softmax input) too
    rand = materialize_random_weights(model, seed=1)
    out, report = optimize(rand, target=target)
    checked = report["verification"]["outputs"]
    assert set(checked) == {o.name for o in rand.graph.output} | set(_logits(rand))
    assert all(v["max_rel"] <= 1e-4 for v in checked.values())
    logits = run_model(expose_outputs(rand, _logits(rand)), random_feeds(rand)[0])
    assert all(np.std(v) > 0 for v in logits.values())  # random weights make the comparison meaningful
    # no BatchNormalization survives after a Conv/Gemm (pre-activation BNs become Mul+Add)
    assert "BatchNormalization" not in report["ops_after"]
    return report


def _expectations(name, report):
    assert report["nodes_after"] <= report["nodes_before"]
    if name == "inception_v1":
        assert report["fusions"]["horizontal:conv"]["count"] == 9  # one per Inception module
    if name == "densenet121":
        assert report["fusions"]["fold_batchnorm:BatchNormalization->Mul+Add"]["count"] > 0
    if name == "resnet50":
        assert report["fusions"]["fold_batchnorm:Conv+BatchNormalization"]["count"] == 53


@pytest.mark.parametrize("name", FAST)
def test_light_model_optimizes_and_agrees(light_models_dir, name):
    _expectations(name, _check(light_models_dir, name))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_slow_light_model_optimizes_and_agrees(light_models_dir, name):
    _expectations(name, _check(light_models_dir, name))


def test_materialize_random_weights_is_seeded(light_models_dir):
    model = load_model(light_models_dir / "light_squeezenet.onnx", opset=DEFAULT_OPSET)
    a, b, c = (materialize_random_weights(model, seed=s) for s in (0, 0, 1))
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    assert a.SerializeToString(deterministic=True) != c.SerializeToString(deterministic=True)
    assert not any(n.op_type == "ConstantOfShape" for n in a.graph.node)
