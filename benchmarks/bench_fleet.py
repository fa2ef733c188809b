"""Fleet scale on loopback: wall time and controller memory for N sshd "boards", built-in path vs ansible-playbook.

    PYTHONPATH=. python benchmarks/bench_fleet.py 1 8 [32]

Each path runs in a fresh subprocess; memory is the peak RSS of the controller process tree (the Python process
and, for ssh/ansible, its largest child), from getrusage.
"""
from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sshd import SshServer, make_bundle  # noqa: E402

PY = sys.executable


def _timed(cmd, cwd=None, env=None):
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, rss, res.returncode


def run(n: int, root: Path) -> dict:
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(SshServer(root / f"s{i}")) for i in range(n)]
        known = root / "known_hosts"
        known.write_text("".join(s.known_hosts.read_text() for s in servers))
        inv = root / "inventory.ini"
        inv.write_text("[lab]\n" + "".join(
            f"b{i} ansible_host=127.0.0.1 ansible_port={s.port} ansible_ssh_private_key_file={s.identity} "
            f"edgesqueeze_remote_dir={root / 'dev' / str(i)}\n" for i, s in enumerate(servers)) +
            f"[all:vars]\nansible_user={servers[0].user}\nansible_python_interpreter={PY}\n"
            f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'\n")
        bundle = make_bundle(root / "dense")
        builtin = _timed([PY, "-m", "edgesqueeze", "deploy", str(bundle), "--devices", str(inv), "-o",
                          str(root / "out"), "-n", "20", "--no-plots", "--no-engine", "--power", "none"])
        play = root / "play"
        subprocess.run([PY, "-m", "edgesqueeze", "fleet", "playbook", str(bundle), "-i", str(inv), "-o", str(play),
                        "-n", "20", "--power", "none", "--remote-dir", str(root / "pb")], check=True,
                       capture_output=True)
        env = dict(os.environ, ANSIBLE_CONFIG=str(play / "ansible.cfg"))
        ansible = _timed(["ansible-playbook", "playbook.yml"], cwd=play, env=env)
    return {"n": n, "builtin": builtin, "ansible": ansible}


def main(argv):
    for n in [int(a) for a in argv] or [1, 8]:
        with tempfile.TemporaryDirectory() as tmp:  # a fresh process per size keeps RUSAGE_CHILDREN honest
            out = subprocess.run([PY, __file__, "--one", str(n), tmp], capture_output=True, text=True)
            print(out.stdout.strip() or out.stderr[-2000:], flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        r = run(int(sys.argv[2]), Path(sys.argv[3]))
        b, a = r["builtin"], r["ansible"]
        print(f"| {r['n']} | {b[0]:.1f} s | {b[1]:.0f} MiB | rc {b[2]} | {a[0]:.1f} s | {a[1]:.0f} MiB | rc {a[2]} |")
    else:
        main(sys.argv[1:])
