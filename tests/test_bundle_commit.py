"""Bundle commits are exclusive and gap-free: a lock per output folder, an atomic swap, recovery after a kill."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesqueeze.bundle.manifest import MANIFEST
from edgesqueeze.bundle import writer as writer_mod
from edgesqueeze.bundle.writer import BundleWriter
from edgesqueeze.errors import InputError
from edgesqueeze.fileio import OutputLock, clean_stale, exchange_paths, pid_alive

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
DEAD_PID = 4194304 + 4321  # above Linux's largest pid_max: no such process


def _bundle(out: Path, text: str, force: bool = False) -> None:
    with BundleWriter(out, force=force) as w:
        w.add_text("note.txt", text)
        w.commit({"target": {"name": "cpu"}})


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "b"
    first = BundleWriter(out)
    with pytest.raises(InputError, match="another edgesqueeze run is writing this output"):
        BundleWriter(out)
    first.abort()
    _bundle(out, "after")  # the lock was released
    assert (out / "note.txt").read_text() == "after"
    assert not (tmp_path / ".b.lock").exists()  # no lock file left behind


def test_commit_repeats_the_bundle_check(tmp_path):
    out = tmp_path / "b"
    w = BundleWriter(out)
    out.mkdir()
    (out / MANIFEST).write_text("{}")  # appeared while the first run was working (not through a writer)
    w.add_text("note.txt", "x")
    with pytest.raises(InputError, match="already holds a bundle"):
        w.commit({})
    w.abort()
    assert (out / MANIFEST).read_text() == "{}"


@pytest.mark.parametrize("swap", [True, False], ids=["exchange", "two-step"])
def test_force_replaces_the_old_bundle(tmp_path, monkeypatch, swap):
    if not swap:
        monkeypatch.setattr(writer_mod, "exchange_paths", lambda a, b: False)
    out = tmp_path / "b"
    _bundle(out, "old")
    _bundle(out, "new", force=True)
    assert (out / "note.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # nothing hidden left over


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    if not exchange_paths(a, b):
        pytest.skip("this file system cannot exchange paths (renameat2)")
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"


def test_a_run_killed_between_the_two_renames_is_recovered(tmp_path):
    out = tmp_path / "b"
    old = tmp_path / f".b.{DEAD_PID}.old"  # what a kill after `out -> old` and before `staging -> out` leaves
    _bundle(old, "old")
    with pytest.warns(UserWarning, match="put back the bundle"):
        with pytest.raises(InputError, match="already holds a bundle"):
            BundleWriter(out)  # the old bundle is back, so without --force this is refused as before
    assert (out / "note.txt").read_text() == "old"
    assert not old.exists()


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    dead_staging = tmp_path / f".b.{DEAD_PID}.abcd.staging"
    dead_tmp = tmp_path / f".b.{DEAD_PID}.efgh.tmp"
    live_tmp = tmp_path / f".b.{os.getpid()}.ijkl.tmp"
    dead_staging.mkdir()
    dead_tmp.write_text("x")
    live_tmp.write_text("y")
    assert not pid_alive(DEAD_PID) and pid_alive(os.getpid())
    with pytest.warns(UserWarning, match="removed 2 leftover"):
        _bundle(tmp_path / "b", "new")
    assert not dead_staging.exists() and not dead_tmp.exists() and live_tmp.exists()
    assert clean_stale(tmp_path, "b", ".tmp") == []


def test_output_lock_is_exclusive_across_processes(tmp_path):
    target = tmp_path / "out.onnx"
    with OutputLock(target):
        code = ("import sys; from edgesqueeze.fileio import OutputLock; from edgesqueeze.errors import InputError\n"
                f"try:\n OutputLock({str(target)!r}).acquire()\nexcept InputError:\n sys.exit(9)\n")
        assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 9
    code_ok = f"from edgesqueeze.fileio import OutputLock; OutputLock({str(target)!r}).acquire().release()"
    assert subprocess.run([sys.executable, "-c", code_ok], cwd=REPO).returncode == 0


def test_concurrent_builds_into_one_folder_one_wins(tmp_path):
    """Three builds into one folder without --force: exactly one succeeds, the others fail as bad input (3)."""
    out = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "edgesqueeze", "-q", "build", str(DIGITS / "digits_cnn.onnx"), "--target",
           "orin-nano", "--precision", "fp16", "-o", str(out)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3, 3], results
    for code, err in results:
        if code == 3:
            assert "already holds a bundle" in err or "another edgesqueeze run is writing" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
