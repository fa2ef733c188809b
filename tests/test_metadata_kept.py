"""Nothing the model carries is lost (issue 13 item 4): metadata_props, doc strings, producer, model_version,
domain, input/output names and order, and symbolic input/output dims survive every stage."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from realnets import realnet

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits" / "digits_cnn.onnx"
NETS = ["digits", "yolov8n_320", "ppocr_det", "ppocr_rec", "ppocr_cls"]
# shapes for the checks of models whose spatial dims no metadata records
SHAPES = {"ppocr_det": ["x:1x3x64x96"], "ppocr_rec": ["x:1x3x48x96"], "ppocr_cls": ["x:1x3x48x96"]}
MARK = {"edgesqueeze.test": "kept", "labels": "a\nb\n\u4e2d"}


def _marked(name: str, tmp_path: Path) -> Path:
    """A copy of the network with every model-level field set (real exporters leave some empty)."""
    m = onnx.load(str(DIGITS if name == "digits" else realnet(name)))
    for key, value in MARK.items():
        m.metadata_props.add(key=key, value=value)
    m.doc_string, m.graph.doc_string = "model doc", "graph doc"
    m.producer_name, m.producer_version = m.producer_name or "exporter", m.producer_version or "9.9"
    m.model_version, m.domain = 7, "ai.example.test"
    m.graph.input[0].doc_string = "input doc"
    path = tmp_path / f"{name}.onnx"
    onnx.save(m, str(path))
    return path


def _carried(m: onnx.ModelProto) -> dict:
    def io(values):
        return [(v.name, v.doc_string, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values]
    inits = {t.name for t in m.graph.initializer}
    return {"props": {p.key: p.value for p in m.metadata_props if p.key in MARK or not p.key.startswith("edgesqueeze")},
            "doc": m.doc_string, "graph_doc": m.graph.doc_string, "producer": (m.producer_name, m.producer_version),
            "model_version": m.model_version, "domain": m.domain,
            "inputs": io(i for i in m.graph.input if i.name not in inits), "outputs": io(m.graph.output)}


def _assert_kept(src: Path, out: Path, stage: str) -> None:
    before, after = _carried(onnx.load(str(src))), _carried(onnx.load(str(out), load_external_data=False))
    for key, value in before.items():
        if key == "props":
            lost = {k: v for k, v in value.items() if after["props"].get(k) != v}
            assert not lost, f"{stage} lost metadata_props {sorted(lost)}"
        else:
            assert after[key] == value, f"{stage} changed {key}: {value!r} -> {after[key]!r}"


# main's verifier rejects BatchNorm folding on PP-OCR det on random inputs (rel 0.04-0.05 at 64x96..128x128,
# 2.7e-4 at 320x320, also with --static): a verifier matter (passes/optimizer.py), not what this file checks
UNVERIFIED = {"ppocr_det"}


def _stages(name, src, tmp_path):
    """Each stage's output; quantize and convert take the optimized model (paddle models compute their
    weights at run time until constants are folded), as build does."""
    from edgesqueeze.cli.optimize import run_optimize
    from edgesqueeze.compat import convert_file
    from edgesqueeze.model import parse_input_shapes
    from edgesqueeze.quant.run import quantize_model

    shapes = SHAPES.get(name, [])
    opt = tmp_path / "opt.onnx"
    run_optimize(src, opt, input_shapes=parse_input_shapes(shapes), verify=name not in UNVERIFIED)
    yield "optimize", opt
    for precision in ("fp16", "int8"):
        out = tmp_path / f"{precision}.onnx"
        quantize_model(opt, out, precision=precision, calib="random", method="minmax", limit=1,
                       input_shapes=shapes, no_cache=True)
        yield f"quantize {precision}", out
    convert_file(opt, tmp_path / "conv.onnx", opset=13, input_shapes=shapes or None)
    yield "convert", tmp_path / "conv.onnx"


@pytest.mark.parametrize("name", NETS)
def test_optimize_quantize_convert_keep_what_the_model_carries(name, tmp_path):
    src = _marked(name, tmp_path)
    for stage, out in _stages(name, src, tmp_path):
        _assert_kept(src, out, stage)


@pytest.mark.parametrize("name", ["digits", "ppocr_cls"])
def test_compress_keeps_what_the_model_carries(name, tmp_path):
    from edgesqueeze.compress.api import compress
    from edgesqueeze.model import load_model, parse_input_shapes, save_model

    from edgesqueeze.cli.optimize import run_optimize

    src = _marked(name, tmp_path)
    shapes = parse_input_shapes(SHAPES.get(name, []))
    run_optimize(src, tmp_path / "opt.onnx", input_shapes=shapes)
    for kind, kwargs in (("prune", {"prune": 0.5}), ("share", {"share": (8, 5)}), ("2:4", {"sparsity": "2:4"})):
        out, _ = compress(load_model(tmp_path / "opt.onnx", shapes), shapes=shapes, **kwargs)
        save_model(out, tmp_path / f"c-{kind}.onnx")
        _assert_kept(src, tmp_path / f"c-{kind}.onnx", f"compress {kind}")


@pytest.mark.parametrize("name", ["digits", pytest.param("ppocr_cls", marks=pytest.mark.slow),
                                  pytest.param("ppocr_rec", marks=pytest.mark.slow)])
def test_build_bundle_models_keep_what_the_model_carries(name, tmp_path):
    from edgesqueeze.pipeline import build

    src = _marked(name, tmp_path)
    for precision in ("fp16", "int8"):
        out = tmp_path / f"bundle-{precision}"
        build(src, "orin-nano", out, precision=precision, calib="random" if precision == "int8" else None,
              input_shapes=SHAPES.get(name), calib_limit=1, local_engine="off", progress=False)
        for model in sorted((out / "models").glob("*.onnx")):
            _assert_kept(src, model, f"build {precision}: {model.name}")
