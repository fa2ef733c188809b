"""edgesqueeze: make a trained network small and fast on NVIDIA Jetson-class devices, and measure it there.

The same verbs as the command line are Python functions. Importing this package is light: it never imports
torch, tensorrt or pycuda (those load lazily in the functions that need them).
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (DeviceError, EdgeSqueezeError, InputError, InternalError, MissingDependencyError,  # noqa: E402
                     UnsupportedError, VerificationError)

_LAZY = {
    "load_model": ("model", "load_model"),
    "save_model": ("model", "save_model"),
    "parse_input_shapes": ("model", "parse_input_shapes"),
    "get_profile": ("devices", "get_profile"),
    "list_profiles": ("devices", "list_profiles"),
    "DeviceProfile": ("devices", "DeviceProfile"),
    "inspect_model": ("inspect", "inspect_model"),
    "export_torch": ("export", "export_torch"),
}

__all__ = ["__version__", "EdgeSqueezeError", "InputError", "UnsupportedError", "MissingDependencyError",
           "DeviceError", "VerificationError", "InternalError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{mod}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgesqueeze' has no attribute '{name}'")
