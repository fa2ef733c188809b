"""tegrastats parsing: every format of JETSON.md (recorded lines as data), grammar variants, malformed lines."""
from pathlib import Path

import pytest

from edgesqueeze.bench.tegrastats import TegrastatsParseError, parse_line, parse_log, summarize_samples
from edgesqueeze.devices import get_profile

DATA = Path(__file__).parent / "data" / "tegrastats"


def line(name):
    return (DATA / name).read_text().strip()


def test_tx2_jetpack4_cur_avg_rails_and_everything_else():
    s = parse_line(line("tx2_jp4.log"))
    assert s["timestamp"] is None
    assert s["ram"] == {"used_mb": 696, "total_mb": 7854, "lfb_blocks": 1675, "lfb_block_mb": 4}
    assert [c["online"] for c in s["cpu"]] == [True, False, False, True, True, True]
    assert s["cpu"][0] == {"core": 0, "online": True, "load_pct": 2.0, "mhz": 345.0}
    assert s["emc"] == {"load_pct": 1.0, "mhz": 665.0}
    assert s["gpu"] == {"load_pct": 0.0, "mhz": 140.0, "gpc_mhz": None}
    assert s["engines"]["APE"] == {"on": True, "mhz": 150.0}
    assert s["mts"] == {"fg_pct": 0.0, "bg_pct": 0.0}
    assert s["temps"]["BCPU"] == 30.0 and s["temps"]["thermal"] == 29.0 and len(s["temps"]) == 7
    assert s["temps_disabled"] == ["PMIC"]  # PMIC@100C is a fixed placeholder on these boards
    assert s["rails"]["VDD_IN"] == {"cur_mw": 1383.0, "avg_mw": 1383.0, "values": [1383.0, 1383.0]}
    assert s["rails"]["VDD_WIFI"]["avg_mw"] == 335.0
    assert s["total_mw"] == 1383.0 and s["total_source"] == "VDD_IN"
    assert s["unknown"] == []


def test_nano_jetpack4_no_clocks_without_root():
    s = parse_line(line("nano_jp4.log"))
    assert s["swap"] == {"used_mb": 0, "total_mb": 1978, "cached_mb": 0}
    assert s["emc"] == {"load_pct": 0.0, "mhz": None}
    assert s["gpu"]["load_pct"] == 34.0 and s["gpu"]["mhz"] is None
    assert s["temps"]["CPU"] == 39.5 and s["temps"]["thermal"] == 38.75
    assert s["total_source"] == "POM_5V_IN" and s["total_mw"] == 3129.0
    assert set(s["rails"]) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}
    assert s["unknown"] == []


def test_agx_orin_jetpack5_mw_units_nc_rails_disabled_sensor():
    s = parse_line(line("agx_orin_jp5.log"))
    assert s["timestamp"] == "01-03-2023 16:07:54"
    assert s["gpu2"] == {"load_pct": 0.0, "mhz": 0.0, "gpc_mhz": None}
    assert s["engines"]["NVJPG1"] == {"on": True, "mhz": 729.0}
    assert s["engines"]["VIC_FREQ"]["mhz"] == 115.0
    assert s["temps_disabled"] == ["CV0"] and "CV0" not in s["temps"]
    assert s["temps"]["CPU"] == pytest.approx(41.437)
    assert s["nc_rails"] == 2 and "NC" not in s["rails"]
    assert s["rails"]["VDD_GPU_SOC"]["cur_mw"] == 2390.0
    # AGX Orin has no VDD_IN: module rails summed, and the carrier board is said not to be counted
    assert s["total_mw"] == 2390.0 + 796.0 + 3522.0 + 301.0
    assert "carrier board not counted" in s["total_source"]
    assert s["unknown"] == []


