"""Deploy over SSH, measured against a real OpenSSH server on 127.0.0.1 (tests/sshd.py).

    python benchmarks/bench_deploy.py [--repeats 3] [--big-mib 64] [--iterations 3000]

Measures: first deploy and no-op redeploy of the digits bundle; upload of a large bundle and the resume of
an upload interrupted half way; the on-device runner's latency over SSH vs the same runner run locally (the
SSH path must not change the numbers). Loopback has no network cost: on a real board the upload time is
bytes / link speed on top of these. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from sshd import SshServer, make_bundle  # noqa: E402

from edgesqueeze.deploy import deploy, remote_bench  # noqa: E402
from edgesqueeze.pipeline import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=3000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="esq-bench-deploy-"))
    py = sys.executable
    out = {"machine": "shared 2-core VM, other jobs running; sshd and device on 127.0.0.1"}
    try:
        digits = root / "digits-cpu"
        build(REPO / "examples" / "digits" / "digits_cnn.onnx", "cpu", digits, progress=False)
        with SshServer(root / "sshd") as srv:
            kw = dict(python=py, **srv.ssh_options())
            firsts, noops = [], []
            for i in range(args.repeats):
                rd = str(root / f"dev{i}")
                t = time.perf_counter()
                r = deploy(digits, srv.device, remote_dir=rd, **kw)
                firsts.append(time.perf_counter() - t)
                for _ in range(2):
                    t = time.perf_counter()
                    again = deploy(digits, srv.device, remote_dir=rd, **kw)
                    noops.append(time.perf_counter() - t)
                    assert again["files"]["bytes_sent"] == 0
            out["digits"] = {"bytes": r["files"]["bytes_total"], "files": len(r["files"]["uploaded"]),
                             "first_deploy_s": statistics.median(firsts), "noop_redeploy_s": statistics.median(noops)}

            side = int((args.big_mib * 2 ** 20 / 4) ** 0.5)
            big = make_bundle(root / "big", features=side, hidden=side)
            t = time.perf_counter()
            r = deploy(big, srv.device, remote_dir=str(root / "big-a"), **kw)
            first = time.perf_counter() - t
            total = r["files"]["bytes_total"]
            sent = [0]

            def stop_half(n):
                sent[0] += n
                if sent[0] >= total // 2:
                    raise KeyboardInterrupt

            try:
                deploy(big, srv.device, remote_dir=str(root / "big-b"), progress=stop_half, **kw)
            except KeyboardInterrupt:
                pass
            time.sleep(2)  # let the device-side receiver write what reached it
            t = time.perf_counter()
            r = deploy(big, srv.device, remote_dir=str(root / "big-b"), **kw)
            out["big"] = {"bytes": total, "first_deploy_s": first, "first_deploy_mb_s": total / first / 1e6,
                          "resume_s": time.perf_counter() - t, "resumed_from": sum(r["files"]["resumed"].values()),
                          "resume_sent": r["files"]["bytes_sent"]}

            n = str(args.iterations)
            res = remote_bench(digits, srv.device, remote_dir=str(root / "dev0"), iterations=args.iterations,
                               warmup=50, runner_args=["--threads", "1"], **kw)
            local = root / "local.json"
            subprocess.run([py, str(digits / "run_on_device.py"), "--bundle", str(digits), "--out", str(local),
                            "--iterations", n, "--warmup", "50", "--threads", "1"], check=True, capture_output=True)
            loc = json.loads(local.read_text())["runs"][0]["latency_ms"]["stats"]
            st = res["runs"][0]["latency_ms"]["stats"]
            out["runner"] = {"iterations": args.iterations, "ssh_median_ms": st["median"], "ssh_p99_ms": st["p99"],
                             "local_median_ms": loc["median"], "local_p99_ms": loc["p99"]}
            t = time.perf_counter()
            remote_bench(digits, srv.device, remote_dir=str(root / "dev0"), iterations=100, **kw)
            out["remote_bench_100_iterations_total_s"] = time.perf_counter() - t
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
