"""Lazy imports of optional dependencies (torch, tensorrt, pycuda, pynvml, matplotlib)."""
from __future__ import annotations

import importlib
from types import ModuleType

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
