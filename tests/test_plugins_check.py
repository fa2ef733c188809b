"""`edgesqueeze plugins check`: every kernel compiles for sm_53/62/72/87 here (nvcc 13 + CUDA 12 NVRTC/ptxas from
PyPI), the source tree is complete, and the CMake project configures."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgesqueeze.devices import get_profile
from edgesqueeze.errors import InputError
from edgesqueeze.plugins import check as chk
from edgesqueeze.plugins.sources import (JETSON_ARCHS, KERNEL_SOURCES, LIBRARY_NAME, PLUGIN_SOURCES,
                                         build_instructions, cmake_command, parse_archs, plugin_source_dir,
                                         source_files)

REPO = Path(__file__).resolve().parents[1]


def _need_compilers():
    if chk.nvcc_info() is None and chk.nvrtc_info() is None:
        pytest.skip(f"no CUDA compiler here (nvcc or NVRTC): {chk.INSTALL_HINT}")


@pytest.fixture(scope="module")
def report():
    _need_compilers()
    return chk.check_kernels()


def test_every_kernel_compiles_for_every_jetson_arch(report):
    assert report["archs"] == ["sm_53", "sm_62", "sm_72", "sm_87", "sm_110"]  # every Jetson GPU, Thor included
    failed = [(r["arch"], r["source"], r["log"]) for r in report["results"] if not r["ok"]]
    assert not failed, failed
    assert len(report["results"]) == len(chk.CHECK_ARCHS) * len(KERNEL_SOURCES)
    for r in report["results"]:
        names = {f["name"] for f in r["functions"]}
        want = ({"dwsep_tiled_kernel<float>", "dwsep_tiled_kernel<half>", "dwsep_reference_kernel<float>",
                 "dwsep_reference_kernel<half>", "dwsep_fast_kernel<float>", "dwsep_fast_kernel<half>",
                 "dwsep_fast_int8_kernel<int8>", "dwsep_quantize_weights_kernel<int8>"} if "dwsep" in r["source"] else
                {"sparse24_kernel<float>", "sparse24_kernel<half>", "sparse_csr_kernel<float>",
                 "sparse_csr_kernel<half>", "sparse24_fast_kernel<float>", "sparse24_fast_kernel<half>",
                 "sparse_csr_fast_kernel<float>", "sparse_csr_fast_kernel<half>"})
        assert names == want, (r["arch"], r["source"])
        for f in r["functions"]:
            assert 0 < f["registers"] <= 255 and f["smem_bytes"] <= 48 * 1024
        if r["arch"] in ("sm_87", "sm_110"):  # CUDA 13 nvcc targets sm_75 and newer
            assert r["compiler"].startswith("nvcc")
        else:   # CUDA 13's nvcc no longer targets Maxwell/Pascal/Volta: NVRTC 12 + ptxas must have done it
            assert r["compiler"].startswith("nvrtc 12") and "ptxas" in r["compiler"]


def test_cli_check_json(cli):
    _need_compilers()
    code, out, err = cli("plugins", "check", "--arch", "sm_53", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] and data["archs"] == ["sm_53"] and len(data["results"]) == len(KERNEL_SOURCES)


def test_cli_check_text_and_bad_input(cli, tmp_path):
    _need_compilers()
    code, out, _ = cli("plugins", "check", "--arch", "6.2")
    assert code == 0 and "dwsep_tiled_kernel<half>" in out and "all kernels compile for sm_62" in out
    code, _, err = cli("plugins", "check", "--arch", "sixty-two")
    assert code == 3 and "bad GPU architecture" in err
    if chk.nvrtc_info() is not None:   # Kepler: neither CUDA 13 nvcc nor CUDA 12 NVRTC targets it
        code, _, err = cli("plugins", "check", "--arch", "35")
        assert code == 4 and "no compiler here targets sm_35" in err
    code, _, err = cli("plugins", "check", "--arch", "87", "--trt-include", str(tmp_path))
    assert code == 3 and "NvInfer.h" in err


TRT_INCLUDES = [d for d in os.environ.get("EDGESQUEEZE_TRT_INCLUDE", "").split(os.pathsep) if d]
_NEEDS_HEADERS = pytest.mark.skipif(not TRT_INCLUDES, reason="set EDGESQUEEZE_TRT_INCLUDE to one or more TensorRT "
                                    "include folders (dir1:dir2) to compile and build the plugins against them")


@_NEEDS_HEADERS
@pytest.mark.parametrize("include", TRT_INCLUDES or [None])
def test_plugin_sources_compile_against_tensorrt_headers(include):
    results = chk.check_plugin_sources(include)
    assert all(r["ok"] for r in results), [r["log"] for r in results if not r["ok"]]
    if chk.nvcc_info() is not None:   # creators, attributes as the ONNX parser passes them, serialisation
        selftest = chk.run_plugin_selftest(include)
        assert selftest["ok"], selftest["log"]
        assert "plugin self-test OK" in selftest["log"]


@_NEEDS_HEADERS
@pytest.mark.parametrize("include", TRT_INCLUDES or [None])
def test_plugin_library_builds_against_tensorrt_headers(include):
    """The full CMake build (kernels + libedgesqueeze_plugins.so, --no-undefined) against a stub libnvinfer."""
    nv = chk.nvcc_info()
    if not shutil.which("cmake") or nv is None or "87" not in nv["archs"]:
        pytest.skip("needs cmake and an nvcc that targets sm_87")
    result = chk.build_library_with_stub(include)
    assert result["ok"], result["log"]
    major = int(chk.check_plugin_sources(include)[0]["trt_version"].split(".")[0])
    if major >= 10:   # loaded with --dynamicPlugins / IPluginRegistry::loadLibrary
        assert result["exports"] == ["getCreators", "getPluginCreators", "setLoggerFinder"]
    else:             # TensorRT 8: the creators register themselves when the library is loaded
        assert "getCreators" not in result["exports"]


def test_parse_ptxas_output():
    text = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN3esq18dwsep_tiled_kernelIfEEvNS_11DwsepParamsEPKT_S4_S4_S4_S4_PS2_' for 'sm_72'
ptxas info    : Function properties for _ZN3esq18dwsep_tiled_kernelIfEEvNS_11DwsepParamsEPKT_S4_S4_S4_S4_PS2_
    16 bytes stack frame, 12 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 48 registers, used 1 barriers, 16 bytes cumulative stack size, 8192 bytes smem, 488 bytes cmem[0]
ptxas info    : Compiling entry function '_ZN3esq15sparse24_kernelI6__halfEEvNS_16SparseConvParamsEPKT_S5_PKiS5_PS3_' for 'sm_72'
ptxas info    : Function properties for _ZN3esq15sparse24_kernelI6__halfEEvNS_16SparseConvParamsEPKT_S5_PKiS5_PS3_
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 39 registers, 464 bytes cmem[0], 28 bytes cmem[2]
"""
    funcs = chk.parse_ptxas_verbose(text)
    assert [(f["name"], f["registers"], f["spill_store_bytes"], f["smem_bytes"]) for f in funcs] == [
        ("dwsep_tiled_kernel<float>", 48, 12, 8192), ("sparse24_kernel<half>", 39, 0, 0)]


