"""Lazy imports of optional dependencies (torch, tensorrt, pycuda, pynvml, matplotlib), and their versions."""
from __future__ import annotations

import importlib
import platform
import sys
from types import ModuleType
from typing import Dict, Optional

from .errors import MissingDependencyError

# module -> extra that provides it
EXTRAS = {
    "torch": "torch",
    "tensorrt": "trt",
    "pycuda": "trt",
    "pycuda.driver": "trt",
    "pynvml": "nvml",
    "matplotlib": "plots",
    "matplotlib.pyplot": "plots",
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install.

    Args:
        module: dotted module name, e.g. ``"torch"``.
        purpose: what the module is needed for, shown in the error message.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module (or one of its own dependencies) cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module, EXTRAS.get(module.split(".")[0], module))
        err = MissingDependencyError(module, extra, purpose)
        err.__cause__ = exc
        raise err from exc


def available(module: str) -> bool:
    """Return True when ``module`` can be imported (without raising)."""
    try:
        importlib.import_module(module)
        return True
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False


def versions(*, runtime: bool = False) -> Dict[str, Optional[str]]:
    """The versions a result depends on: edgesqueeze, onnx, onnxruntime, numpy.

    Args:
        runtime: also the Python version and TensorRT's when it is loaded (what changes a measurement);
            a bundle manifest leaves them out so that the same build gives the same bytes anywhere.
            onnxruntime is None when it is not installed.
    """
    import numpy
    import onnx

    from . import __version__

    try:
        import onnxruntime

        ort_version: Optional[str] = onnxruntime.__version__
    except ImportError:
        ort_version = None
    out = {"edgesqueeze": __version__, "onnx": onnx.__version__, "onnxruntime": ort_version,
           "numpy": numpy.__version__}
    if runtime:
        out["python"] = platform.python_version()
        if "tensorrt" in sys.modules:
            out["tensorrt"] = getattr(sys.modules["tensorrt"], "__version__", None)
    return out
