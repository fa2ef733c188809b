"""Examples are tests: the README's Quickstart main job and its console examples run as written."""
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _quickstart_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert len(blocks) == 2, "the Quickstart has exactly two commands"
    return [b.strip() for b in blocks]


def _edgesqueeze(args, cwd):
    return subprocess.run([sys.executable, "-m", "edgesqueeze", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_quickstart_has_install_and_test_commands():
    main, tests = _quickstart_commands()
    assert main.startswith("pip install . && edgesqueeze build")
    assert "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install" in ci and "-e '.[test,torch]'" in ci and "pytest -q" in ci


def test_quickstart_main_job_runs(tmp_path):
    main, _ = _quickstart_commands()
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    steps = [shlex.split(part.strip()) for part in main.split("&&")][1:]  # skip the pip install
    for argv in steps:
        assert argv[0] == "edgesqueeze"
        r = _edgesqueeze(argv[1:], tmp_path)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "bundle" / "manifest.json").exists()


def test_readme_error_examples_match(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 13)])
    (tmp_path / "dynamic.onnx").write_bytes(m.SerializeToString())
    src = (REPO / "examples" / "digits" / "digits_cnn.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(src[:100000])
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    examples = re.findall(r"\$ (edgesqueeze [^\n;]*); echo \"exit \$\?\"\n(.*?)\nexit (\d+)", README, re.S)
    assert len(examples) == 3
    for cmd, message, code in examples:
        r = _edgesqueeze(shlex.split(cmd)[1:], tmp_path)
        assert r.returncode == int(code), (cmd, r.stderr)
        assert r.stderr.strip() == message.strip(), cmd
