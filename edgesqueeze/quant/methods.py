"""The calibration-method vocabulary, written once (``quantize --method``, ``build --method``, the calibrators)."""
from __future__ import annotations

from ..precision import Choice


class CalibMethod(Choice):
    """How a tensor's INT8 range (amax) is chosen from its activation statistics."""

    AUTO = "auto"  # per network, the one of mse / entropy / percentile closest to FP32 (the default)
    ENTROPY = "entropy"  # TensorRT EntropyCalibration2: minimal KL divergence
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"


METHODS = tuple(m.value for m in CalibMethod)  # ("auto", "entropy", "minmax", "percentile", "mse")
DEFAULT_METHOD = CalibMethod.AUTO.value
