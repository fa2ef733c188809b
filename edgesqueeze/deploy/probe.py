"""What a device is (probed over SSH) and whether it matches a bundle's target.

The device runs :mod:`edgesqueeze.deploy.device_probe` (Python 3.6, standard library) and reports raw facts;
this module turns them into L4T / JetPack / TensorRT / CUDA versions and a verdict against the bundle.
"""
from __future__ import annotations

import json
import re
import shlex
from importlib import resources
from typing import Dict, List, Optional, Tuple

from ..bench.boardstate import interpret_board_state
from ..errors import DeviceError
from .device_runner import version_from_tag

# L4T release -> JetPack (NVIDIA's JetPack archive). Keys are "major.minor[.patch]"; the longest prefix wins.
L4T_TO_JETPACK = {
    "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5": "4.5", "32.5.1": "4.5.1", "32.5.2": "4.5.1", "32.6.1": "4.6",
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4",
    "35.6.1": "5.1.5", "35.6.2": "5.1.6",
    "36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1", "36.4.7": "6.2.1",
    "38.2": "7.0",
}
# SoC (device-tree "compatible") -> the profiles built on it
SOC_PROFILES = {
    "tegra124": ("tk1",), "tegra210": ("tx1", "nano"), "tegra186": ("tx2",),
    "tegra194": ("xavier-nx", "agx-xavier"), "tegra234": ("orin-nano", "orin-nx", "agx-orin"),
    "tegra264": ("thor",),
}
_MODEL_WORDS = {"tx1": "TX1", "nano": "Nano", "tx2": "TX2", "xavier-nx": "Xavier NX", "agx-xavier": "AGX Xavier",
                "orin-nano": "Orin Nano", "orin-nx": "Orin NX", "agx-orin": "AGX Orin", "thor": "Thor"}


def probe_script() -> bytes:
    """The device-side probe's source, sent to ``python3 -``."""
    return resources.files(__package__).joinpath("device_probe.py").read_bytes()


def run_probe(transport, python: str = "python3", folder: str = ".", timeout: float = 60) -> dict:
    """Probe the device through ``transport``; return :func:`interpret` of the raw facts.

    Raises:
        DeviceError: the device has no Python 3 (the probe and the runner need it) or the probe failed.
    """
    res = transport.run(f"{shlex.quote(python)} - {shlex.quote(folder)}", input=probe_script(), timeout=timeout,
                        check=False, what="device probe")
    if res.returncode == 127 or "not found" in res.stderr and not res.stdout:
        raise DeviceError(f"'{python}' was not found on {transport.address}: the on-device runner needs Python 3.6+",
                          hint="install python3 on the device or pass --python /path/to/python3")
    if res.returncode != 0:
        raise DeviceError(f"the device probe failed on {transport.address} (exit {res.returncode}): "
                          f"{' '.join(res.stderr.strip().splitlines()[-2:])}")
    try:
        raw = json.loads(res.text.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise DeviceError(f"the device probe on {transport.address} printed no JSON: {res.text[:200]!r}") from exc
    return interpret(raw)


def parse_tegra_release(text: Optional[str]) -> Optional[str]:
    """``# R32 (release), REVISION: 7.1, GCID: ...`` -> ``"32.7.1"`` (None when absent or unreadable)."""
    if not text:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2).rstrip('.')}" if m else None


def jetpack_for_l4t(l4t: Optional[str]) -> Optional[str]:
    """The JetPack release that ships L4T ``l4t`` (longest known prefix), or None."""
    if not l4t:
        return None
    parts = l4t.split(".")
    for n in range(len(parts), 1, -1):
        key = ".".join(parts[:n])
        if key in L4T_TO_JETPACK:
            return L4T_TO_JETPACK[key]
    return None


def _trt_from_tag(tag: Optional[str]) -> Optional[str]:
    return version_from_tag(tag) if tag and tag.isdigit() else None


