"""Results schema, trtexec import, Markdown + PNG report, and the bench / report verbs on the example model."""
import json
from pathlib import Path

import numpy as np
import pytest

from edgesqueeze.backends import NoopRunner
from edgesqueeze.bench import load_result, run_benchmark, validate_result
from edgesqueeze.bench.report import write_report
from edgesqueeze.bench.trtexec import import_trtexec, read_export_profile, read_export_times
from edgesqueeze.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits" / "digits_cnn.onnx"
TRTEXEC = Path(__file__).parent / "data" / "trtexec"
TEGRA = Path(__file__).parent / "data" / "tegrastats"
PNG = b"\x89PNG\r\n\x1a\n"


def minimal(samples=(1.0, 2.0, 3.0)):
    """The smallest valid result, as the Python 3.6 on-device runner may write it."""
    return {"schema": "edgesqueeze.bench/1", "model": {"name": "m", "path": "m.onnx", "sha256": "ab" * 32},
            "device": {"profile": "tx2", "hostname": "jetson"},
            "backend": {"name": "trtexec", "version": "8.2.1", "precision": "fp16"},
            "runs": [{"batch": 2, "latency_ms": {"samples": list(samples)}}]}


def test_validate_fills_stats_and_throughput():
    r = validate_result(minimal())
    st = r["runs"][0]["latency_ms"]["stats"]
    assert st["median"] == 2.0 and st["p99"] == pytest.approx(np.percentile([1, 2, 3], 99))
    assert r["runs"][0]["throughput_ips"] == pytest.approx(1000.0)  # 2 per 2 ms
    assert r["runs"][0]["compute_ms"] is None and r["warnings"] == [] and r["partial"] is False


@pytest.mark.parametrize("mutate, where", [
    (lambda r: r.update(schema="edgesqueeze.bench/9"), "schema"),
    (lambda r: r.pop("model"), "model"),
    (lambda r: r["device"].pop("profile"), "device.profile"),
    (lambda r: r.update(runs=[]), "runs"),
    (lambda r: r["runs"][0].update(batch=0), r"runs\[0\].batch"),
    (lambda r: r["runs"][0]["latency_ms"].update(samples=[1.0, "x"]), r"runs\[0\].latency_ms.samples\[1\]"),
    (lambda r: r["runs"][0]["latency_ms"].update(samples=[1.0, -2.0]), r"samples\[1\]"),
    (lambda r: r["runs"][0].update(compute_ms={"samples": []}), "compute_ms.samples"),
    (lambda r: r.update(warnings="oops"), "warnings"),
])
def test_validate_names_the_field_at_fault(mutate, where):
    r = minimal()
    mutate(r)
    with pytest.raises(InputError, match=where):
        validate_result(r)


def test_raw_tegrastats_lines_are_parsed_on_the_host():
    r = minimal()
    r["power"] = {"probe": "tegrastats", "available": True, "reason": "",
                  "raw": [(TEGRA / "tx2_jp4.log").read_text().strip(), "junk"]}
    out = validate_result(r)
    assert out["power"]["summary"]["total_mw"]["mean"] == 1383.0 and out["power"]["skipped_lines"] == 1


def test_trtexec_exports_import():
    t = read_export_times(TRTEXEC / "times.json")
    assert len(t["latency_ms"]) == 8 and t["h2d_ms"][0] == 0.02
    p = read_export_profile(TRTEXEC / "profile.json")
    assert p["count"] == 8 and p["layers"][0]["name"] == "conv1 + relu1"
    r = validate_result(import_trtexec(TRTEXEC / "times.json", TRTEXEC / "profile.json", device="orin-nano",
                                       precision="int8"))
    run = r["runs"][0]
    assert r["backend"]["name"] == "trtexec" and run["compute_ms"]["stats"]["n"] == 8
    assert run["latency_ms"]["stats"]["max"] == 0.95 and r["layers"][1]["percent"] == 40.0
    assert load_result(TRTEXEC / "times.json")["backend"]["name"] == "trtexec"
    with pytest.raises(InputError, match="not a trtexec --exportTimes"):
        read_export_times(TRTEXEC / "profile.json")
    with pytest.raises(InputError, match="not a trtexec layer record"):
        read_export_profile(TRTEXEC / "times.json")


