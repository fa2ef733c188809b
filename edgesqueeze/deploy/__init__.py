"""Deploy bundles to devices over SSH and benchmark them there, one board or a fleet.

>>> from edgesqueeze.deploy import deploy, remote_bench, fleet_bench
>>> report = deploy("bundle/", "nvidia@jetson.local", identity="~/.ssh/jetson")      # doctest: +SKIP
>>> results = remote_bench("bundle/", "nvidia@jetson.local", out_dir="results/tx2")  # doctest: +SKIP
>>> merged = fleet_bench("bundle/", "fleet.toml", out_dir="results/fleet")           # doctest: +SKIP

The device side needs only Python 3.6+ (and trtexec, TensorRT or onnxruntime to run the model): the runner
``device_runner.py`` ships in every bundle as ``run_on_device.py``.
"""
from .core import deploy, engine_key
from .fleet import fleet_bench, read_fleet
from .probe import check_target, jetpack_for_l4t, parse_tegra_release
from .remote import BenchInterrupted, remote_bench
from .ssh import DeviceAddress, SshTransport, parse_device
from .sync import read_local_bundle, verify_remote

__all__ = ["deploy", "remote_bench", "fleet_bench", "read_fleet", "BenchInterrupted", "SshTransport",
           "DeviceAddress", "parse_device", "check_target", "jetpack_for_l4t", "parse_tegra_release",
           "engine_key", "read_local_bundle", "verify_remote"]
