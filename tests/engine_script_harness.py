"""A bundle folder with build_engine.sh for a ScriptSpec, and a fake trtexec on disk to run it against.

The three build_engine.sh test files (script flags, board bugs, plugin-vs-native choice) share this; each passes
the fake trtexec it needs (what it records, what it prints).
"""
from __future__ import annotations

import os
import shutil
import subprocess

from edgesqueeze.bundle.engine_script import render_build_engine_sh

BASH = shutil.which("bash")


def script_bundle(tmp_path, spec, fake_trtexec: str):
    """``(bundle folder, fake trtexec path)``: the spec's models as placeholders and its build_engine.sh."""
    b = tmp_path / "bundle"
    (b / "models").mkdir(parents=True)
    for rel, _ in spec.sources.values():
        (b / rel).write_bytes(b"onnx")
    (b / "build_engine.sh").write_text(render_build_engine_sh(spec))
    os.chmod(b / "build_engine.sh", 0o755)
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir()
    fake.write_text(fake_trtexec)
    os.chmod(fake, 0o755)
    return b, fake


def run_script(b, fake, tag, *args, record="args.txt", **env):
    """Run the bundle's build_engine.sh with the fake trtexec reporting TensorRT ``tag``."""
    e = dict(os.environ, TRTEXEC=str(fake), FAKE_TAG=str(tag), FAKE_ARGS=str(b / record), **env)
    return subprocess.run([BASH, str(b / "build_engine.sh"), *args], capture_output=True, text=True, env=e, cwd="/")
