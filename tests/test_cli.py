"""The command line: every verb's --help, one-line errors with documented exit codes, inputs untouched."""
import hashlib
import os
import subprocess
import sys

import pytest

from edgesqueeze.cli import COMMANDS, cli as group


def _verbs():
    import click

    ctx = click.Context(group)
    return group.list_commands(ctx)


def test_main_help_lists_verbs_and_exit_codes(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for verb in ("inspect", "devices", "export"):
        assert verb in out
    assert "Exit codes" in out and "3" in out


@pytest.mark.parametrize("verb", _verbs())
def test_every_verb_has_help_with_example(cli, verb):
    code, out, err = cli(verb, "--help")
    assert code == 0, err
    assert "Usage:" in out
    assert "--json" in out or verb == "plugins", f"{verb} must accept --json"


def test_registry_points_at_modules():
    import importlib.util

    present = [v for v, m in COMMANDS.items() if importlib.util.find_spec(f"edgesqueeze.cli.{m}")]
    assert {"inspect", "devices", "export"} <= set(present)


def _run(*args):
    env = dict(os.environ)
    env.pop("EDGESQUEEZE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "edgesqueeze", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def _sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


@pytest.fixture
def bad_models(tmp_path):
    from onnx import TensorProto, helper

    good = tmp_path / "good.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"])  # h, w: nothing gives them
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 13)])
    good.write_bytes(m.SerializeToString())
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:-9])
    text = tmp_path / "readme.onnx"
    text.write_text("just some text\n")
    return {"dynamic": good, "truncated": truncated, "text": text}


@pytest.mark.parametrize("case,needle", [("truncated", "truncated or corrupt"), ("text", "not an ONNX model"),
                                         ("dynamic", "dynamic dimension 'h' (axis 2)")])
def test_bad_models_give_one_line_and_exit_3(bad_models, tmp_path, case, needle):
    path = bad_models[case]
    before = _sha(path)
    r = _run("inspect", path)
    assert r.returncode == 3, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0] and str(path) in lines[0]
    assert "Traceback" not in r.stderr
    assert _sha(path) == before


def test_debug_shows_traceback(bad_models):
    r = _run("--debug", "inspect", bad_models["text"])
    assert r.returncode == 3 and "Traceback" in r.stderr


def test_dynamic_model_works_with_input_shape(bad_models):
    r = _run("inspect", bad_models["dynamic"], "--input", "x:2x3x8x8", "--json")
    assert r.returncode == 0, r.stderr


def test_usage_error_exit_2():
    r = _run("inspect")
    assert r.returncode == 2


def test_unknown_target_exit_3(bad_models):
    r = _run("inspect", bad_models["dynamic"], "--input", "x:2x3x8x8", "--target", "tx9")
    assert r.returncode == 3 and "unknown target" in r.stderr


def test_import_is_light():
    code = ("import sys, edgesqueeze, edgesqueeze.cli, edgesqueeze.model, edgesqueeze.inspect; "
            "bad=[m for m in ('torch','tensorrt','pycuda','matplotlib') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_missing_torch_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['torch'] = None; from edgesqueeze.cli import main; "
            f"sys.exit(main(['export', 'examples/digits_model.py:make_model', '--input', '1x1x8x8', "
            f"'-o', r'{tmp_path}/x.onnx']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 5, r.stderr
    assert "pip install 'edgesqueeze[torch]'" in r.stderr and "Traceback" not in r.stderr


def test_quiet_works_after_the_verb_too(cli):
    model = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "digits",
                         "digits_cnn.onnx")
    code, _, err = cli("bench", model, "-n", "5", "--warmup", "1", "--power", "none", "--json")
    assert code == 0 and "benchmarking" in err
    code, _, err = cli("bench", model, "-n", "5", "--warmup", "1", "--power", "none", "--json", "-q")
    assert code == 0 and "benchmarking" not in err
