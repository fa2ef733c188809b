"""Custom ONNX ops of the ``edgesqueeze`` domain (with their local functions) and the CUDA plugin library.

Modules (import them directly):

* :mod:`.ops` — the registry of custom ops, the domain constant, and the model transforms every op shares
  (rebuild functions, inline for TensorRT without the plugin, strip for TensorRT with it, FP16 functions).
* :mod:`.dwsep` — ``DepthwiseSeparableConv`` node and function overloads.
* :mod:`.sparse` — ``SparseConv`` node, functions and dense fallback; :mod:`.sparse_formats` — 2:4 and CSR
  compression; :mod:`.sparse_convert` — Conv → SparseConv.
* :mod:`.sources` — where the CUDA/TensorRT sources are, CMake command lines, on-device build instructions.
* :mod:`.check` — compile every kernel for sm_53/62/72/87 without a GPU (``edgesqueeze plugins check``).
* :mod:`.build` — build the plugin library with CMake and load it into TensorRT (``edgesqueeze plugins build``).
* :mod:`.emulate` — run the kernels from numpy: their arithmetic on the CPU (g++), or the real kernels on a GPU.
"""
from __future__ import annotations

# importing the op modules registers them in plugins.ops.OPS, in this order (the order functions are rebuilt in)
from . import dwsep as _dwsep  # noqa: F401
from . import sparse as _sparse  # noqa: F401