def test_report_writes_markdown_and_real_pngs(tmp_path):
    from test_bench_probes import hwmon_chip
    from edgesqueeze.bench.ina3221 import Ina3221Probe

    hwmon_chip(tmp_path / "sys", "1-0040", 1, ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"])
    a = run_benchmark(NoopRunner(delay_ms=0.2), {"x": np.zeros(1, np.float32)}, iterations=50, warmup=0,
                      power=Ina3221Probe(str(tmp_path / "sys")), power_interval_ms=10, idle_s=0.1,
                      batch_sizes=(1, 2))
    b = validate_result(import_trtexec(TRTEXEC / "times.json", device="orin-nano", precision="int8"))
    written = write_report([a, b], tmp_path / "rep")
    md = Path(written["report"]).read_text()
    assert "| noop | noop |" in md and "## Comparison" in md and "VDD_IN" in md
    assert "![latency histogram and CDF](latency.png)" in md and "power_1.png" in md
    for key in ("latency", "power_1"):
        data = Path(written[key]).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    assert "power_2" not in written  # trtexec import has no power trace
    with pytest.raises(InputError):
        write_report([], tmp_path / "none")


@pytest.mark.skipif(not DIGITS.exists(), reason="examples/digits/digits_cnn.onnx not built yet")
def test_bench_and_report_verbs_on_the_example_model(cli, tmp_path):
    out = tmp_path / "r.json"
    code, stdout, err = cli("-q", "bench", DIGITS, "-n", "30", "--warmup", "2", "--batch", "1,2", "--threads", "1",
                            "-o", out, "--report", tmp_path / "rep")
    assert code == 0, err
    assert "digits_cnn on cpu" in stdout and "roofline" in stdout
    r = load_result(out)
    assert [run["batch"] for run in r["runs"]] == [1, 2] and r["model"]["sha256"]
    assert r["runs"][0]["bandwidth"]["analytic"]["flops_per_inference"] > 0
    png = (tmp_path / "rep" / "roofline.png").read_bytes()
    assert png.startswith(PNG)
    code, _, err = cli("-q", "report", TRTEXEC / "times.json", "--trtexec-profile", TRTEXEC / "profile.json",
                       "-o", tmp_path / "trt", "--no-plots")
    assert code == 0, err
    md = (tmp_path / "trt" / "report.md").read_text()
    assert "| conv1 + relu1 |  | 0.3000 | 0.3000 | 60.0% |" in md and not (tmp_path / "trt" / "latency.png").exists()
    code, stdout, err = cli("report", out, TRTEXEC / "times.json", "-o", tmp_path / "cmp", "--json")
    assert code == 0, err
    rows = json.loads(stdout)["rows"]
    assert [x["backend"] for x in rows] == ["ort", "ort", "trtexec"]
    code, _, err = cli("bench", tmp_path / "nope.onnx")
    assert code == 3 and "no such file" in err
    code, _, err = cli("bench", DIGITS, "--batch", "0")
    assert code == 2
    code, stdout, err = cli("-q", "bench", DIGITS, "--warmup", "0.05s", "-n", "3", "--json")
    assert code == 0, err
    assert json.loads(stdout)["runs"][0]["warmup_iterations"] > 0
    code, _, err = cli("bench", DIGITS, "--backend", "trtexec")
    assert code == 3 and "runs on a device only" in err
    code, _, err = cli("bench", DIGITS, "--device", "u@h", "--devices", tmp_path / "fleet.toml")
    assert code == 3 and "not both" in err
    code, _, err = cli("report", tmp_path / "rep" / "report.md", "-o", tmp_path / "x")
    assert code == 3 and "not JSON" in err


def test_bench_bundle_folder_reads_the_manifest(cli, tmp_path):
    if not DIGITS.exists():
        pytest.skip("examples/digits/digits_cnn.onnx not built yet")
    from edgesqueeze.bundle import BundleWriter

    bundle = tmp_path / "bundle"
    with BundleWriter(bundle) as w:  # bench checks a bundle like verify does: it needs a real manifest
        w.add_bytes("models/model.fp32.onnx", DIGITS.read_bytes())
        w.commit({"target": {"name": "tx2"}, "precision": "fp32", "options": {}, "versions": {}, "inputs": {},
                  "models": {"fp32": "models/model.fp32.onnx"}})
    code, stdout, err = cli("-q", "bench", bundle, "-n", "10", "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["options"]["bundle_target"] == "tx2" and r["device"]["profile"] == "cpu"
    (bundle / "manifest.json").write_text("{}")
    code, _, err = cli("bench", bundle)
    assert code == 7 and "schema" in err  # checked like verify does before anything runs


def test_results_leave_out_host_user_and_paths_unless_asked(tmp_path):
    """#15: results identify the device by its board and release, not by host, user or absolute path."""
    import json
    import socket

    from edgesqueeze.cli import main

    model = Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits_cnn.onnx"
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "-n", "5", "--warmup", "1", "-o", str(out)]) == 0
    text = out.read_text()
    r = json.loads(text)
    assert "hostname" not in r["device"] and str(Path.home()) not in text and str(model.parent) not in text
    if len(socket.gethostname()) > 2:
        assert socket.gethostname() not in text
    out2 = tmp_path / "r2.json"
    assert main(["bench", str(model), "-n", "5", "--warmup", "1", "-o", str(out2), "--record-host"]) == 0
    assert json.loads(out2.read_text())["device"]["hostname"] == socket.gethostname()
