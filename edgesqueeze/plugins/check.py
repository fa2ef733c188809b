"""Compile every CUDA kernel for every Jetson architecture, here, without a GPU (``edgesqueeze plugins check``).

Per architecture the first compiler that supports it is used:
  * ``nvcc`` on the PATH (CUDA 13 supports sm_75 and newer: Orin's sm_87): the whole translation unit, kernels
    and host launchers, ``-std=c++14 -cubin``-equivalent with ``ptxas -v``;
  * NVRTC from PyPI (``nvidia-cuda-nvrtc-cu12`` through ``cuda-bindings<13``; CUDA 12 still targets sm_53, sm_62,
    sm_72) for the device code, to PTX, then ``ptxas`` from ``nvidia-cuda-nvcc-cu12`` to machine code.
``ptxas -v`` reports registers, spills, stack and shared memory per kernel.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..errors import InputError
from .sources import JETSON_ARCHS, KERNEL_SOURCES, PLUGIN_SOURCES, parse_archs, plugin_source_dir

# every Jetson GPU: Nano/TX1, TX2, Xavier, Orin and Thor (sm_110; the on-device build's default list stops at 87,
# since JetPack 4.6's CUDA 10.2 cannot target it)
CHECK_ARCHS = JETSON_ARCHS + ("110",)
INSTALL_HINT = 'pip install "cuda-bindings<13" nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 nvidia-cuda-nvcc-cu12'


# ----------------------------------------------------------------------------- toolchains
@lru_cache(maxsize=None)
def nvcc_info() -> Optional[dict]:
    """``{"path", "version", "archs": ["75", ...]}`` of the nvcc on the PATH, or None."""
    path = shutil.which("nvcc")
    if not path:
        return None
    try:
        ver = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
        archs = subprocess.run([path, "--list-gpu-arch"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"release (\d+\.\d+)", ver)
    return {"path": path, "version": m.group(1) if m else "?",
            "archs": sorted({a for a in re.findall(r"compute_(\d+)", archs)}, key=int)}


def _nvidia_dirs() -> List[Path]:
    """The ``nvidia/`` folders of the pip CUDA wheels (namespace package)."""
    try:
        import nvidia  # noqa: F401  (namespace package from the nvidia-* wheels)
    except ImportError:
        return []
    return [Path(p) for p in getattr(nvidia, "__path__", [])]


def _find_pip_file(*parts: str) -> Optional[Path]:
    for base in _nvidia_dirs():
        cand = base.joinpath(*parts)
        if cand.exists():
            return cand
    return None


@lru_cache(maxsize=None)
def nvrtc_info() -> Optional[dict]:
    """``{"version", "archs", "include", "ptxas", "ptxas_version"}`` of the pip NVRTC toolchain, or None."""
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc  # cuda-python < 12.6 layout
        except ImportError:
            return None
    err, major, minor = nvrtc.nvrtcVersion()
    if int(err) != 0:
        return None
    err, count = nvrtc.nvrtcGetNumSupportedArchs()
    archs = []
    if int(err) == 0:
        err, values = nvrtc.nvrtcGetSupportedArchs()
        archs = [str(v) for v in values] if int(err) == 0 else []
    include = _find_pip_file("cuda_runtime", "include")
    ptxas = _find_pip_file("cuda_nvcc", "bin", "ptxas") or (Path(shutil.which("ptxas")) if shutil.which("ptxas")
                                                            else None)
    ptxas_version = None
    if ptxas:
        out = subprocess.run([str(ptxas), "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release (\d+\.\d+)", out)
        ptxas_version = m.group(1) if m else "?"
    return {"version": f"{major}.{minor}", "archs": archs, "include": str(include) if include else None,
            "ptxas": str(ptxas) if ptxas else None, "ptxas_version": ptxas_version, "module": nvrtc}


# ----------------------------------------------------------------------------- ptxas report
_MANGLED = re.compile(r"_ZN3esq(\d+)")


def kernel_display_name(mangled: str) -> str:
    """``_ZN3esq18dwsep_tiled_kernelIfE...`` → ``dwsep_tiled_kernel<float>`` (other names unchanged)."""
    m = _MANGLED.match(mangled)
    if not m:
        return mangled
    n = int(m.group(1))
    start = m.end()
    name = mangled[start:start + n]
    rest = mangled[start + n:]
    if rest.startswith("IfE"):
        return f"{name}<float>"
    if rest.startswith("I6__halfE"):
        return f"{name}<half>"
    if rest.startswith("IaE"):
        return f"{name}<int8>"
    return name


def parse_ptxas_verbose(text: str) -> List[dict]:
    """Per-kernel resources from ``ptxas -v`` output (registers, spills, stack, shared memory)."""
    funcs: Dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?([\w$]+)'?", line)
        if m:
            current = funcs.setdefault(m.group(1), {"name": kernel_display_name(m.group(1)), "mangled": m.group(1)})
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.update(stack_bytes=int(m.group(1)), spill_store_bytes=int(m.group(2)),
                           spill_load_bytes=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current["smem_bytes"] = int(s.group(1)) if s else 0
    return sorted((f for f in funcs.values() if "registers" in f), key=lambda f: f["name"])


# ----------------------------------------------------------------------------- compiles
def _compile_nvcc(src: Path, arch: str, info: dict, workdir: str) -> dict:
    root = plugin_source_dir()
    out = os.path.join(workdir, f"{src.stem}_sm{arch}.o")
    cmd = [info["path"], "-std=c++14", "-O3", "-c", f"-gencode=arch=compute_{arch},code=sm_{arch}",
           "-Xptxas", "-v", "-Xcompiler", "-Wall", f"-I{root / 'include'}", str(src), "-o", out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return {"compiler": f"nvcc {info['version']}", "ok": proc.returncode == 0,
            "log": proc.stderr, "functions": parse_ptxas_verbose(proc.stderr) if proc.returncode == 0 else []}


def _compile_nvrtc(src: Path, arch: str, info: dict, workdir: str) -> dict:
    nvrtc = info["module"]
    root = plugin_source_dir()
    opts = [f"--gpu-architecture=compute_{arch}", "-std=c++14", f"-I{root / 'include'}", "-lineinfo"]
    if info["include"]:
        opts.append(f"-I{info['include']}")
    err, prog = nvrtc.nvrtcCreateProgram(src.read_bytes(), src.name.encode(), 0, [], [])
    try:
        (res,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        log_text = log.decode(errors="replace").rstrip("\x00 \n")
        compiler = f"nvrtc {info['version']}"
        if int(res) != 0:
            return {"compiler": compiler, "ok": False, "log": log_text, "functions": []}
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = b" " * size
        nvrtc.nvrtcGetPTX(prog, ptx)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    ptx_path = os.path.join(workdir, f"{src.stem}_compute{arch}.ptx")
    with open(ptx_path, "wb") as f:
        f.write(ptx.rstrip(b"\x00"))
    if not info["ptxas"]:
        return {"compiler": compiler, "ok": True, "log": log_text + "\n(no ptxas: PTX only, no register report)",
                "functions": []}
    proc = subprocess.run([info["ptxas"], f"-arch=sm_{arch}", "-v", "-O3", ptx_path, "-o", ptx_path + ".cubin"],
                          capture_output=True, text=True)
    return {"compiler": f"{compiler} + ptxas {info['ptxas_version']}", "ok": proc.returncode == 0,
            "log": (log_text + "\n" + proc.stderr).strip(),
            "functions": parse_ptxas_verbose(proc.stderr) if proc.returncode == 0 else []}


def _one(src: Path, arch: str, workdir: str) -> dict:
    t0 = time.perf_counter()
    nv = nvcc_info()
    rt = nvrtc_info()
    if nv and arch in nv["archs"]:
        res = _compile_nvcc(src, arch, nv, workdir)
    elif rt and arch in rt["archs"]:
        res = _compile_nvrtc(src, arch, rt, workdir)
    else:
        have = []
        if nv:
            have.append(f"nvcc {nv['version']} ({','.join(nv['archs'])})")
        if rt:
            have.append(f"nvrtc {rt['version']} ({','.join(rt['archs'])})")
        res = {"compiler": None, "ok": False, "functions": [],
               "log": f"no compiler here targets sm_{arch} (have: {'; '.join(have) or 'none'}); {INSTALL_HINT}"}
    res.update(source=src.relative_to(plugin_source_dir()).as_posix(), arch=f"sm_{arch}",
               seconds=round(time.perf_counter() - t0, 2))
    warnings = [ln for ln in res.get("log", "").splitlines()
                if "warning" in ln.lower() and "deprecated" not in ln.lower()]
    res["warnings"] = warnings
    if res["ok"]:
        res["log"] = ""
    return res


def cuda_toolkit_roots() -> List[Path]:
    """Candidate CUDA toolkit folders: $CUDA_HOME / $CUDA_PATH, the folder of nvcc on the PATH (through symlinks),
    /usr/local/cuda. (nvcc may also be a wrapper script elsewhere, hence the fallbacks.)"""
    roots = [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    nv = nvcc_info()
    if nv:
        roots.append(Path(nv["path"]).resolve().parent.parent)
    roots.append(Path("/usr/local/cuda"))
    return [r for r in dict.fromkeys(roots) if (r / "bin").is_dir()]


def _cuda_include() -> List[str]:
    """Folders for cuda_runtime_api.h (and its crt/ headers): the CUDA toolkit's, else the pip wheels'."""
    for root in cuda_toolkit_roots():
        cand = root / "include"
        if (cand / "cuda_runtime_api.h").exists() and (cand / "crt" / "host_defines.h").exists():
            return [str(cand)]
    runtime = _find_pip_file("cuda_runtime", "include")
    crt = _find_pip_file("cuda_nvcc", "include")
    if runtime and crt and (runtime / "cuda_runtime_api.h").exists():
        return [str(runtime), str(crt)]
    return []


def check_plugin_sources(trt_include: str, *, compiler: Optional[str] = None) -> List[dict]:
    """Compile the TensorRT plugin sources (C++14, ``-fsyntax-only``) against the TensorRT headers in
    ``trt_include`` (the folder holding NvInfer.h). TensorRT itself is not needed, only its headers.

    Returns:
        ``[{"source", "ok", "compiler", "trt_version", "log"}]``, one per plugin source.

    Raises:
        InputError: ``trt_include`` has no NvInfer.h, or no C++ compiler / CUDA runtime header is available.
    """
    inc = Path(trt_include)
    if not (inc / "NvInfer.h").exists():
        raise InputError(f"no NvInfer.h in {trt_include}", path=str(trt_include),
                         hint="give the TensorRT include folder, e.g. /usr/include/aarch64-linux-gnu")
    cxx = compiler or next((c for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c and shutil.which(c)),
                           None)
    cuda_inc = _cuda_include()
    if not cxx or not cuda_inc:
        raise InputError("checking the plugin sources needs a C++ compiler and cuda_runtime_api.h",
                         hint=INSTALL_HINT)
    ver_text = (inc / "NvInferVersion.h").read_text(errors="replace") if (inc / "NvInferVersion.h").exists() else ""
    nums = [re.search(rf"define (?:NV_TENSORRT|TRT)_{part}(?:_ENTERPRISE)? (\d+)", ver_text)
            for part in ("MAJOR", "MINOR", "PATCH")]
    trt_version = ".".join(m.group(1) for m in nums if m) or "?"
    root = plugin_source_dir()
    out = []
    units = [(rel, []) for rel in PLUGIN_SOURCES + ("plugins/plugin_common.cpp",)]
    if trt_version.split(".")[0].isdigit() and int(trt_version.split(".")[0]) >= 10:
        units.append(("plugins/plugin_registry.cpp", ["-DESQ_PLUGIN_V3=1"]))   # the IPluginV3 build
    for rel, defines in units:
        cmd = [cxx, "-std=c++14", "-fsyntax-only", "-Wall", "-Wextra", "-Wno-deprecated-declarations",
               f"-I{root / 'include'}", f"-I{root / 'plugins'}", "-isystem", str(inc)] + defines
        for d in _cuda_include():
            cmd += ["-isystem", d]
        cmd.append(str(root / rel))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out.append({"source": rel + (f" ({' '.join(defines)})" if defines else ""), "ok": proc.returncode == 0,
                    "compiler": cxx, "trt_version": trt_version, "log": proc.stderr.strip()})
    return out


def run_plugin_selftest(trt_include: str, *, compiler: Optional[str] = None) -> dict:
    """Build and run ``tests/plugin_selftest.cpp`` against the TensorRT headers in ``trt_include``: creators,
    attribute parsing as the ONNX parser passes attributes, format negotiation, serialisation round trips.

    Needs nvcc (for the kernels' host launchers) and its libcudart, not libnvinfer and not a GPU
    (the library is built with ``ESQ_STATIC_REGISTRATION=0``).

    Returns:
        ``{"ok": bool, "trt_include", "log"}``.

    Raises:
        InputError: no NvInfer.h in ``trt_include``, or no nvcc / C++ compiler / libcudart.
    """
    inc = Path(trt_include)
    if not (inc / "NvInfer.h").exists():
        raise InputError(f"no NvInfer.h in {trt_include}", path=str(trt_include))
    nv = nvcc_info()
    cxx = compiler or next((c for c in (os.environ.get("CXX"), "g++", "c++") if c and shutil.which(c)), None)
    if not nv or not nv["archs"] or not cxx:
        raise InputError("the plugin self-test needs nvcc and a C++ compiler")
    libdir = next((d for r in cuda_toolkit_roots()
                   for d in (r / "lib64", r / "lib", r / "targets" / "x86_64-linux" / "lib",
                             r / "targets" / "aarch64-linux" / "lib") if (d / "libcudart.so").exists()), None)
    if libdir is None:
        raise InputError("libcudart.so not found in the CUDA toolkit", hint="set CUDA_HOME")
    root = plugin_source_dir()
    arch = nv["archs"][0]
    with tempfile.TemporaryDirectory(prefix="esq-selftest-") as tmp:
        objs = []
        for src in KERNEL_SOURCES:
            obj = os.path.join(tmp, Path(src).stem + ".o")
            proc = subprocess.run([nv["path"], "-std=c++14", "-c", f"-gencode=arch=compute_{arch},code=sm_{arch}",
                                   f"-I{root / 'include'}", str(root / src), "-o", obj], capture_output=True, text=True)
            if proc.returncode != 0:
                return {"ok": False, "trt_include": str(inc), "log": proc.stderr.strip()}
            objs.append(obj)
        exe = os.path.join(tmp, "plugin_selftest")
        cmd = [cxx, "-std=c++14", "-Wall", "-Wno-deprecated-declarations", "-DESQ_STATIC_REGISTRATION=0",
               f"-I{root / 'include'}", f"-I{root / 'plugins'}", "-isystem", str(inc)]
        for d in _cuda_include():
            cmd += ["-isystem", d]
        cmd += [str(root / "tests" / "plugin_selftest.cpp")] + [str(root / s) for s in PLUGIN_SOURCES
                                                                  if "registry" not in s]
        cmd += [str(root / "plugins" / "plugin_common.cpp")] + objs + [f"-L{libdir}", "-lcudart",
                                                                       f"-Wl,-rpath,{libdir}", "-o", exe]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"ok": False, "trt_include": str(inc), "log": proc.stderr.strip()}
        proc = subprocess.run([exe], capture_output=True, text=True, timeout=120)
        return {"ok": proc.returncode == 0, "trt_include": str(inc),
                "log": (proc.stdout + proc.stderr).strip()}


def check_kernels(archs: Optional[Iterable] = None, *, jobs: int = 2, trt_include: Optional[str] = None) -> dict:
    """Compile every kernel source for every architecture in ``archs`` (default :data:`CHECK_ARCHS`: 53, 62, 72,
    87, 110).

    Returns:
        ``{"ok": bool, "archs": [...], "toolchains": {...}, "results": [{"source", "arch", "compiler", "ok",
        "seconds", "warnings", "log" (the error when not ok), "functions": [{"name", "registers", "spill_store_bytes",
        "spill_load_bytes", "stack_bytes", "smem_bytes"}]}]}``; a spill or a compile error makes ``ok`` False for
        that entry only when it fails to compile (spills are reported, not fatal).

        With ``trt_include``, also ``"plugins"``: :func:`check_plugin_sources` against those TensorRT headers, and
        ``"plugin_selftest"``: :func:`run_plugin_selftest` (when nvcc is present).

    Raises:
        InputError: an invalid architecture or TensorRT include folder.
    """
    arch_list = parse_archs(CHECK_ARCHS if archs is None else archs)
    sources = [plugin_source_dir() / s for s in KERNEL_SOURCES]
    nv, rt = nvcc_info(), nvrtc_info()
    with tempfile.TemporaryDirectory(prefix="esq-check-") as workdir:
        jobs_list = [(s, a) for a in arch_list for s in sources]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(lambda sa: _one(sa[0], sa[1], workdir), jobs_list))
    toolchains = {
        "nvcc": {k: v for k, v in nv.items()} if nv else None,
        "nvrtc": {k: v for k, v in rt.items() if k != "module"} if rt else None,
    }
    report = {"ok": all(r["ok"] for r in results), "archs": [f"sm_{a}" for a in arch_list],
              "toolchains": toolchains, "results": results}
    if trt_include:
        report["plugins"] = check_plugin_sources(trt_include)
        report["ok"] = report["ok"] and all(p["ok"] for p in report["plugins"])
        if nv and report["ok"]:
            report["plugin_selftest"] = run_plugin_selftest(trt_include)
            report["ok"] = report["plugin_selftest"]["ok"]
    return report


# Stand-in for libnvinfer.so: the symbols the plugin library links against, never called at build time.
_STUB_NVINFER = """
void* getPluginRegistry(void) { return 0; }
void* getLogger(void) { return 0; }
int getInferLibVersion(void) { return 0; }
"""


def build_library_with_stub(trt_include: str, *, arch: str = "87", jobs: int = 2) -> dict:
    """Configure and build the whole CMake project (kernels and ``libedgesqueeze_plugins.so``, linked with
    ``--no-undefined``) against the TensorRT headers in ``trt_include`` and a stub ``libnvinfer.so``: what
    ``edgesqueeze plugins build`` does on a device, minus TensorRT's library. Needs cmake, nvcc and a C compiler.

    Returns:
        ``{"ok", "trt_include", "log", "exports": [the extern "C" entry points of the library]}``.

    Raises:
        InputError: no NvInfer.h in ``trt_include``, or cmake / nvcc / cc missing.
    """
    inc = Path(trt_include)
    if not (inc / "NvInfer.h").exists():
        raise InputError(f"no NvInfer.h in {trt_include}", path=str(trt_include))
    cc = next((c for c in (os.environ.get("CC"), "gcc", "cc", "clang") if c and shutil.which(c)), None)
    if not shutil.which("cmake") or nvcc_info() is None or cc is None:
        raise InputError("the library build needs cmake, nvcc and a C compiler")
    with tempfile.TemporaryDirectory(prefix="esq-libbuild-") as tmp:
        prefix = Path(tmp) / "trt"
        (prefix / "lib").mkdir(parents=True)
        os.symlink(inc.resolve(), prefix / "include")
        (prefix / "stub.c").write_text(_STUB_NVINFER)
        steps = [[cc, "-shared", "-fPIC", str(prefix / "stub.c"), "-o", str(prefix / "lib" / "libnvinfer.so")],
                 ["cmake", "-S", str(plugin_source_dir()), "-B", str(Path(tmp) / "build"),
                  f"-DCUDA_ARCHITECTURES={arch}", f"-DTENSORRT_ROOT={prefix}"],
                 ["cmake", "--build", str(Path(tmp) / "build"), f"-j{jobs}"]]
        log = []
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            log.append(proc.stdout[-3000:] + proc.stderr[-3000:])
            if proc.returncode != 0:
                return {"ok": False, "trt_include": str(inc), "log": "\n".join(log), "exports": []}
        lib = Path(tmp) / "build" / "libedgesqueeze_plugins.so"
        nm = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
        exports = sorted(n for n in ("getCreators", "getPluginCreators", "setLoggerFinder")
                         if re.search(rf"\bT {n}$", nm, re.M))
        return {"ok": lib.exists(), "trt_include": str(inc), "log": "\n".join(log), "exports": exports}
