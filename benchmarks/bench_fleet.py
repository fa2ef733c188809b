"""Fleet scale on loopback: wall time and controller memory for N sshd "boards", built-in path vs ansible-playbook.

    PYTHONPATH=. python benchmarks/bench_fleet.py 1 8 32

Per size, one fresh process starts N sshd on 127.0.0.1 (own ports and keys), writes an INI inventory and the
generated playbook, then runs each path in its own child process, one after the other:

- built-in: ``edgesqueeze deploy bundle/ --devices inventory.ini`` (a thread pool, one multiplexed ssh per board);
- ansible: ``ansible-playbook playbook.yml`` (forks = 50, pipelining, ControlPersist, as ``fleet playbook`` writes).

Controller memory is sampled from /proc every 100 ms over the whole controller process tree: every descendant
of this process except the sshd servers and their sessions (the "boards"). This process is made a child
subreaper, so the ssh ControlPersist masters that daemonise stay in the tree. Two figures per path: the peak of
the tree's summed PSS (proportional set size: pages shared between Ansible's forked workers counted once in
total, the honest "how much RAM does the controller need") and the peak of the summed RSS (shared pages counted
in every process: what ``ps`` would add up). CPU is the user+sys seconds of the reaped controller processes
(RUSAGE_CHILDREN before/after). Masters left behind by a path are stopped before the next path starts.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sshd import SshServer, make_bundle  # noqa: E402

PY = sys.executable
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _children() -> dict:
    """{pid: ppid} of every process on the machine (from /proc/*/stat)."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    out[int(name)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _tree(root: int, exclude: set) -> list:
    """Descendants of ``root`` (not ``root`` itself), skipping the subtrees rooted at ``exclude``."""
    parents = _children()
    kids: dict = {}
    for pid, ppid in parents.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [p for p in kids.get(root, []) if p not in exclude]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [p for p in kids.get(pid, []) if p not in exclude]
    return out


def _mem_kb(pid: int) -> tuple:
    """(PSS, RSS) of one process in KiB, from smaps_rollup; (0, 0) when it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def _fds(pid: int) -> int:
    """Open file descriptors of one process (0 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class TreeSampler(threading.Thread):
    """Samples the controller tree's summed PSS and RSS every ``interval`` s; keeps the peaks (and the most
    processes, and the most open fds of any one of them: the controller's Python for the built-in path)."""

    def __init__(self, exclude: set, interval: float = 0.1):
        super().__init__(daemon=True)
        self.exclude, self.interval = exclude, interval
        self.stop_event = threading.Event()
        self.peak_pss = self.peak_rss = self.peak_procs = self.peak_fds = 0

    def run(self):
        me = os.getpid()
        while not self.stop_event.is_set():
            pids = _tree(me, self.exclude)
            mem = [_mem_kb(p) for p in pids]
            self.peak_pss = max(self.peak_pss, sum(m[0] for m in mem))
            self.peak_rss = max(self.peak_rss, sum(m[1] for m in mem))
            self.peak_procs = max(self.peak_procs, len(pids))
            self.peak_fds = max([self.peak_fds] + [_fds(p) for p in pids])
            self.stop_event.wait(self.interval)


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _stop_leftovers(exclude: set) -> None:
    """SIGTERM and reap the controller processes a path left behind (ssh ControlPersist masters)."""
    for pid in _tree(os.getpid(), exclude):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _tree(os.getpid(), exclude):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _measured(cmd, exclude: set, cwd=None, env=None) -> dict:
    sampler = TreeSampler(exclude)
    cpu0, t0 = _cpu_children(), time.monotonic()
    sampler.start()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    _stop_leftovers(exclude)
    sampler.stop_event.set()
    sampler.join()
    return {"wall_s": round(wall, 1), "pss_mib": round(sampler.peak_pss / 1024),
            "rss_mib": round(sampler.peak_rss / 1024), "procs": sampler.peak_procs, "fds": sampler.peak_fds,
            "cpu_s": round(_cpu_children() - cpu0, 1), "rc": res.returncode,
            "tail": (res.stdout + res.stderr)[-1500:] if res.returncode else ""}


def _handshake(server: SshServer, known: Path, n: int = 10) -> dict:
    """One full ssh connection (TCP + key exchange + auth + `true`, no multiplexing) on loopback: its wall ms
    and the ssh client's CPU ms (the controller's share of a handshake)."""
    cmd = ["ssh", "-p", str(server.port), "-i", str(server.identity), "-o", f"UserKnownHostsFile={known}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ControlMaster=no",
           f"{server.user}@127.0.0.1", "true"]
    cpu0, t0 = _cpu_children(), time.monotonic()
    for _ in range(n):
        subprocess.run(cmd, check=True, capture_output=True)
    return {"handshake_ms": round((time.monotonic() - t0) / n * 1000, 1),
            "handshake_cpu_ms": round((_cpu_children() - cpu0) / n * 1000, 1)}


def run(n: int, root: Path) -> dict:
    """Both paths against ``n`` fresh loopback sshd; see the module docstring."""
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(SshServer(root / f"s{i}")) for i in range(n)]
        exclude = {s.proc.pid for s in servers}
        known = root / "known_hosts"
        known.write_text("".join(s.known_hosts.read_text() for s in servers))
        inv = root / "inventory.ini"
        inv.write_text("[lab]\n" + "".join(
            f"b{i} ansible_host=127.0.0.1 ansible_port={s.port} ansible_ssh_private_key_file={s.identity} "
            f"edgesqueeze_remote_dir={root / 'dev' / str(i)}\n" for i, s in enumerate(servers)) +
            f"[all:vars]\nansible_user={servers[0].user}\nansible_python_interpreter={PY}\n"
            f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'\n")
        bundle = make_bundle(root / "dense")
        out = root / "out"
        builtin = _measured([PY, "-m", "edgesqueeze", "deploy", str(bundle), "--devices", str(inv), "-o", str(out),
                             "-n", "20", "--no-plots", "--no-engine", "--power", "none"], exclude)
        play = root / "play"
        subprocess.run([PY, "-m", "edgesqueeze", "fleet", "playbook", str(bundle), "-i", str(inv), "-o", str(play),
                        "-n", "20", "--power", "none", "--remote-dir", str(root / "pb")], check=True,
                       capture_output=True)
        env = dict(os.environ, ANSIBLE_CONFIG=str(play / "ansible.cfg"))
        ansible = _measured(["ansible-playbook", "playbook.yml"], exclude, cwd=play, env=env)
        sizes = {"bundle_bytes": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
                 "results_bytes": max((p.stat().st_size for p in out.glob("*/results.json")), default=0),
                 **_handshake(servers[0], known)}
    return {"n": n, "builtin": builtin, "ansible": ansible, **sizes}


def main(argv):
    """One fresh process per size; prints a Markdown row and a JSON line per size."""
    for n in [int(a) for a in argv] or [1, 8]:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([PY, __file__, "--one", str(n), tmp], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:], flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            cells = [f"{n}"]
            for path in (r["builtin"], r["ansible"]):
                cells += [f"{path['wall_s']:.1f} s", f"{path['pss_mib']} MiB", f"{path['rss_mib']} MiB",
                          f"{path['cpu_s']:.1f} s", f"{path['procs']} / {path['fds']}", str(path["rc"])]
            print("| " + " | ".join(cells) + " |", flush=True)
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: daemonised masters stay ours
        print(json.dumps(run(int(sys.argv[2]), Path(sys.argv[3]))))
    else:
        main(sys.argv[1:])