def interpret(raw: dict) -> dict:
    """Add derived facts to the probe's raw dict: l4t, jetpack, tensorrt, soc, candidates (profile names)."""
    info = dict(raw)
    info["l4t"] = parse_tegra_release(raw.get("nv_tegra_release"))
    info["jetpack"] = jetpack_for_l4t(info["l4t"])
    info["is_jetson"] = info["l4t"] is not None
    trt = raw.get("tensorrt_python") or raw.get("tensorrt_header") or _trt_from_tag(raw.get("trtexec_version_tag"))
    if not trt and raw.get("tensorrt_dpkg"):
        m = re.match(r"(\d+\.\d+\.\d+)", raw["tensorrt_dpkg"])
        trt = m.group(1) if m else None
    info["tensorrt"] = trt
    soc = None
    for comp in raw.get("device_tree_compatible") or []:
        m = re.search(r"nvidia,(tegra\d+)", comp)
        if m and m.group(1) in SOC_PROFILES:
            soc = m.group(1)
    info["soc"] = soc
    info["candidates"] = list(SOC_PROFILES.get(soc, ()))
    if len(info["candidates"]) > 1 and raw.get("device_tree_model"):
        named = [p for p in info["candidates"] if _MODEL_WORDS[p].lower() in raw["device_tree_model"].lower()]
        info["candidates"] = named or info["candidates"]
    info["board_state"] = interpret_board_state(raw.get("board_state"))
    return info


def _major_minor(version: Optional[str]) -> Optional[Tuple[int, int]]:
    if not version:
        return None
    m = re.match(r"(\d+)(?:\.(\d+))?", str(version))
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def check_target(info: dict, target: dict) -> Tuple[List[str], List[str]]:
    """Compare a probed device with a bundle's target profile.

    Returns:
        (mismatches, notes): mismatches make deploy fail unless forced; notes are warnings in any case.
    """
    mismatches: List[str] = []
    notes: List[str] = []
    name = target.get("name", "?")
    kind = target.get("kind")
    py = _major_minor(info.get("python"))
    if py is not None and py < (3, 6):
        mismatches.append(f"the device's Python is {info.get('python')}; the on-device runner needs 3.6+")
    if kind == "jetson":
        if not info.get("is_jetson"):
            mismatches.append(f"the bundle targets {name} but {info.get('hostname')} is not a Jetson "
                              f"(no /etc/nv_tegra_release; arch {info.get('arch')})")
        elif info.get("candidates") and name not in info["candidates"]:
            mismatches.append(f"the bundle targets {name} but the device is a {info.get('device_tree_model') or info.get('soc')}"
                              f" ({' or '.join(info['candidates'])})")
        want, have = _major_minor(target.get("tensorrt")), _major_minor(info.get("tensorrt"))
        if info.get("is_jetson") and want and have and want != have:
            mismatches.append(f"the bundle was built for TensorRT {target.get('tensorrt')} but the device has "
                              f"TensorRT {info.get('tensorrt')} (JetPack {info.get('jetpack')}): the calibration "
                              f"cache will not be accepted")
    elif kind == "desktop":
        if info.get("arch") != "x86_64":
            mismatches.append(f"the bundle targets the desktop GPU {name} but the device is {info.get('arch')}")
    elif kind == "cpu":
        if target.get("arch") and info.get("arch") and target["arch"] != info["arch"]:
            notes.append(f"the bundle's cpu profile describes a {target['arch']} host; the device is "
                         f"{info['arch']}: predictions in the bundle do not apply")
    if target.get("tensorrt") or kind in ("jetson", "desktop"):
        if not info.get("trtexec") and not (info.get("tensorrt_python") and info.get("pycuda")):
            msg = "the device has no TensorRT (no trtexec, no tensorrt+pycuda Python modules)"
            if info.get("onnxruntime"):
                notes.append(msg + ": the benchmark will fall back to onnxruntime on the CPU")
            else:
                mismatches.append(msg + " and no onnxruntime: nothing can run the model")
    elif not info.get("onnxruntime") and not info.get("trtexec"):
        mismatches.append("the device has no onnxruntime for Python " + str(info.get("python")) +
                          ": install it (pip install onnxruntime) to run a cpu bundle")
    return mismatches, notes


def describe(info: dict) -> Dict[str, object]:
    """The probe facts a deploy report shows."""
    keys = ("hostname", "arch", "python", "l4t", "jetpack", "soc", "device_tree_model", "tensorrt", "cuda",
            "trtexec", "nvcc", "cmake", "onnxruntime", "tegrastats", "free_bytes", "board_state")
    return {k: info.get(k) for k in keys}