def test_agx_orin_jetpack6_gpc_clocks_and_dla():
    s = parse_line(line("agx_orin_jp6.log"))
    assert s["timestamp"] == "11-21-2025 08:49:48"
    assert s["gpu"] == {"load_pct": 14.0, "mhz": 407.0, "gpc_mhz": [407.0, 407.0]}
    assert s["engines"]["NVDLA0_FREQ"] == {"on": True, "mhz": 1600.0}
    assert s["emc"] == {"load_pct": 1.0, "mhz": 2133.0}
    assert s["rails"]["VDD_CPU_CV"] == {"cur_mw": 14312.0, "avg_mw": 12415.0, "values": [14312.0, 12415.0]}
    assert [c["load_pct"] for c in s["cpu"]] == [90.0, 85.0]
    assert s["unknown"] == []


def test_grammar_variants_tk1_three_values_negative_iram():
    samples = parse_log((DATA / "grammar_variants.log").read_text())
    assert samples["skipped"] == 0
    tk1, three, neg, iram = samples["samples"]
    assert [c["mhz"] for c in tk1["cpu"]] == [2218.0] * 4 and tk1["cpu"][1]["load_pct"] == 7.0
    assert tk1["emc"] == {"load_pct": 17.0, "mhz": 924.0}
    assert tk1["gpu"] == {"load_pct": 0.0, "mhz": 852.0, "gpc_mhz": None}
    assert tk1["engines"]["AVP"] == {"on": True, "load_pct": 1.0, "mhz": 204.0}
    assert tk1["total_mw"] is None and tk1["rails"] == {}
    assert three["rails"]["VDD_IN"]["values"] == [6120.0, 5980.0, 7020.0]
    assert three["rails"]["VDD_IN"]["cur_mw"] == 6120.0 and three["total_source"] == "VDD_IN"
    assert three["engines"]["NVENC"] == {"on": False}
    assert three["engines"]["NVDEC"] == {"on": True, "load_pct": 40.0, "mhz": 115.0}
    assert three["temps"]["cpu"] == 48.5 and three["temps_max"]["cpu"] == 95.0
    assert [c["online"] for c in three["cpu"]] == [True, True, False, False]
    assert neg["rails"]["VDD_CPU_CV"] == {"cur_mw": -40.0, "avg_mw": 12.0, "values": [-40.0, 12.0]}
    assert neg["nc_rails"] == 1 and neg["emc"]["mhz"] is None
    assert iram["iram"] == {"used_kb": 0, "total_kb": 252, "lfb_kb": 252}
    assert iram["total_mw"] == -12.0


def test_malformed_lines_are_skipped_and_counted_never_crash():
    r = parse_log((DATA / "malformed.log").read_text())
    assert r["lines"] == 5 and r["skipped"] == 3 and len(r["samples"]) == 2
    assert [e["line"] for e in r["errors"]] == [3, 4, 5]
    truncated = r["samples"][1]
    assert truncated["unknown"] == ["VDD_S"] and truncated["rails"]["VDD_GPU"]["cur_mw"] == 80.0
    with pytest.raises(TegrastatsParseError, match="line 3"):
        parse_log((DATA / "malformed.log").read_text(), strict=True)
    for bad in ["", "   ", "\x00\x01garbage", "RAM", "CPU [", "12345", "VDD_IN abc/def"]:
        with pytest.raises(TegrastatsParseError):
            parse_line(bad)


def test_summary_with_emc_bandwidth_from_profile():
    lines = [line("tx2_jp4.log")] * 3
    s = summarize_samples(parse_log("\n".join(lines))["samples"], get_profile("tx2"))
    assert s["samples"] == 3 and s["total_mw"]["mean"] == 1383.0
    assert s["rails_mw"]["VDD_CPU"] == {"mean": 153.0, "min": 153.0, "max": 153.0, "n": 3}
    # 1% x 665 MHz x 2 x 16 B = 0.2128 GB/s
    assert s["emc_bandwidth_gbs"]["mean"] == pytest.approx(0.01 * 665e6 * 2 * 16 / 1e9)
    hidden = summarize_samples(parse_log(line("nano_jp4.log"))["samples"], get_profile("nano"))
    assert hidden["emc_clock_hidden"] and "upper bound" in hidden["emc_bandwidth_note"]


