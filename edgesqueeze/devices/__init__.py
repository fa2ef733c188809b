"""Device profiles: what a target can do, as data (``profiles.json``), plus the ``cpu`` profile of this host.

>>> p = get_profile("tx2")
>>> p.supports("int8"), p.tensorrt_version, p.peak_flops("fp16") / 1e12
(False, '8.2.1', 1.3312)
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Optional

from packaging.version import Version

from ..errors import InputError, UnsupportedError, did_you_mean
from ..precision import PRECISIONS


@dataclass(frozen=True)
class DeviceProfile:
    """A target device: compute capability, peaks, memory system and software stack.

    Peaks are dense GPU peaks (``peak_gflops`` in GFLOP/s, GOP/s for int8); ``int8_sparse`` is the 2:4 figure.
    """

    name: str
    display_name: str
    kind: str  # "jetson" | "desktop" | "cpu"
    arch: str
    compute_capability: Optional[str]
    cuda_cores: int
    tensor_cores: int
    gpu_max_clock_mhz: Optional[float]
    memory_gb: float
    memory_type: str
    memory_bus_bits: Optional[int]
    peak_bandwidth_gbs: float
    emc_max_mhz: Optional[float]
    dla_cores: int
    peak_gflops: Dict[str, Optional[float]]
    fast_fp16: bool
    int8: bool
    sparse_2_4: bool
    jetpack: Optional[str]
    l4t: Optional[str]
    cuda: Optional[str]
    tensorrt: Optional[str]
    python: Optional[str]
    onnx_max_opset: Optional[int] = None  # newest ai.onnx opset the target's TensorRT/onnxruntime load (None: any)
    onnx_max_ir: Optional[int] = None  # newest ONNX IR version they load (None: any)
    notes: str = ""
    sources: List[str] = field(default_factory=list)
    unverified: List[str] = field(default_factory=list)
    extra: Dict[str, object] = field(default_factory=dict)

    # ------------------------------------------------------------------ questions users ask
    @property
    def has_tensorrt(self) -> bool:
        """True when TensorRT exists for this target (not on the TK1 or a plain CPU)."""
        return bool(self.tensorrt)

    @property
    def tensorrt_version(self) -> Optional[str]:
        """The TensorRT version of the target's last JetPack (e.g. ``"8.2.1"``), or None."""
        return self.tensorrt

    @property
    def sm(self) -> Optional[int]:
        """Compute capability as an integer (``"8.7"`` -> 87), or None for a CPU."""
        if not self.compute_capability:
            return None
        major, minor = self.compute_capability.split(".")
        return int(major) * 10 + int(minor)

    def supports(self, precision: str) -> bool:
        """Return True when the target runs ``precision`` (fp32, fp16, int8) fast on its accelerator.

        fp32 is always supported; fp16 needs fast FP16 arithmetic; int8 needs INT8 support in TensorRT
        (or, for the ``cpu`` profile, onnxruntime's INT8 kernels, which always exist).
        """
        precision = precision.lower()
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
        if precision == "fp32":
            return True
        if precision == "fp16":
            return self.fast_fp16
        return self.int8

    def why_not(self, precision: str) -> str:
        """Explain in one sentence why ``precision`` is not supported (empty when it is)."""
        if self.supports(precision):
            return ""
        if precision == "int8":
            if not self.has_tensorrt:
                return f"{self.display_name} has no TensorRT and no INT8 support"
            return (f"{self.display_name} ({self.arch} sm_{self.sm}) has no INT8 support in TensorRT; "
                    f"use --precision fp16")
        return f"{self.display_name} ({self.arch}) has no fast FP16 arithmetic; use --precision fp32"

    def require(self, precision: str) -> None:
        """Raise :class:`UnsupportedError` when ``precision`` is not supported, saying why."""
        if not self.supports(precision):
            raise UnsupportedError(self.why_not(precision))

    def best_precision(self) -> str:
        """The ``--precision auto`` choice: int8 where supported, else fp16, else fp32.

        On the ``cpu`` profile INT8 pays off only with VNNI, so auto picks fp32 without it.
        """
        if self.kind == "cpu":
            return "int8" if self.extra.get("vnni") else "fp32"
        for p in ("int8", "fp16"):
            if self.supports(p):
                return p
        return "fp32"

    def peak_flops(self, precision: str = "fp32", sparse: bool = False) -> float:
        """Peak arithmetic rate in FLOP/s (OP/s for int8); falls back to the best lower precision's rate."""
        precision = precision.lower()
        key = "int8_sparse" if precision == "int8" and sparse and self.sparse_2_4 else precision
        for k in (key, precision, "fp16" if precision == "int8" else None, "fp32"):
            if k and self.peak_gflops.get(k):
                return float(self.peak_gflops[k]) * 1e9
        raise UnsupportedError(f"{self.name} has no peak figure for {precision}")

    @property
    def peak_bandwidth(self) -> float:
        """Peak DRAM bandwidth in bytes/s."""
        return float(self.peak_bandwidth_gbs) * 1e9

    def emc_bandwidth(self, emc_percent: float, emc_mhz: Optional[float] = None) -> float:
        """Bandwidth in bytes/s from tegrastats' EMC utilisation: % x clock x 2 (DDR) x bus bytes."""
        if not self.memory_bus_bits:
            raise UnsupportedError(f"{self.name} has no memory bus width in its profile")
        mhz = emc_mhz if emc_mhz else self.emc_max_mhz
        if not mhz:
            raise UnsupportedError(f"{self.name}: no EMC clock known")
        return emc_percent / 100.0 * mhz * 1e6 * 2 * self.memory_bus_bits / 8

    @property
    def onnx_limits(self) -> Dict[str, Optional[int]]:
        """``{"opset": N, "ir": N}``: the newest ONNX the target loads (values None when there is no limit)."""
        return {"opset": self.onnx_max_opset, "ir": self.onnx_max_ir}

    def loads_onnx(self, opset: int, ir_version: int) -> bool:
        """True when a model with ai.onnx ``opset`` and IR ``ir_version`` is within the target's limits."""
        return ((self.onnx_max_opset is None or opset <= self.onnx_max_opset)
                and (self.onnx_max_ir is None or ir_version <= self.onnx_max_ir))

    @property
    def kernel_launch_s(self) -> float:
        """Fixed cost per executed layer in seconds (kernel launch + enqueue), for latency prediction."""
        return float(self.extra.get("kernel_launch_us", 5.0)) * 1e-6

    def trt_version_tag(self) -> Optional[str]:
        """NV_TENSORRT_VERSION digits as TensorRT writes them in calibration caches (8.2.1 -> 8201, 10.3 -> 100300)."""
        if not self.tensorrt:
            return None
        return trt_version_tag(self.tensorrt)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field plus the derived answers."""
        d = asdict(self)
        d.update(d.pop("extra"))
        d["has_tensorrt"] = self.has_tensorrt
        d["best_precision"] = self.best_precision()
        d["trt_version_tag"] = self.trt_version_tag()
        return d


def trt_version_tag(version: str) -> str:
    """Return the NV_TENSORRT_VERSION number for a TensorRT version string.

    TensorRT 8.x uses major*1000 + minor*100 + patch (8.2.3 -> 8203); 10.x and later use
    major*10000 + minor*100 + patch (10.3.0 -> 100300).
    """
    v = Version(version)
    major, minor, patch = (list(v.release) + [0, 0, 0])[:3]
    if major >= 10:
        return str(major * 10000 + minor * 100 + patch)
    return str(major * 1000 + minor * 100 + patch)


_KNOWN = {f for f in DeviceProfile.__dataclass_fields__}


def _from_dict(d: dict) -> DeviceProfile:
    base = {k: v for k, v in d.items() if k in _KNOWN and k != "extra"}
    extra = {k: v for k, v in d.items() if k not in _KNOWN}
    return DeviceProfile(extra=extra, **base)


VARIANT_FIELDS = ("memory_gb", "emc_max_mhz", "peak_bandwidth_gbs")  # what a memory variant may change


def memory_variant(profile: DeviceProfile, variant: str) -> DeviceProfile:
    """``profile`` with the memory module ``variant`` of its ``memory_variants`` (e.g. Xavier NX "16gb").

    The default variant is the base profile itself; another one is a profile named ``<base>-<variant>`` whose
    memory size, EMC clock and peak bandwidth come from the variant (its source is added to ``sources``).

    Raises:
        InputError: the profile has no such variant.
    """
    variants = {v["name"]: v for v in profile.extra.get("memory_variants", [])}
    if variant not in variants:
        known = ", ".join(variants) or "none"
        raise InputError(f"{profile.name} has no memory variant '{variant}' (variants: {known})")
    v = variants[variant]
    if v.get("default"):
        return profile
    return replace(profile, name=f"{profile.name}-{variant}",
                   display_name=f"{profile.display_name} {variant.upper().replace('GB', ' GB')}",
                   sources=list(profile.sources) + [v["source"]], **{k: v[k] for k in VARIANT_FIELDS})


@lru_cache(maxsize=1)
def _load_profiles() -> Dict[str, DeviceProfile]:
    text = resources.files(__package__).joinpath("profiles.json").read_text(encoding="utf-8")
    out: Dict[str, DeviceProfile] = {}
    for d in json.loads(text)["profiles"]:
        base = out[d["name"]] = _from_dict(d)
        for v in d.get("memory_variants", []):
            if not v.get("default"):  # a selectable module size: listed right after its base profile
                variant = memory_variant(base, v["name"])
                out[variant.name] = variant
    return out


# ---------------------------------------------------------------------------------- this host
def _cpu_flags() -> Dict[str, str]:
    info: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if ":" in line:
                    k, _, v = line.partition(":")
                    info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


def _cpu_max_mhz(info: Dict[str, str]) -> float:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding="utf-8") as fh:
            return int(fh.read().strip()) / 1000.0
    except (OSError, ValueError):
        pass
    try:
        return float(info.get("cpu MHz", "0")) or 2000.0
    except ValueError:
        return 2000.0


@lru_cache(maxsize=1)
def cpu_profile() -> DeviceProfile:
    """Build the ``cpu`` profile of this host: cores and ISA features read now, bandwidth a default.

    FP32 peak = cores x clock x FLOP/cycle (AVX-512: 64, AVX2+FMA: 32, SSE/NEON: 8). The memory bandwidth
    is not measurable without a benchmark: it is an unverified 20 GB/s default.
    """
    info = _cpu_flags()
    flags = set(info.get("flags", info.get("Features", "")).split())
    cores = os.cpu_count() or 1
    mhz = _cpu_max_mhz(info)
    if "avx512f" in flags:
        per_cycle = 64
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 32
    else:
        per_cycle = 8
    fp32 = cores * mhz / 1000.0 * per_cycle
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    isa = sorted(f for f in flags if f in {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                                            "avx512_bf16", "amx_int8", "asimd", "asimdhp", "f16c"})
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = 0.0
    return DeviceProfile(
        name="cpu", display_name=info.get("model name", platform.processor() or platform.machine()), kind="cpu",
        arch=platform.machine(), compute_capability=None, cuda_cores=0, tensor_cores=0, gpu_max_clock_mhz=None,
        memory_gb=mem_gb, memory_type="host", memory_bus_bits=None, peak_bandwidth_gbs=20.0, emc_max_mhz=None,
        dla_cores=0, peak_gflops={"fp32": round(fp32, 1), "fp16": round(fp32, 1),
                                  "int8": round(fp32 * (4 if vnni else 1), 1)},
        fast_fp16=False, int8=True, sparse_2_4=False, jetpack=None, l4t=None, cuda=None, tensorrt=None,
        python=platform.python_version(),
        notes=(f"This host, read at run time: {cores} cores at {mhz:.0f} MHz, {per_cycle} FP32 FLOP/cycle/core. "
               "ONNX Runtime on the CPU is the embedded default. INT8 runs through onnxruntime's QDQ kernels "
               + ("with VNNI." if vnni else "without VNNI (no faster than FP32 here).")),
        sources=["/proc/cpuinfo", "os.cpu_count()"], unverified=["peak_bandwidth_gbs", "kernel_launch_us"],
        extra={"cores": cores, "isa": isa, "vnni": vnni, "kernel_launch_us": 1.0})


def list_profiles(include_cpu: bool = True) -> List[DeviceProfile]:
    """Return every known profile (the Jetsons in release order, desktop GPUs, then ``cpu``)."""
    profiles = list(_load_profiles().values())
    if include_cpu:
        profiles.append(cpu_profile())
    return profiles


def profile_names() -> List[str]:
    """Names accepted by ``--target``."""
    return [p.name for p in list_profiles()]


def get_profile(name: str) -> DeviceProfile:
    """Return the profile called ``name`` (case-insensitive; ``_`` and ``-`` are the same).

    Raises:
        InputError: no such profile; the message lists the known names.
    """
    if isinstance(name, DeviceProfile):
        return name
    key = str(name).strip().lower().replace("_", "-")
    key = TARGET_ALIASES.get(key, key)
    if key == "cpu":
        return cpu_profile()
    profiles = _load_profiles()
    if key not in profiles:
        raise _unknown_target(name, key, list(profiles))
    return profiles[key]


# spellings that name exactly one board; a family name ("orin", "xavier") names several and is refused
TARGET_ALIASES = {"jetson-nano": "nano", "xaviernx": "xavier-nx", "agxorin": "agx-orin", "host": "cpu"}


def _unknown_target(name: str, key: str, names: List[str]) -> InputError:
    """The error for a target that is no profile: ambiguous (a family name: every board it could be is listed) or
    unknown (with a did-you-mean for a misspelling)."""
    family = [n for n in names if key in n.split("-") or key.replace("-", "") == n.replace("-", "")]
    if len(family) > 1:
        return InputError(f"ambiguous target '{name}': it could be {', '.join(family)}",
                          hint="name the board: they differ in memory bandwidth, DLA count and peak throughput")
    maybe = f" (did you mean {family[0]}?)" if family else did_you_mean(key, names + ["cpu"] + list(TARGET_ALIASES))
    return InputError(f"unknown target '{name}'{maybe}; "
                      f"known targets: {', '.join(names + ['cpu'])}", hint="edgesqueeze devices lists them")
