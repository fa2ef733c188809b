"""Custom ONNX ops of the ``edgesqueeze`` domain (with their local functions) and the CUDA plugin library.

Modules (import them directly; this package imports nothing heavy):

* :mod:`.dwsep` — ``DepthwiseSeparableConv`` node, function overloads, inline/strip variants.
* :mod:`.sparse` — ``SparseConv`` node and functions; :mod:`.sparse_formats` — 2:4 and CSR compression;
  :mod:`.sparse_convert` — Conv ↔ SparseConv.
* :mod:`.sources` — where the CUDA/TensorRT sources are, CMake command lines, on-device build instructions.
* :mod:`.check` — compile every kernel for sm_53/62/72/87 without a GPU (``edgesqueeze plugins check``).
* :mod:`.build` — build the plugin library with CMake and load it into TensorRT (``edgesqueeze plugins build``).
* :mod:`.emulate` — run the kernels from numpy: their arithmetic on the CPU (g++), or the real kernels on a GPU.
"""
