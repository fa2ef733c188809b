"""Power probes on sysfs trees built in temporary folders (INA3221 IIO + hwmon, RAPL), tegrastats streaming."""
import sys
import time
from pathlib import Path

import pytest

from edgesqueeze.bench.ina3221 import Ina3221Probe, discover
from edgesqueeze.bench.probe_tegrastats import TegrastatsProbe
from edgesqueeze.bench.probes import NullProbe, PowerSampler, select_probe
from edgesqueeze.bench.rapl import RaplProbe, unwrap
from edgesqueeze.errors import InputError

DATA = Path(__file__).parent / "data" / "tegrastats"


def put(path: Path, text) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def hwmon_chip(root: Path, dev: str, hw: int, rails, volts_mv=5000, amps_ma=(400, 200, 100)):
    """JetPack >= 5 layout: /sys/bus/i2c/devices/<dev>/{name, hwmon/hwmonN/in<ch>_label, in<ch>_input, curr<ch>_input}."""
    d = root / "bus" / "i2c" / "devices" / dev
    put(d / "name", "ina3221")
    h = d / "hwmon" / f"hwmon{hw}"
    for ch, (label, ma) in enumerate(zip(rails, amps_ma), start=1):
        put(h / f"in{ch}_label", label)
        put(h / f"in{ch}_input", volts_mv)
        put(h / f"curr{ch}_input", ma)
    put(h / "in7_label", "sum of shunt voltages")
    put(h / "in7_input", 12)
    return h


def iio_chip(root: Path, dev: str, n: int, rails, powers_mw):
    """JetPack <= 4 layout: .../<dev>/{name, iio:deviceN/rail_name_<ch>, in_power<ch>_input}."""
    d = root / "bus" / "i2c" / "devices" / dev
    put(d / "name", "ina3221x")
    io = d / f"iio:device{n}"
    for ch, (label, mw) in enumerate(zip(rails, powers_mw)):
        put(io / f"rail_name_{ch}", label)
        put(io / f"in_power{ch}_input", mw)
        put(io / f"in_voltage{ch}_input", 5000)
        put(io / f"in_current{ch}_input", mw / 5)
    return io


