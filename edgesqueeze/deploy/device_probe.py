"""Device-side probe: what this machine is and what it can run. Prints one JSON object on stdout.

Sent over SSH and run as ``python3 - [DIR]`` (standard library only, Python 3.6+). It reports raw facts;
the host interprets them (edgesqueeze.deploy.probe). DIR is the folder whose free disk space matters.
"""
import glob
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys

TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")
NVCC_PATHS = ("/usr/local/cuda/bin/nvcc",)


def read(path, limit=4096):
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except (IOError, OSError):
        return None


def run(args, timeout=10):
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=timeout)
        return out.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return None


def which(name, extra=()):
    for path in extra:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def module_version(name, dist=None):
    """The installed version of a Python module, without importing it where Python 3.8+ allows."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        from importlib import metadata  # novermin (Python 3.8+, guarded)
        for candidate in (dist or name, name):
            try:
                return metadata.version(candidate)
            except metadata.PackageNotFoundError:
                pass
    except ImportError:
        pass
    try:
        mod = __import__(name)
        return str(getattr(mod, "__version__", "unknown"))
    except Exception:  # noqa: BLE001 - a broken install is "absent" here
        return None


def dpkg_version(packages):
    """(package, version) of the first installed Debian package of ``packages`` (one dpkg-query call)."""
    if not shutil.which("dpkg-query"):
        return None, None
    out = run(["dpkg-query", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n"] + list(packages)) or ""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2].startswith("ii") and re.match(r"^\d", parts[1]):
            found[parts[0]] = parts[1]
    for pkg in packages:
        if pkg in found:
            return pkg, found[pkg]
    return None, None


def tensorrt_from_header():
    for folder in ("/usr/include/aarch64-linux-gnu", "/usr/include/x86_64-linux-gnu", "/usr/include",
                   "/usr/local/tensorrt/include"):
        text = read(os.path.join(folder, "NvInferVersion.h"), 1 << 16)
        if text:
            parts = []
            for key in ("MAJOR", "MINOR", "PATCH"):
                m = re.search(r"#define\s+(?:NV_)?TENSORRT_%s\s+(\d+)" % key, text)
                if m:
                    parts.append(m.group(1))
            if len(parts) == 3:
                return ".".join(parts)
    return None


def cuda_version():
    text = read("/usr/local/cuda/version.json", 1 << 16)
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    text = read("/usr/local/cuda/version.txt")
    if text:
        m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
        if m:
            return m.group(1)
    return None


def free_bytes(folder):
    path = os.path.abspath(os.path.expanduser(folder or "."))
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
    except OSError:
        return None

# Board state (nvpmodel mode, clock limits, fan): raw values only; edgesqueeze.bench.boardstate interprets them.
# GPU devfreq device per board: Orin JP5, Orin JP6, Xavier, TX2, Nano/TX1
GPU_DEVFREQ = ("17000000.ga10b", "17000000.gpu", "17000000.gv11b", "17000000.gp10b", "57000000.gpu")
EMC_LIMITS = ("sys/kernel/debug/bpmp/debug/clk/emc/min_rate", "sys/kernel/debug/bpmp/debug/clk/emc/max_rate",
              "sys/kernel/nvpmodel_emc_cap/emc_iso_cap")
FAN_PWM = ("sys/devices/pwm-fan/target_pwm", "sys/devices/platform/pwm-fan/hwmon/hwmon*/pwm1",
           "sys/class/hwmon/hwmon*/pwm1")


def _value(root, rel):
    text = read(os.path.join(root, rel), 256)
    return text.strip() if text is not None else None


def _first_glob(root, patterns):
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            text = read(path, 256)
            if text is not None:
                return os.path.relpath(path, root), text.strip()
    return None, None


def board_state(root="/", nvpmodel_output=None):
    """Raw board state: ``nvpmodel -q`` output, /etc/nvpmodel.conf, CPU/GPU/EMC clock limits (sysfs), fan PWM.

    ``root`` is the file-system root (a recorded sysfs tree in tests); ``nvpmodel -q`` runs only on the real root.
    """
    if nvpmodel_output is None and root == "/" and shutil.which("nvpmodel"):
        nvpmodel_output = run(["nvpmodel", "-q"])
    cpus = {}
    for folder in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq"))):
        core = os.path.basename(os.path.dirname(folder))
        cpus[core] = dict((k, _value(folder, "scaling_" + k + "_freq")) for k in ("min", "max", "cur"))
        cpus[core]["hw_max"] = _value(folder, "cpuinfo_max_freq")
    gpu = None
    for name in GPU_DEVFREQ:  # /sys/class/devfreq/<name> links to the GPU's devfreq folder on every L4T
        folder = os.path.join(root, "sys/class/devfreq", name)
        if os.path.isdir(folder):
            gpu = dict((k, _value(folder, k)) for k in ("min_freq", "max_freq", "cur_freq"))
            gpu["name"] = name
            break
    emc = dict((rel.rsplit("/", 1)[1], _value(root, rel)) for rel in EMC_LIMITS)
    fan_path, fan = _first_glob(root, FAN_PWM)
    return {"nvpmodel_q": nvpmodel_output, "nvpmodel_conf": read(os.path.join(root, "etc/nvpmodel.conf"), 1 << 17),
            "cpufreq": cpus, "gpu_devfreq": gpu, "emc": emc, "fan_pwm": fan, "fan_path": fan_path}


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "."
    trtexec = which("trtexec", TRTEXEC_PATHS)
    nvcc = which("nvcc", NVCC_PATHS)
    trt_pkg, trt_dpkg = dpkg_version(("libnvinfer-bin", "libnvinfer10", "libnvinfer8", "tensorrt"))
    trtexec_version = None
    if trtexec:
        out = run([trtexec, "--help"], timeout=20) or ""
        m = re.search(r"TensorRT v(\d+)", out)
        trtexec_version = m.group(1) if m else None
    nvcc_version = None
    if nvcc:
        m = re.search(r"release (\d+\.\d+)", run([nvcc, "--version"]) or "")
        nvcc_version = m.group(1) if m else None
    compatible = read("/proc/device-tree/compatible")
    model = read("/proc/device-tree/model")
    info = {
        "hostname": socket.gethostname(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "os": (read("/etc/os-release") or "").strip(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "nv_tegra_release": (read("/etc/nv_tegra_release") or "").strip() or None,
        "device_tree_model": model.strip("\x00 \n") if model else None,
        "device_tree_compatible": [c for c in compatible.split("\x00") if c] if compatible else [],
        "trtexec": trtexec,
        "trtexec_version_tag": trtexec_version,
        "tensorrt_dpkg": trt_dpkg,
        "tensorrt_dpkg_package": trt_pkg,
        "tensorrt_header": tensorrt_from_header(),
        "tensorrt_python": module_version("tensorrt"),
        "pycuda": module_version("pycuda"),
        "onnxruntime": module_version("onnxruntime") or module_version("onnxruntime", "onnxruntime-gpu"),
        "numpy": module_version("numpy"),
        "cuda": cuda_version(),
        "nvcc": nvcc,
        "nvcc_version": nvcc_version,
        "cmake": which("cmake"),
        "tegrastats": which("tegrastats", ("/usr/bin/tegrastats",)),
        "free_bytes": free_bytes(folder),
        "cpu_count": os.cpu_count(),
        "home": os.path.expanduser("~"),
        "board_state": board_state() if (model or os.path.exists("/etc/nv_tegra_release")) else None,
    }
    sys.stdout.write(json.dumps(info, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
