"""``edgesqueeze optimize``: fuse layers at the ONNX level, show what was fused, prove it on onnxruntime."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import click

from ..errors import InputError
from ..fileio import check_writable, clean_stale, refuse_overwrite, temp_prefix, write_json_atomic
from .common import emit, info, input_shape_option, json_option, output_option, static_option, table, target_option


def _split_names(values):
    names = []
    for v in values or ():
        names += [n.strip() for n in str(v).split(",") if n.strip()]
    return names


def run_optimize(model_path, output, *, target=None, passes=None, skip=(), report_path=None, verify=True,
                 input_shapes=None, static=False, opset=None, rtol=None, seed=0, announce=None) -> dict:
    """Optimize the model file ``model_path`` into ``output`` (the Python twin of ``edgesqueeze optimize``).

    Args:
        model_path: input ``.onnx`` (never modified).
        output: output ``.onnx`` path (written atomically; may not be the input).
        target: device profile name (GPU targets add the depthwise-separable fusion).
        passes, skip: pass names (see ``edgesqueeze optimize --list``).
        report_path: where to write the JSON report (optional).
        verify: prove the result on onnxruntime (relative error <= ``rtol``; None: 1e-4, or 1e-2 when the
            model computes in float16).
        input_shapes: ``{name: [dims]}``: concrete shapes of dynamic inputs for the verification.
        static: pin the inputs to those shapes in the output (else symbolic dims are kept).
        opset: convert models with an older ai.onnx opset to this one first (default 13).
        announce: called with no argument once the model has loaded (the CLI's progress line).

    Returns:
        The report dict (see :func:`edgesqueeze.passes.optimize`) plus ``input``, ``output``, ``sha256``.

    Raises:
        InputError, UnsupportedError, VerificationError: see :func:`edgesqueeze.passes.optimize`.
    """
    from ..model import (data_file_of, load_model, model_hash, opset_version, random_feeds, save_model,
                         weights_were_external)
    from ..passes import DEFAULT_OPSET, optimize, resolve_passes

    refuse_overwrite(output, model_path)
    check_writable(output)
    names = resolve_passes(passes, skip, target)  # fail on a bad pass name before loading anything
    model = load_model(model_path, input_shapes, opset=opset or DEFAULT_OPSET, pin=static)
    feeds = random_feeds(model, seed=seed, shapes=input_shapes) if verify else None
    if announce:
        announce()
    if rtol is None:
        rtol = 1e-2 if _computes_in_fp16(model) else 1e-4
    external = weights_were_external(model, model_path) or None
    if external:
        refuse_overwrite(data_file_of(output), model_path)
    with _staged(output) as staged:  # written before the verification, in place only once it passed

        def write(out):
            save_model(out, staged, inputs=(model_path,), external=external)

        _, report = optimize(model, passes=names, target=target, verify=verify, rtol=rtol, seed=seed, feeds=feeds,
                             write=write)
        digest = model_hash(staged)
    report.update({"input": str(model_path), "output": str(output), "sha256": digest, "opset": opset_version(model)})
    if report_path:
        refuse_overwrite(report_path, model_path)
        write_json_atomic(report_path, report)
    return report


@contextlib.contextmanager
def _staged(output):
    """Yield a path in a hidden folder next to ``output`` to write the model to; when the block succeeds, its
    data file (:func:`edgesqueeze.model.data_file_of`) and then the model are renamed into place. The folder
    is removed either way (and stale ones of killed runs on the next run)."""
    from ..model import data_file_of

    output = Path(output)
    parent = output.parent if str(output.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(parent, output.name, ".staging")
    folder = Path(tempfile.mkdtemp(prefix=temp_prefix(output.name), suffix=".staging", dir=str(parent)))
    try:
        staged = folder / output.name
        yield staged
        for src, dst in ((data_file_of(staged), data_file_of(output)), (staged, output)):
            if src.exists():
                os.replace(src, dst)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _computes_in_fp16(model) -> bool:
    from onnx import TensorProto

    return any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer) or any(
        i.type.tensor_type.elem_type == TensorProto.FLOAT16 for i in model.graph.input)


def format_report(report: dict, show_nodes: int = 6) -> str:
    """The human-readable summary that ``edgesqueeze optimize`` prints."""
    lines = [f"{report['input']} -> {report['output']}  (ai.onnx opset {report['opset']}, "
             f"target {report.get('target') or 'cpu'})",
             "passes: " + ", ".join(f"{p['name']} ({p['nodes_before']}->{p['nodes_after']})"
                                    for p in report["passes"])]
    for s in report.get("skipped_passes", []):
        lines.append(f"skipped pass {s['name']}: {s['reason']}")
    rows = []
    for kind, f in report["fusions"].items():
        if kind.startswith("fold_constants:"):
            continue
        groups = f["nodes"]
        shown = "; ".join("+".join(g) for g in groups[:show_nodes])
        if len(groups) > show_nodes:
            shown += f"; ... ({len(groups) - show_nodes} more)"
        rows.append([kind, f["count"], shown[:110] + ("..." if len(shown) > 110 else "")])
    folded = sum(f["count"] for k, f in report["fusions"].items() if k.startswith("fold_constants:"))
    if folded:
        rows.insert(0, ["fold_constants", folded, "constant subgraphs -> initializers"])
    lines.append("")
    lines.append(table(rows, ["fusion", "count", "nodes"], "lrl") if rows else "no fusions applied")
    ops = sorted(set(report["ops_before"]) | set(report["ops_after"]))
    hist = [[op, report["ops_before"].get(op, 0), report["ops_after"].get(op, 0)] for op in ops]
    hist.append(["total", report["nodes_before"], report["nodes_after"]])
    lines += ["", table(hist, ["op", "before", "after"], "lrr"), ""]
    v = report["verification"]
    if v["status"] == "passed":
        lines.append(f"verified on onnxruntime CPU (seed {v['seed']}): max relative error {v['max_rel']:.3g} "
                     f"<= {v['rtol']:g}")
    else:
        lines.append(f"verification {v['status']}: {v.get('reason', '')}")
    lines.append(f"wrote {report['output']} ({report['seconds']:.2f} s of passes)")
    return "\n".join(lines)


@click.command("optimize")
@click.argument("model", type=click.Path(), required=False)
@output_option(required=False, help="Output .onnx file.")
@target_option
@click.option("--passes", "passes", multiple=True, metavar="A,B",
              help="Run exactly these passes, in this order (comma-separated or repeated).")
@click.option("--skip", "skip", multiple=True, metavar="A,B", help="Leave out these passes.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the JSON report to this file.")
@click.option("--no-verify", is_flag=True, help="Do not prove the result on onnxruntime.")
@click.option("--rtol", type=float, default=None,
              help="Relative tolerance of the check (default 1e-4; 1e-2 for float16 models).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random verification inputs.")
@input_shape_option
@static_option
@click.option("--opset", type=int, default=None, metavar="N",
              help="Convert a model with an older ai.onnx opset to N first (default 13).")
@click.option("--list", "list_passes", is_flag=True, help="List the passes and exit.")
@json_option
def command(model, output, target, passes, skip, report_path, no_verify, rtol, seed, input_shapes, static,
            opset, list_passes, as_json):
    """Fuse layers at the ONNX level and prove the result computes the same function.

    Runs a list of named graph passes (constant folding, no-op removal, BatchNorm and constant folding into
    convolutions, horizontal fusion of sibling layers, and for GPU targets depthwise-separable blocks into one
    DepthwiseSeparableConv plugin node), prints what was fused and the op histogram before/after, and verifies
    on onnxruntime CPU with seeded random inputs (exit 7 naming the pass that broke equivalence).

    Symbolic input dims (batch, height, width) are kept in the output; the check runs at batch 1 and at sizes
    from --input or the model's metadata (Ultralytics imgsz). --static pins the output to those shapes.

    \b
    Examples:
      edgesqueeze optimize net.onnx -o net.opt.onnx
      edgesqueeze optimize net.onnx -o net.opt.onnx --target orin-nano --report fusions.json
      edgesqueeze optimize net.onnx -o net.opt.onnx --skip fuse_horizontal
      edgesqueeze optimize net.onnx -o net.opt.onnx --passes fold_constants,fold_batchnorm --no-verify
      edgesqueeze optimize --list
    """
    from ..model import parse_input_shapes
    from ..passes import PASSES, default_pass_names

    if list_passes:
        defaults, gpu = set(default_pass_names()), set(default_pass_names("orin-nano"))
        data = [{"name": p.name, "default": p.name in defaults, "gpu_default": p.name in gpu,
                 "opsets": list(p.opsets), "description": p.description} for p in PASSES.values()]
        emit(data, as_json, lambda d: table(
            [[p["name"], "yes" if p["default"] else ("gpu" if p["gpu_default"] else "-"), p["description"]]
             for p in d], ["pass", "default", "what it does"], "lll"))
        return
    if not model:
        raise InputError("missing MODEL argument", hint="edgesqueeze optimize net.onnx -o net.opt.onnx")
    if not output:
        raise InputError("missing -o/--output", hint="edgesqueeze optimize net.onnx -o net.opt.onnx")
    report = run_optimize(model, output, target=target, passes=_split_names(passes) or None,
                          skip=_split_names(skip), report_path=report_path, verify=not no_verify,
                          input_shapes=parse_input_shapes(input_shapes), static=static, opset=opset, rtol=rtol,
                          seed=seed,
                          announce=None if no_verify else lambda: info("optimizing and verifying on onnxruntime "
                                                                       "CPU ..."))
    emit(report, as_json, format_report)