def test_ina3221_hwmon_agx_orin_layout(tmp_path):
    hwmon_chip(tmp_path, "1-0040", 1, ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"])
    hwmon_chip(tmp_path, "1-0041", 2, ["NC", "VDDQ_VDD2_1V8AO", "NC"])
    put(tmp_path / "bus" / "i2c" / "devices" / "0-0050" / "name", "24c02")  # another chip: ignored
    rails = discover(str(tmp_path))
    assert [r["rail"] for r in rails] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
    probe = Ina3221Probe(str(tmp_path))
    assert probe.available, probe.reason
    s = probe.read()
    assert s["rails"]["VDD_GPU_SOC"] == pytest.approx(5000 * 400 / 1000)  # 5 V x 400 mA = 2000 mW
    assert s["rails"]["VDDQ_VDD2_1V8AO"] == pytest.approx(5000 * 200 / 1000)
    assert s["total_mw"] == pytest.approx(2000 + 1000 + 500 + 1000)
    assert "carrier board not counted" in probe.total_source


def test_ina3221_iio_tx2_layout_uses_vdd_in(tmp_path):
    iio_chip(tmp_path, "0-0040", 0, ["VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI"], [76, 384, 364])
    iio_chip(tmp_path, "0-0041", 1, ["VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR"], [1383, 153, 192])
    probe = Ina3221Probe(str(tmp_path))
    assert probe.available and probe.total_source == "VDD_IN"
    s = probe.read()
    assert s["total_mw"] == 1383.0 and s["rails"]["VDD_SYS_DDR"] == 192.0 and len(s["rails"]) == 6


def test_ina3221_absent_or_unreadable(tmp_path):
    assert not Ina3221Probe(str(tmp_path)).available
    h = hwmon_chip(tmp_path, "1-0040", 1, ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"])
    (h / "curr2_input").unlink()
    (h / "curr2_input").mkdir()  # reading a directory fails even as root
    probe = Ina3221Probe(str(tmp_path))
    assert not probe.available and "unreadable" in probe.reason


def rapl_zone(root: Path, zone: str, name: str, energy: int, max_range: int = 262143328850):
    parent = root / "class" / "powercap"
    z = parent / zone if zone.count(":") == 1 else parent / zone.rsplit(":", 1)[0] / zone
    put(z / "name", name)
    put(z / "energy_uj", energy)
    put(z / "max_energy_range_uj", max_range)
    return z


def test_rapl_wraparound_and_total(tmp_path):
    pkg = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 999_000, max_range=1_000_000)
    dram = rapl_zone(tmp_path, "intel-rapl:0:1", "dram", 10_000)
    rapl_zone(tmp_path, "intel-rapl:0:0", "core", 5_000)
    probe = RaplProbe(str(tmp_path))
    assert probe.available, probe.reason
    assert probe.total_source == "package-0+intel-rapl:0/dram"
    assert probe.read()["energy_mj"] == 0.0
    put(pkg / "energy_uj", 4_000)  # wrapped: 999000 -> 1000000 -> 4000 = 5000 uJ
    put(dram / "energy_uj", 12_000)  # +2000 uJ
    s = probe.read()
    assert s["rails_energy_mj"]["package-0"] == pytest.approx(5.0)
    assert s["energy_mj"] == pytest.approx(7.0)
    assert unwrap(10, 30, 100) == 20 and unwrap(90, 5, 100) == 15


def test_rapl_absent_and_unreadable(tmp_path):
    assert "no RAPL domains" in RaplProbe(str(tmp_path)).reason
    z = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (z / "energy_uj").unlink()
    (z / "energy_uj").mkdir()
    probe = RaplProbe(str(tmp_path))
    assert not probe.available and "unreadable" in probe.reason


def test_select_probe_auto_reports_every_reason(tmp_path):
    probe = select_probe("auto", sysfs_root=str(tmp_path))
    if probe.available:  # a Jetson or a GPU host
        pytest.skip(f"this host has a power probe: {probe.name}")
    assert isinstance(probe, NullProbe)
    for name in ("tegrastats", "ina3221", "nvml", "rapl"):
        assert f"{name}:" in probe.reason
    assert select_probe("none").reason.startswith("power measurement was not requested")
    with pytest.raises(InputError, match="unknown power probe"):
        select_probe("joulemeter")
    hwmon_chip(tmp_path, "1-0040", 1, ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"])
    assert select_probe("ina3221", sysfs_root=str(tmp_path)).available


def test_sampler_polls_in_background(tmp_path):
    h = hwmon_chip(tmp_path, "1-0040", 1, ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"])
    sampler = PowerSampler(Ina3221Probe(str(tmp_path)), interval_ms=10).start()
    time.sleep(0.15)
    put(h / "curr1_input", 800)
    time.sleep(0.15)
    samples = sampler.stop()
    assert len(samples) >= 10
    assert all(a["t"] <= b["t"] for a, b in zip(samples, samples[1:]))
    assert samples[0]["total_mw"] == pytest.approx(2000.0) and samples[-1]["total_mw"] == pytest.approx(4000.0)
    with pytest.raises(InputError):
        PowerSampler(NullProbe(), interval_ms=0)


def test_tegrastats_probe_streams_a_real_process():
    lines = [(DATA / "tx2_jp4.log").read_text().strip(), "not a tegrastats line",
             (DATA / "nano_jp4.log").read_text().strip()]
    script = "import sys, time\nfor l in %r:\n    print(l, flush=True)\n    time.sleep(0.02)\ntime.sleep(5)\n" % lines
    probe = TegrastatsProbe(interval_ms=20, command=[sys.executable, "-c", script])
    assert probe.available
    sampler = PowerSampler(probe).start()
    deadline = time.time() + 10
    while len(sampler.snapshot()) < 2 and time.time() < deadline:
        time.sleep(0.02)
    samples = sampler.stop()
    assert [s["total_mw"] for s in samples] == [1383.0, 3129.0]
    d = probe.describe()
    assert d["skipped_lines"] == 1 and len(d["raw"]) == 3 and d["rails"][0] == "VDD_CPU"


def test_tegrastats_absent_here():
    import shutil

    if shutil.which("tegrastats"):
        pytest.skip("tegrastats exists here")
    probe = TegrastatsProbe()
    assert not probe.available and "not found" in probe.reason


def test_nvml_probe_says_why_not_here():
    from edgesqueeze.bench.nvml import NvmlProbe

    probe = NvmlProbe()
    if probe.available:
        pytest.skip(f"NVML works here: {probe.reason}")
    assert "pynvml" in probe.reason or "NVML" in probe.reason
    assert probe.gpm_start() is None and probe.gpm_dram_bw_util(None) is None
