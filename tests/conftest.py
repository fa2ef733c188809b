"""Test tiers: CPU tests always run; gpu/trt/jetson/slow tests skip themselves with the reason shown."""
from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@lru_cache(maxsize=None)
def _gpu_reason():
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU here (nvidia-smi not found)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return "no NVIDIA GPU here (nvidia-smi -L lists none)"
    return None


@lru_cache(maxsize=None)
def _trt_reason():
    gpu = _gpu_reason()
    if gpu:
        return gpu
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"TensorRT is not installed ({type(exc).__name__}: pip install 'edgesqueeze[trt]')"
    return None


@lru_cache(maxsize=None)
def _jetson_reason():
    if not os.path.exists("/etc/nv_tegra_release"):
        return "not a Jetson (/etc/nv_tegra_release absent)"
    return None


@lru_cache(maxsize=None)
def _torch_reason():
    try:
        import torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"torch is not installed ({type(exc).__name__}: pip install 'edgesqueeze[torch]')"
    return None


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    slow = config.getoption("--runslow") or os.environ.get("EDGESQUEEZE_SLOW") == "1"
    probes = {"gpu": _gpu_reason, "trt": _trt_reason, "jetson": _jetson_reason, "torch": _torch_reason}
    for item in items:
        for marker, probe in probes.items():
            if marker in item.keywords:
                reason = probe()
                if reason:
                    item.add_marker(pytest.mark.skip(reason=f"{marker}: {reason}"))
        if "slow" in item.keywords and not slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow or EDGESQUEEZE_SLOW=1"))


@pytest.fixture(scope="session")
def light_models_dir():
    """The onnx package's Model-Zoo 'light' models (real architectures, weights from ConstantOfShape)."""
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.fixture
def cli(tmp_path):
    """Run the edgesqueeze CLI in-process: returns (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from edgesqueeze.cli import main

    def run(*args):
        runner = CliRunner()
        result = runner.invoke(_Main(main), [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


class _Main:
    """Adapter so that CliRunner drives edgesqueeze.cli.main (with its error handling)."""

    def __init__(self, main):
        self._main = main
        self.name = "edgesqueeze"

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        import sys

        code = self._main(list(args or []))
        sys.exit(code)


@pytest.fixture(scope="session")
def harness_dir(tmp_path_factory):
    """The g++ build of the kernels' host harness (compiled once per session; skips without a C++ compiler)."""
    from edgesqueeze.errors import UnsupportedError
    from edgesqueeze.plugins import emulate

    path = tmp_path_factory.mktemp("esq_kernels")
    try:
        emulate.build_harness(path)
    except UnsupportedError as exc:  # no C++ compiler on this machine
        pytest.skip(str(exc))
    return path
