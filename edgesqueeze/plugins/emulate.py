"""Run the CUDA kernels from numpy: their arithmetic on the CPU, or the real kernels on a GPU.

``device="cpu"``: the kernels' ``__host__ __device__`` functions compile with g++ through
``kernels/tests/host_harness.cpp``, which calls them for every block and thread index exactly as the
``__global__`` kernels map them. ``device="gpu"``: ``kernels/tests/gpu_harness.cu`` compiled with nvcc for this
machine's GPU runs the kernels through the library's launchers. Each harness is built once per source hash (a
shared library loaded with ctypes), so tests compare the very code the GPU runs with onnxruntime running the
node's ONNX function.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import DeviceError, InputError, UnsupportedError
from ..fileio import cache_dir
from .ops import ACTIVATIONS
from .sources import plugin_source_dir

HARNESS = "tests/host_harness.cpp"
GPU_HARNESS = "tests/gpu_harness.cu"


class _DwsepParams(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("N", "C", "H", "W", "M", "OH", "OW", "KH", "KW", "SH", "SW", "PT",
                                            "PL", "DH", "DW", "dw_act", "pw_act")] + \
               [(n, ctypes.c_float) for n in ("dw_alpha", "dw_beta", "pw_alpha", "pw_beta")]


class _SparseParams(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("N", "C", "H", "W", "M", "OH", "OW", "KH", "KW", "SH", "SW", "PT",
                                            "PL", "DH", "DW", "act")] + \
               [(n, ctypes.c_float) for n in ("alpha", "beta")]


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    raise UnsupportedError("no C++ compiler found to build the kernel host harness", hint="install g++")


def _source_hash() -> str:
    root = plugin_source_dir()
    h = hashlib.sha256()
    for p in sorted((root / "include").rglob("*")) + sorted((root / "src").rglob("*")) + \
            [root / HARNESS, root / GPU_HARNESS]:
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$EDGESQUEEZE_CACHE/kernels`` or ``~/.cache/edgesqueeze/kernels``."""
    return cache_dir("kernels")


def build_harness(cache_dir: Optional[Path] = None, compiler: Optional[str] = None) -> Path:
    """Compile the host harness (g++ -std=c++14 -O2) unless a build of the same sources exists; return its path.

    Raises:
        UnsupportedError: no C++ compiler.
        InputError: the sources do not compile (the compiler's message is included).
    """
    cxx = compiler or _compiler()
    out_dir = Path(cache_dir or default_cache_dir())
    lib = out_dir / f"esq_host_{_source_hash()}.so"
    if lib.exists():
        return lib
    root = plugin_source_dir()
    return _compile_cached(lib, [cxx, "-std=c++14", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC",
                                 f"-I{root / 'include'}", str(root / HARNESS)],
                           "kernel host harness", root / HARNESS)