def test_power_cli_from_log(cli, tmp_path):
    log = tmp_path / "run.log"
    log.write_text("\n".join([line("agx_orin_jp6.log"), "garbage line", line("agx_orin_jp6.log")]) + "\n")
    code, out, err = cli("power", "--from-log", log, "--target", "agx-orin")
    assert code == 0, err
    assert "VDD_CPU_CV" in out and "EMC bandwidth GB/s" in out and "1 malformed line(s) skipped" in err
    code, out, _ = cli("power", "--from-log", log, "--json")
    import json

    data = json.loads(out)
    assert data["lines"] == 3 and data["skipped"] == 1 and data["summary"]["samples"] == 2
    code, _, err = cli("-q", "power", "--from-log", DATA / "orin_nano_run.log", "--plot", tmp_path / "log.png",
                       "--interval", "100")
    assert code == 0, err
    assert (tmp_path / "log.png").read_bytes().startswith(b"\x89PNG")
    code, _, err = cli("power", "--from-log", tmp_path / "missing.log")
    assert code == 3 and "cannot read" in err
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    code, _, err = cli("power", "--from-log", empty)
    assert code == 3 and "no tegrastats line" in err


def test_agx_xavier_jetpack4_and_5_cpu_rail_is_counted():
    """AGX Xavier names its CPU rail `CPU`: `CPU 311/311` (JetPack 4) and `CPU 468mW/450mW` (JetPack 5)."""
    idle, loaded = (parse_line(x) for x in line("agx_xavier_jp4.log").splitlines())
    assert set(idle["rails"]) == {"GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"}
    assert idle["rails"]["CPU"]["cur_mw"] == 311.0 and len(idle["cpu"]) == 8
    assert idle["total_mw"] == 0 + 311 + 932 + 0 + 621 + 1482
    assert loaded["total_mw"] == 18401 + 2301 + 4602 + 0 + 2914 + 4632
    jp5 = parse_line(line("agx_xavier_jp5.log"))
    assert jp5["rails"]["CPU"] == {"cur_mw": 468.0, "avg_mw": 450.0, "values": [468.0, 450.0]}
    assert jp5["total_mw"] == 120 + 468 + 937 + 0 + 312 + 1458 and jp5["unknown"] == []


def test_pmic_placeholder_is_not_a_temperature():
    s = parse_line(line("agx_xavier_jp4.log").splitlines()[0])
    assert "PMIC" not in s["temps"] and "PMIC" in s["temps_disabled"]
    summary = summarize_samples([s])
    assert "PMIC" not in summary["temps_c"]


def test_orin_jetpack7_cur_and_max_temperatures_with_units():
    s = parse_line(line("agx_orin_jp7.log"))
    assert s["temps"] == {"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625}
    assert s["temps_max"]["cpu"] == 52.968
    assert s["gpu"] == {"load_pct": 12.0, "mhz": 1300.0, "gpc_mhz": [1300.0, 1300.0]}
    assert s["ram"]["lfb_block_mb"] == 2 and s["unknown"] == []
    assert s["total_mw"] == 5139 + 3268 + 5500 and s["total_source"].startswith("sum of module rails")


def test_thor_gpc_clocks_without_load_and_lfb_in_kb():
    s = parse_line(line("thor_jp7.log"))
    assert s["ram"] == {"used_mb": 4722, "total_mb": 7844, "lfb_blocks": 1, "lfb_block_mb": 0.5}
    assert s["gpu"] == {"load_pct": None, "mhz": 1000.0, "gpc_mhz": [1000.0, 1000.0, 1000.0]}
    assert s["unknown"] == []
    assert summarize_samples([s])["gpu_pct"] is None


def test_tx2_loaded_line_with_lfb_in_kb():
    s = parse_line(line("tx2_jp4_lfb_kb.log"))
    assert s["ram"]["lfb_block_mb"] == 0.5 and s["total_mw"] == 14025.0
    assert s["temps"]["BCPU"] == -45.0 and s["unknown"] == []
