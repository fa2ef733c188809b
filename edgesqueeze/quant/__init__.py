"""INT8 and FP16: streaming calibration, TensorRT calibration caches, explicit QDQ models, per-layer precision.

>>> amax = calibrate(model, open_data("calib.npz", model), method="entropy")
>>> write_calibration_cache("calibration.cache", amax, trt_version="8.2.1")
>>> qdq = quantize_qdq(model, amax, keep=["head"])
"""
from __future__ import annotations

from .calibrate import calibrate, default_cache_dir
from .calibrators import METHODS
from .evaluate import evaluate
from .fp16 import convert_fp16
from .policy import resolve_precision
from .qdq import fake_quantize, plan_qdq, quantizable_nodes, quantize_qdq
from .trtcache import read_calibration_cache, write_calibration_cache

__all__ = ["calibrate", "default_cache_dir", "METHODS", "evaluate", "convert_fp16", "resolve_precision",
           "quantize_qdq", "plan_qdq", "quantizable_nodes", "fake_quantize", "write_calibration_cache",
           "read_calibration_cache"]