def _compile_cached(lib: Path, cmd: list, what: str, source: Path) -> Path:
    """Run the compiler ``cmd`` (without ``-o``) into a temporary file, then rename it to ``lib``."""
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=str(lib.parent))
    os.close(fd)
    proc = subprocess.run(cmd + ["-o", tmp], capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise InputError(f"{what} does not compile: {proc.stderr.strip()[:2000]}", path=str(source))
    os.replace(tmp, lib)  # atomic: concurrent test runs never load a half-written library
    return lib


def build_gpu_harness(cache_dir: Optional[Path] = None, arch: Optional[str] = None) -> Path:
    """Compile the GPU harness with nvcc for ``arch`` (default: this machine's GPU); return its path.

    Raises:
        UnsupportedError: no nvcc, or no GPU to build for.
        InputError: the sources do not compile.
    """
    from .build import _find_nvcc, detect_arch

    nvcc = _find_nvcc()
    arch = arch or detect_arch()
    if not nvcc or not arch:
        raise UnsupportedError("the GPU harness needs nvcc and an NVIDIA GPU")
    out_dir = Path(cache_dir or default_cache_dir())
    lib = out_dir / f"esq_gpu_{_source_hash()}_sm{arch}.so"
    if lib.exists():
        return lib
    root = plugin_source_dir()
    return _compile_cached(lib, [nvcc, "-std=c++14", "-O2", "-shared", "-Xcompiler", "-fPIC",
                                 f"-gencode=arch=compute_{arch},code=sm_{arch}", f"-I{root / 'include'}",
                                 str(root / GPU_HARNESS), str(root / "src" / "dwsep.cu"),
                                 str(root / "src" / "sparse.cu")],
                           "GPU harness", root / GPU_HARNESS)


@lru_cache(maxsize=None)
def _load(path: str, prefix: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    vp = ctypes.c_void_p
    getattr(lib, f"{prefix}_dwsep").argtypes = [ctypes.POINTER(_DwsepParams), ctypes.c_int, ctypes.c_int] + [vp] * 6
    getattr(lib, f"{prefix}_dwsep_int8").argtypes = [ctypes.POINTER(_DwsepParams), ctypes.c_float,
                                                     ctypes.c_float] + [vp] * 6
    sparse = [ctypes.POINTER(_SparseParams), ctypes.c_int, ctypes.c_int]
    getattr(lib, f"{prefix}_sparse24").argtypes = sparse + [vp] * 5
    getattr(lib, f"{prefix}_sparse_csr").argtypes = sparse + [vp] * 6
    if prefix == "esq_host":
        lib.esq_host_round_half.argtypes = [vp, vp, ctypes.c_longlong]
    return lib


def harness(cache_dir: Optional[Path] = None) -> ctypes.CDLL:
    """The loaded CPU harness library (built on first use)."""
    return _load(str(build_harness(cache_dir)), "esq_host")


class _Entry:
    """The three entry points of one harness (CPU or GPU), raising DeviceError on a CUDA error code."""

    def __init__(self, device: str, cache_dir: Optional[Path]):
        if device == "cpu":
            self.lib, self.prefix = harness(cache_dir), "esq_host"
        elif device == "gpu":
            self.lib, self.prefix = _load(str(build_gpu_harness(cache_dir)), "esq_gpu"), "esq_gpu"
        else:
            raise InputError(f"device must be 'cpu' or 'gpu', not '{device}'")

    def __call__(self, name: str, *args) -> None:
        rc = getattr(self.lib, f"{self.prefix}_{name}")(*args)
        if rc != 0:
            raise DeviceError(f"kernel {name} failed with CUDA error {rc}")


def _act(name: str) -> int:
    if name not in ACTIVATIONS:
        raise InputError(f"unknown activation '{name}'; expected one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS.index(name)  # same order as esq::Activation


def _prep(arrays, dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float16):
        raise UnsupportedError(f"the kernels support float32 and float16, not {dt}")
    return [np.ascontiguousarray(a, dtype=dt) for a in arrays], (0 if dt == np.float32 else 1)


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _out_size(size, k, s, p0, p1, d):
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def emulate_dwsep(x, w_dw, b_dw, w_pw, b_pw, *, strides: Sequence[int] = (1, 1),
                  pads: Sequence[int] = (0, 0, 0, 0), dilations: Sequence[int] = (1, 1), dw_activation="none",
                  dw_alpha=0.0, dw_beta=0.0, pw_activation="none", pw_alpha=0.0, pw_beta=0.0, tiled=True,
                  device: str = "cpu", cache_dir: Optional[Path] = None, **_unused) -> np.ndarray:
    """Run the dwsep kernel (tiled: the fast kernel; "chunked": its fallback; False: the one-thread-per-output
    reference) on the CPU or GPU.

    The element type follows ``x`` (float32 or float16); the other arguments are the node's attributes.
    """
    (x, w_dw, b_dw, w_pw, b_pw), dtype = _prep((x, w_dw, b_dw, w_pw, b_pw), np.asarray(x).dtype)
    n, c, h, w = x.shape
    m = w_pw.shape[0]
    kh, kw = w_dw.shape[2:]
    oh = _out_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    ow = _out_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    p = _DwsepParams(n, c, h, w, m, oh, ow, kh, kw, strides[0], strides[1], pads[0], pads[1], dilations[0],
                     dilations[1], _act(dw_activation), _act(pw_activation), dw_alpha, dw_beta, pw_alpha, pw_beta)
    y = np.zeros((n, m, oh, ow), dtype=x.dtype)
    _Entry(device, cache_dir)("dwsep", ctypes.byref(p), dtype, 2 if tiled == "chunked" else (1 if tiled else 0),
                              *(_ptr(a) for a in (x, w_dw, b_dw, w_pw, b_pw, y)))
    return y


def emulate_dwsep_int8(x_q, x_scale: float, y_scale: float, w_dw, b_dw, w_pw, b_pw, *,
                       strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                       dilations: Sequence[int] = (1, 1), dw_activation="none", dw_alpha=0.0, dw_beta=0.0,
                       pw_activation="none", pw_alpha=0.0, pw_beta=0.0, device: str = "cpu",
                       cache_dir: Optional[Path] = None) -> np.ndarray:
    """Run the INT8 dwsep kernel: ``x_q`` int8 with scale ``x_scale``, float32 weights; returns int8 Y (scale
    ``y_scale``)."""
    x_q = np.ascontiguousarray(x_q, dtype=np.int8)
    (w_dw, b_dw, w_pw, b_pw), _ = _prep((w_dw, b_dw, w_pw, b_pw), np.float32)
    n, c, h, w = x_q.shape
    m, (kh, kw) = w_pw.shape[0], w_dw.shape[2:]
    oh = _out_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    ow = _out_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    p = _DwsepParams(n, c, h, w, m, oh, ow, kh, kw, strides[0], strides[1], pads[0], pads[1], dilations[0],
                     dilations[1], _act(dw_activation), _act(pw_activation), dw_alpha, dw_beta, pw_alpha, pw_beta)
    y = np.zeros((n, m, oh, ow), dtype=np.int8)
    _Entry(device, cache_dir)("dwsep_int8", ctypes.byref(p), x_scale, y_scale,
                              *(_ptr(a) for a in (x_q, w_dw, b_dw, w_pw, b_pw, y)))
    return y


def _sparse_params(x, m, kh, kw, strides, pads, dilations, activation, alpha, beta):
    n, c, h, w = x.shape
    oh = _out_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    ow = _out_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    return _SparseParams(n, c, h, w, m, oh, ow, kh, kw, strides[0], strides[1], pads[0], pads[1], dilations[0],
                         dilations[1], _act(activation), alpha, beta), (n, m, oh, ow)


def emulate_sparse_conv(x, arrays: dict, bias, *, sparse_format: str, kernel_shape: Sequence[int],
                        strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                        dilations: Sequence[int] = (1, 1), activation="none", alpha=0.0, beta=0.0,
                        tiled: bool = True, device: str = "cpu", cache_dir: Optional[Path] = None) -> np.ndarray:
    """Run the 2:4 or CSR sparse kernel on the CPU or GPU: ``tiled`` the launchers' default (sparse_fast.cuh),
    else the one-thread-per-output reference.

    Args:
        x: ``[N,C,H,W]`` float32/float16.
        arrays: the compressed weight (:func:`edgesqueeze.plugins.sparse.sparse_conv_inputs`).
        bias: ``[M]``. Other arguments as the ``SparseConv`` node's attributes.
    """
    (x, bias, values), dtype = _prep((x, bias, arrays["values"]), np.asarray(x).dtype)
    m = bias.shape[0]
    p, shape = _sparse_params(x, m, kernel_shape[0], kernel_shape[1], strides, pads, dilations, activation,
                              alpha, beta)
    y = np.zeros(shape, dtype=x.dtype)
    run = _Entry(device, cache_dir)
    if sparse_format == "2:4":
        meta = np.ascontiguousarray(arrays["metadata"], dtype=np.int32)
        run("sparse24", ctypes.byref(p), dtype, int(bool(tiled)), _ptr(x), _ptr(values), _ptr(meta), _ptr(bias),
            _ptr(y))
    elif sparse_format == "csr":
        col = np.ascontiguousarray(arrays["col"], dtype=np.int32)
        row_ptr = np.ascontiguousarray(arrays["row_ptr"], dtype=np.int32)
        run("sparse_csr", ctypes.byref(p), dtype, int(bool(tiled)), _ptr(x), _ptr(values), _ptr(col), _ptr(row_ptr),
            _ptr(bias), _ptr(y))
    else:
        raise InputError(f"unknown sparse_format '{sparse_format}'")
    return y


def round_half(values, cache_dir: Optional[Path] = None) -> np.ndarray:
    """float32 → binary16 → float32 through the harness's software conversion (tests it against numpy)."""
    a = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty_like(a)
    harness(cache_dir).esq_host_round_half(_ptr(a), _ptr(out), a.size)
    return out
