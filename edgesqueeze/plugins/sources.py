"""Where the CUDA kernel and TensorRT plugin sources live, and how to build them on a device.

The sources are package data (``edgesqueeze/plugins/kernels/``), the only copy: the repository's top-level
``kernels/`` CMake project points at this folder, and a deployment bundle copies it to ``plugins/``.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from ..errors import InputError

#: the Jetson GPU architectures the library is built for by default (Nano/TX1, TX2, Xavier, Orin)
JETSON_ARCHS = ("53", "62", "72", "87")
LIBRARY_NAME = "libedgesqueeze_plugins.so"
#: the kernel translation units (each compiles without TensorRT headers)
KERNEL_SOURCES = ("src/dwsep.cu", "src/sparse.cu")
#: the plugin translation units (need the TensorRT headers)
PLUGIN_SOURCES = ("plugins/dwsep_plugin.cpp", "plugins/sparse_plugin.cpp", "plugins/plugin_registry.cpp")


def plugin_source_dir() -> Path:
    """Return the folder holding ``CMakeLists.txt``, ``include/``, ``src/``, ``plugins/`` and ``tests/``."""
    return Path(__file__).resolve().parent / "kernels"


def source_files() -> List[Path]:
    """Every file of the plugin source tree (sorted relative order), for copying into a bundle."""
    root = plugin_source_dir()
    return sorted((p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts),
                  key=lambda p: p.relative_to(root).as_posix())


def parse_archs(archs: Optional[Iterable] = None) -> List[str]:
    """Normalise an architecture list (``"53,62"``, ``["sm_72", 87]``) to ``["53", "62", ...]``.

    Raises:
        InputError: an entry that is not a compute capability such as 53 or sm_87.
    """
    if archs is None:
        return list(JETSON_ARCHS)
    if isinstance(archs, str):
        archs = archs.replace(";", ",").split(",")
    out = []
    for a in archs:
        text = str(a).strip().lower().replace("sm_", "").replace("compute_", "").replace(".", "")
        if not text:
            continue
        if not text.isdigit() or not 30 <= int(text) <= 200:
            raise InputError(f"bad GPU architecture '{a}': expected a compute capability such as 62 or sm_87")
        if text not in out:
            out.append(text)
    if not out:
        raise InputError("no GPU architecture given")
    return out


def cmake_command(arch: str, trt_root: Optional[str] = None, *, source_dir: str = ".",
                  build_dir: str = "build", build_type: str = "Release") -> List[str]:
    """The CMake configure command for the plugin library.

    Args:
        arch: one or more compute capabilities, e.g. ``"62"`` or ``"72;87"`` (see :func:`parse_archs`).
        trt_root: TensorRT install prefix (headers in ``include/``, libraries in ``lib/``); None lets CMake search
            JetPack's standard locations (``/usr/include/aarch64-linux-gnu``, ``/usr/lib/aarch64-linux-gnu``).
        source_dir, build_dir: as given to ``cmake -S``/``-B`` (relative to where the command runs).
        build_type: CMake build type.

    Returns:
        The argument list (``cmake -S ... -B ... -D...``); follow it with ``cmake --build <build_dir>``.

    Raises:
        InputError: an invalid architecture.
    """
    archs = ";".join(parse_archs(arch))
    cmd = ["cmake", "-S", source_dir, "-B", build_dir, f"-DCMAKE_BUILD_TYPE={build_type}",
           f"-DCUDA_ARCHITECTURES={archs}"]
    if trt_root:
        cmd.append(f"-DTENSORRT_ROOT={trt_root}")
    return cmd


def build_command(build_dir: str = "build", jobs: int = 2) -> List[str]:
    """The CMake build command (``cmake --build build -j 2``)."""
    return ["cmake", "--build", build_dir, "--", f"-j{int(jobs)}"]


def _join(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def build_instructions(profile) -> str:
    """Shell lines that build the plugin library on the target device, for a bundle's ``build_engine.sh``.

    Args:
        profile: a :class:`~edgesqueeze.devices.DeviceProfile` (or anything with ``.sm``, ``.name`` and
            ``.tensorrt_version``).

    Returns:
        A POSIX shell snippet (run inside the bundle's ``plugins/`` folder) ending with the library at
        ``plugins/build/libedgesqueeze_plugins.so`` and the trtexec flag that loads it in the variable
        ``PLUGIN_FLAG``.

    Raises:
        InputError: the profile has no CUDA GPU (no ``sm``).
    """
    sm = getattr(profile, "sm", None)
    if not sm:
        raise InputError(f"target '{getattr(profile, 'name', profile)}' has no CUDA GPU: no plugin library to build")
    trt = str(getattr(profile, "tensorrt_version", "") or "")
    major = int(trt.split(".")[0]) if trt.split(".")[0].isdigit() else 8
    flag = "--dynamicPlugins" if major >= 10 else "--plugins"
    lines = [
        f"# edgesqueeze plugin library for {getattr(profile, 'name', 'the target')} (sm_{sm}, TensorRT {trt or '?'})",
        "# needs JetPack's nvcc (/usr/local/cuda/bin) and the TensorRT headers (libnvinfer-dev)",
        'export PATH="/usr/local/cuda/bin:$PATH"',
        _join(cmake_command(str(sm), None)) + ' ${TRT_ROOT:+-DTENSORRT_ROOT="$TRT_ROOT"}',
        _join(build_command()),
        f'PLUGIN_LIB="$(pwd)/build/{LIBRARY_NAME}"',
        f'PLUGIN_FLAG="{flag}=$PLUGIN_LIB"',
    ]
    return "\n".join(lines) + "\n"