def test_sources_are_complete_and_single_copy():
    root = plugin_source_dir()
    for rel in ("CMakeLists.txt",) + KERNEL_SOURCES + PLUGIN_SOURCES + ("tests/host_harness.cpp",
                                                                        "tests/gpu_harness.cu",
                                                                        "tests/plugin_selftest.cpp"):
        assert (root / rel).is_file(), rel
    names = {p.name for p in source_files()}
    # the repository's kernels/ folder only points at the package copy
    top = {p.name for p in (REPO / "kernels").rglob("*") if p.is_file()}
    assert not (top & (names - {"CMakeLists.txt", "README.md"}))
    assert "edgesqueeze/plugins/kernels" in (REPO / "kernels" / "CMakeLists.txt").read_text()


def test_host_headers_are_strict_cxx14():
    """The kernels' host/device code must build with JetPack 4.6's C++14: g++ -std=c++14 -pedantic -Werror."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("no C++ compiler")
    root = plugin_source_dir()
    proc = subprocess.run([cxx, "-std=c++14", "-pedantic", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                           f"-I{root / 'include'}", str(root / "tests" / "host_harness.cpp")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_cmake_command_and_build_instructions():
    assert cmake_command("62", None) == ["cmake", "-S", ".", "-B", "build", "-DCMAKE_BUILD_TYPE=Release",
                                         "-DCUDA_ARCHITECTURES=62"]
    assert cmake_command("sm_72,87", "/opt/trt")[-2:] == ["-DCUDA_ARCHITECTURES=72;87", "-DTENSORRT_ROOT=/opt/trt"]
    assert parse_archs(None) == ["53", "62", "72", "87"] and parse_archs("8.7") == ["87"]
    with pytest.raises(InputError):
        parse_archs("abc")
    tx2 = build_instructions(get_profile("tx2"))
    assert "'-DCUDA_ARCHITECTURES=62'" in tx2 or "-DCUDA_ARCHITECTURES=62" in tx2
    assert 'PLUGIN_FLAG="--plugins=$PLUGIN_LIB"' in tx2 and LIBRARY_NAME in tx2
    orin = build_instructions(get_profile("orin-nano"))
    assert "-DCUDA_ARCHITECTURES=87" in orin and "--dynamicPlugins=" in orin
    with pytest.raises(InputError):
        build_instructions(get_profile("cpu"))


def test_cmake_project_configures(tmp_path):
    """The repository's kernels/ CMake project configures with the local nvcc (kernels only: no TensorRT here)."""
    nv = chk.nvcc_info()
    if not shutil.which("cmake") or nv is None or "87" not in nv["archs"]:
        pytest.skip("needs cmake and an nvcc that targets sm_87")
    proc = subprocess.run(["cmake", "-S", str(REPO / "kernels"), "-B", str(tmp_path), "-DCUDA_ARCHITECTURES=87",
                           "-DESQ_KERNELS_ONLY=ON"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "edgesqueeze: CUDA architectures 87" in proc.stdout
    assert (tmp_path / "edgesqueeze_plugins" / "Makefile").exists() or (tmp_path / "build.ninja").exists()


def test_cli_build_without_tensorrt_fails_cleanly(cli, tmp_path):
    """`plugins build` configures the CMake project and stops with one line naming the missing TensorRT (exit 6)."""
    nv = chk.nvcc_info()
    if not shutil.which("cmake") or nv is None or "87" not in nv["archs"]:
        pytest.skip("needs cmake and an nvcc that targets sm_87")
    code, _, err = cli("plugins", "build", "--arch", "87", "--build-dir", str(tmp_path / "b"),
                       "--trt-root", str(tmp_path / "no-tensorrt"))
    if code == 0:
        pytest.skip("a TensorRT installation was found in the standard locations")
    assert code == 6 and "TensorRT not found" in err and "Traceback" not in err
