"""Read the kernels' machine code (SASS): multiply-adds per shared-memory load in the main loop, registers, spills,
theoretical occupancy. Nothing here needs a GPU: nvcc compiles to a cubin, ``cuobjdump -sass`` disassembles it.

``cuobjdump``/``nvdisasm`` come with a CUDA toolkit or from PyPI (``pip install nvidia-cuda-cuobjdump
nvidia-cuda-nvdisasm``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import InputError, UnsupportedError
from .check import _compile_nvrtc, kernel_display_name, nvcc_info, nvrtc_info, parse_ptxas_verbose
from .sources import KERNEL_SOURCES, plugin_source_dir

# Multiply-add instructions and what one of them does (multiply-accumulates per thread).
FMA_OPS = {"FFMA": 1, "HFMA2": 2, "IDP.4A": 4, "IDP4A": 4, "DFMA": 1}
_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)\s*([^;]*);")
_TARGET = re.compile(r"`?\(?\.L_x_(\d+)\)?|0x([0-9a-f]+)")

# Per-SM limits of sm_87 (Jetson AGX Orin / Orin NX / Orin Nano; CUDA C Programming Guide, compute capability 8.7).
SM87 = {"regs_per_sm": 65536, "max_warps": 48, "max_blocks": 16, "smem_per_sm": 164 * 1024,
        "smem_per_block_optin": 163 * 1024, "smem_reserved_per_block": 1024, "reg_granularity": 256}


def find_cuobjdump() -> Optional[str]:
    """``cuobjdump`` on the PATH, next to nvcc, or from the ``nvidia-cuda-cuobjdump`` wheel; None if absent."""
    path = shutil.which("cuobjdump")
    if path:
        return path
    nv = nvcc_info()
    if nv and (Path(nv["path"]).resolve().parent / "cuobjdump").exists():
        return str(Path(nv["path"]).resolve().parent / "cuobjdump")
    try:
        import nvidia  # noqa: F401  (namespace package of the CUDA wheels)
    except ImportError:
        return None
    for base in getattr(nvidia, "__path__", []):
        for cand in sorted(Path(base).glob("*/bin/cuobjdump")):
            return str(cand)
    return None


def split_functions(sass: str) -> Dict[str, List[tuple]]:
    """``cuobjdump -sass`` text → ``{mangled name: [(address, opcode, operands), ...]}``."""
    funcs: Dict[str, List[tuple]] = {}
    current = None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = funcs.setdefault(m.group(1), [])
            continue
        m = _INSTR.search(line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return funcs


def _fma_weight(opcode: str) -> int:
    for op, macs in FMA_OPS.items():
        if opcode == op or opcode.startswith(op + "."):
            return macs
    return 0


def main_loop(instrs: List[tuple], min_fma: int = 8) -> dict:
    """The main loop of a kernel and its counts: among the loops (a backward branch and its target) that read shared
    memory and hold at least ``min_fma`` multiply-adds, the one where multiply-adds are densest (per instruction): the
    inner product loop, not the loops around it that also stage, store and requantise.

    Returns:
        ``{"start", "end", "fma", "macs", "lds", "ldg", "fma_per_lds", "fma_per_load"}``: fma counts
        FFMA/HFMA2/IDP.4A instructions, macs the multiply-accumulates per thread they do, lds the LDS instructions
        of every width, ldg the global loads (LDG), fma_per_load fma per shared or global load. ``start`` is None
        when no loop reads shared memory.
    """
    loops = []
    for addr, op, args in instrs:
        t = _TARGET.search(args) if op.startswith("BRA") else None
        target = int(t.group(2), 16) if t and t.group(2) else None
        if target is None or target > addr:
            continue
        body = [o for (ad, o, _a) in instrs if target <= ad <= addr]
        lds = sum(1 for o in body if o.startswith("LDS"))
        ldg = sum(1 for o in body if o.startswith("LDG"))
        fma = sum(1 for o in body if _fma_weight(o))
        if lds and fma >= min_fma:
            loops.append({"start": target, "end": addr, "fma": fma, "macs": sum(_fma_weight(o) for o in body),
                          "lds": lds, "ldg": ldg, "fma_per_lds": round(fma / lds, 2),
                          "fma_per_load": round(fma / (lds + ldg), 2), "_density": fma / len(body)})
    if not loops:
        return {"start": None, "end": None, "fma": 0, "macs": 0, "lds": 0, "ldg": 0, "fma_per_lds": None,
                "fma_per_load": None}
    best = max(loops, key=lambda lp: lp["_density"])
    best.pop("_density")
    return best


def occupancy(registers: int, smem_bytes: int, threads: int, limits: dict = SM87) -> dict:
    """Theoretical occupancy of one kernel: resident blocks and warps per SM, and which resource limits them."""
    warps = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // limits["reg_granularity"]) * limits["reg_granularity"]
    by = {"warps": limits["max_warps"] // warps, "blocks": limits["max_blocks"],
          "registers": limits["regs_per_sm"] // (regs_per_warp * warps)}
    if smem_bytes > limits["smem_per_block_optin"]:
        by["shared memory"] = 0
    else:
        by["shared memory"] = limits["smem_per_sm"] // (smem_bytes + limits["smem_reserved_per_block"])
    blocks = min(by.values())
    limiter = min(by, key=lambda k: by[k])
    return {"blocks_per_sm": blocks, "warps_per_sm": blocks * warps,
            "occupancy": round(blocks * warps / limits["max_warps"], 3), "limited_by": limiter}


def _cubin(rel: str, arch: str, nvcc: Optional[str], tmp: str) -> tuple:
    """``(cubin path, {mangled: ptxas resources})`` of one kernel source: nvcc where it targets ``arch``, else the
    CUDA 12 NVRTC + ptxas wheels (sm_53/62/72, which nvcc 13 no longer targets)."""
    root = plugin_source_dir()
    if nvcc:
        cubin = Path(tmp) / (Path(rel).stem + ".cubin")
        proc = subprocess.run([nvcc, "-std=c++14", "-O3", "-cubin", f"-arch=sm_{arch}", "-Xptxas", "-v",
                               f"-I{root / 'include'}", str(root / rel), "-o", str(cubin)],
                              capture_output=True, text=True)
        ok, log, functions = proc.returncode == 0, proc.stderr, parse_ptxas_verbose(proc.stderr)
    else:
        res = _compile_nvrtc(root / rel, arch, nvrtc_info(), tmp)
        cubin = Path(tmp) / f"{Path(rel).stem}_compute{arch}.ptx.cubin"
        ok, log, functions = res["ok"] and cubin.exists(), res["log"], res["functions"]
    if not ok:
        raise InputError(f"{rel} does not compile for sm_{arch}: {log[-2000:]}", path=str(root / rel))
    return cubin, {f["mangled"]: f for f in functions}


def _compiler_for(arch: str, nvcc: Optional[str]) -> Optional[str]:
    """The nvcc to use for ``arch`` (None: the NVRTC wheels); raises UnsupportedError when neither targets it."""
    if nvcc:
        return nvcc
    nv = nvcc_info()
    if nv is not None and arch in nv["archs"]:
        return nv["path"]
    rt = nvrtc_info()
    if rt is not None and rt["ptxas"] and arch in rt["archs"]:
        return None
    raise UnsupportedError(f"no nvcc or NVRTC + ptxas here targets sm_{arch}",
                           hint="install the CUDA toolkit (nvcc 12 or 13), or pip install \"cuda-bindings<13\" "
                                "nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12 for sm_53/62/72")


def sass_report(arch: str = "87", *, nvcc: Optional[str] = None) -> List[dict]:
    """Compile every kernel source to a cubin for ``sm_<arch>`` and measure each kernel's main loop.

    Returns:
        ``[{"source", "kernel", "mangled", "registers", "spill_bytes", "static_smem_bytes", "loop": main_loop()}]``.

    Raises:
        UnsupportedError: neither nvcc nor the NVRTC + ptxas wheels target ``arch``, or no cuobjdump.
        InputError: a source does not compile.
    """
    compiler = _compiler_for(arch, nvcc)
    dump = find_cuobjdump()
    if dump is None:
        raise UnsupportedError("no cuobjdump to disassemble the kernels", hint="pip install nvidia-cuda-cuobjdump")
    rows = []
    with tempfile.TemporaryDirectory(prefix="esq-sass-") as tmp:
        for rel in KERNEL_SOURCES:
            cubin, resources = _cubin(rel, arch, compiler, tmp)
            proc = subprocess.run([dump, "-sass", str(cubin)], capture_output=True, text=True)
            if proc.returncode != 0:  # cuobjdump >= 13.1 refuses sm_72 and older ("use CUDA toolkit 13.0 or earlier")
                raise UnsupportedError(f"{dump} cannot disassemble sm_{arch}: {proc.stderr.strip()[:300]}",
                                       hint="use the cuobjdump of a CUDA toolkit that still supports the architecture")
            sass = proc.stdout
            for mangled, instrs in sorted(split_functions(sass).items(), key=lambda kv: kernel_display_name(kv[0])):
                res = resources.get(mangled, {})
                rows.append({"source": rel, "kernel": kernel_display_name(mangled), "mangled": mangled,
                             "registers": res.get("registers"), "static_smem_bytes": res.get("smem_bytes", 0),
                             "spill_bytes": res.get("spill_store_bytes", 0) + res.get("spill_load_bytes", 0),
                             "loop": main_loop(instrs)})
    return rows
