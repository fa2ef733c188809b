"""Build the plugin library with CMake (on a Jetson, or any machine with nvcc and TensorRT) and load it.

``edgesqueeze plugins build`` calls :func:`build_library`; runners call :func:`load_plugin_library`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

from .._lazy import require
from ..errors import DeviceError, InputError, UnsupportedError
from .sources import LIBRARY_NAME, build_command, cmake_command, parse_archs, plugin_source_dir

#: Tegra SoC (device-tree "compatible") → compute capability, for boards without nvidia-smi
_TEGRA_SM = {"tegra210": "53", "tegra186": "62", "tegra194": "72", "tegra234": "87", "tegra264": "110"}


def detect_arch() -> Optional[str]:
    """The compute capability of this machine's GPU (``"87"``), or None when there is none.

    Uses ``nvidia-smi --query-gpu=compute_cap`` where it works, else the Jetson SoC named in
    ``/proc/device-tree/compatible``.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20)
            m = re.search(r"(\d+)\.(\d+)", out.stdout)
            if out.returncode == 0 and m:
                return m.group(1) + m.group(2)
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        compatible = Path("/proc/device-tree/compatible").read_bytes().decode(errors="replace")
    except OSError:
        return None
    for soc, sm in _TEGRA_SM.items():
        if soc in compatible:
            return sm
    return None


def _find_nvcc() -> Optional[str]:
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    return None


def _tail(text: str, lines: int = 12) -> str:
    """The part of a CMake/compiler log that says what went wrong: from the first error on, else the end."""
    rows = text.strip().splitlines()
    for i, row in enumerate(rows):
        if "CMake Error" in row or re.search(r"\berror\b", row, re.IGNORECASE):
            return " ".join(r.strip() for r in rows[i:i + lines] if r.strip())
    return " ".join(r.strip() for r in rows[-lines:])


def build_library(arch: Optional[str] = None, trt_root: Optional[str] = None, build_dir: str = "build/plugins", *,
                  kernels_only: bool = False, jobs: Optional[int] = None) -> dict:
    """Configure and build the plugin library (and the GPU test harness) with CMake.

    Args:
        arch: compute capabilities (``"62"``, ``"72,87"``); default: this machine's GPU, else all Jetson archs.
        trt_root: TensorRT prefix; default: JetPack's standard locations (see ``CMakeLists.txt``).
        build_dir: CMake build folder (created).
        kernels_only: build without TensorRT (kernels + GPU harness only).
        jobs: parallel build jobs (default: CPU count).

    Returns:
        ``{"library": path | None (kernels_only), "gpu_harness": path | None (built with kernels_only),
        "archs": [...], "build_dir", "commands": [...], "seconds"}``.

    Raises:
        UnsupportedError: cmake or nvcc is not installed.
        InputError: a bad architecture.
        DeviceError: CMake configuration or the compilation failed (the message ends with the compiler's output).
    """
    archs = parse_archs(arch if arch else (detect_arch() or None))
    cmake = shutil.which("cmake")
    if not cmake:
        raise UnsupportedError("building the plugin library needs CMake >= 3.10", hint="apt-get install cmake")
    nvcc = _find_nvcc()
    if not nvcc:
        raise UnsupportedError("building the plugin library needs nvcc (CUDA toolkit)",
                               hint="on a Jetson: JetPack's CUDA in /usr/local/cuda; elsewhere install the CUDA toolkit")
    out_dir = Path(build_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    configure = cmake_command(";".join(archs), trt_root, source_dir=str(plugin_source_dir()), build_dir=str(out_dir))
    configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    if kernels_only:
        configure.append("-DESQ_KERNELS_ONLY=ON")
    build = build_command(str(out_dir), jobs or os.cpu_count() or 2)
    t0 = time.perf_counter()
    for cmd in (configure, build):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            step = "configuration" if cmd is configure else "compilation"
            raise DeviceError(f"plugin library {step} failed (exit {proc.returncode}):\n"
                              f"{_tail(proc.stdout + proc.stderr)}", path=str(out_dir))
    library = out_dir / LIBRARY_NAME
    harness = out_dir / "libedgesqueeze_gpu_harness.so"
    return {"library": None if kernels_only else str(library),
            "gpu_harness": str(harness) if harness.exists() else None,
            "archs": [f"sm_{a}" for a in archs], "build_dir": str(out_dir), "commands": [configure, build],
            "seconds": round(time.perf_counter() - t0, 1)}


def load_plugin_library(path: str):
    """Register the library's plugin creators with TensorRT in this process.

    TensorRT >= 10: ``IPluginRegistry.load_library`` (the library exports ``getCreators``); TensorRT 8: load the
    library globally, which registers the creators statically. Returns the handle TensorRT or ctypes returned.

    Raises:
        InputError: the library file does not exist.
        MissingDependencyError: TensorRT is not installed.
        DeviceError: TensorRT refused the library.
    """
    if not os.path.isfile(path):
        raise InputError(f"plugin library not found: {path}", path=path,
                         hint="build it with 'edgesqueeze plugins build'")
    trt = require("tensorrt", "loading the edgesqueeze plugin library")
    major = int(str(trt.__version__).split(".")[0])
    if major >= 10:
        handle = trt.get_plugin_registry().load_library(str(path))
        if handle is None:
            raise DeviceError(f"TensorRT {trt.__version__} could not load the plugin library", path=path)
        return handle
    import ctypes

    try:
        return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise DeviceError(f"could not load the plugin library: {exc}", path=path) from exc
