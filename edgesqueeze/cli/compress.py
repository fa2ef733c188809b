"""``edgesqueeze compress``: prune, sparsify, factorise or share the weights of an ONNX model."""
from __future__ import annotations

import click

from ..errors import InputError, VerificationError
from ..fileio import check_writable, refuse_overwrite
from .common import emit, info, input_shape_option, json_option, output_option, static_option, table, warn


def _bits(text):
    if text is None:
        return None
    try:
        conv, fc = (int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected CONV_BITS,FC_BITS such as 8,5, got '{text}'") from None
    return conv, fc


@click.command("compress")
@click.argument("model", type=click.Path())
@click.option("--sparsity", type=click.Choice(["2:4"]), default=None,
              help="2:4 structured sparsity (Ampere/Orin sparse tensor cores).")
@click.option("--prune", type=float, default=None, metavar="FRACTION",
              help="Magnitude pruning: fraction of Conv/Gemm/MatMul weights set to zero, e.g. 0.8.")
@click.option("--prune-scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True,
              help="Same sparsity in every layer, or one magnitude threshold over all layers.")
@click.option("--prune-std", type=float, default=None, metavar="Q",
              help="Magnitude pruning with Han et al.'s per-layer threshold Q x std(W) instead of --prune.")
@click.option("--channels", type=float, default=None, metavar="FRACTION",
              help="Remove this fraction of channels by L1 norm (consumers shrink; branches joined by an Add or a "
                   "Concat stay consistent).")
@click.option("--channel-spare", default="residual,pooled", show_default=True, metavar="RULES",
              help="With --channels: groups kept whole: 'residual' (tied by a residual Add), 'pooled' (1x1 maps: "
                   "squeeze-excitation branches); 'none' prunes every group.")
@click.option("--calib", "channel_calib", default=None, metavar="DATA",
              help="With --channels: unlabelled inputs (.npz/.npy or image folder): choose channels by the variance "
                   "they feed their consumers and refit those layers by least squares to the original's outputs.")
@click.option("--channel-multiple", type=int, default=1, show_default=True,
              help="Round kept channel counts up to a multiple of this (8 suits tensor cores).")
@click.option("--low-rank", "low_rank_energy", type=float, default=None, metavar="ENERGY",
              help="Truncated-SVD factorisation keeping this fraction of the singular-value energy, e.g. 0.9.")
@click.option("--rank-ratio", type=float, default=None, metavar="RATIO",
              help="Low-rank with the rank chosen so each factorised layer keeps RATIO of its parameters.")
@click.option("--low-rank-spatial", is_flag=True, help="Also split K x K convolutions into K x 1 then 1 x K.")
@click.option("--share", default=None, metavar="CONV,FC",
              help="k-means weight sharing with these bits per Conv and per fully-connected weight, e.g. 8,5.")
@click.option("--share-bias", type=int, default=None, metavar="BITS",
              help="With --share: share each layer's bias too, with this many bits.")
@click.option("--val", default=None, metavar="DATA",
              help="Labelled validation data (.npz with the input arrays and 'label') for top-1 before/after.")
@click.option("--max-drop", "max_drop", type=click.FloatRange(0, 100), default=1.0, show_default=True,
              metavar="POINTS", help="With --val: warn (naming the step) when a compression step loses more top-1 "
                                     "points.")
@click.option("--strict", is_flag=True, help="With --val: a loss over --max-drop is an error (exit 7), no output.")
@click.option("--recover", "recover_data", default=None, metavar="DATA",
              help="Then distil MODEL into the compressed copy on DATA (unlabelled .npz or image folder), with "
                   "edgesqueeze recover's defaults (use 'recover' itself for its options).")
@input_shape_option
@static_option
@output_option(help="Compressed .onnx to write.")
@json_option
def command(model, sparsity, prune, prune_scope, prune_std, channels, channel_spare, channel_calib, channel_multiple,
            low_rank_energy,
            rank_ratio, low_rank_spatial, share, share_bias, val, max_drop, strict, recover_data, input_shapes, static,
            output, as_json):
    """Compress MODEL's weights; the result runs on onnxruntime like the original.

    Techniques combine and run in a fixed order: channels, low-rank, prune, 2:4, share.
    Without --val the report still shows how far the outputs moved on seeded random inputs.
    Symbolic input dims are kept (--input gives the shapes of that check; --static pins them).
    With --val, a step that loses more than --max-drop top-1 points is named in a warning (--strict: exit 7).

    \b
    Examples:
      edgesqueeze compress net.onnx --sparsity 2:4 -o net.sparse.onnx
      edgesqueeze compress net.onnx --prune 0.8 --share 8,5 --val val.npz -o net.small.onnx
      edgesqueeze compress net.onnx --prune 0.9 --val val.npz --max-drop 2 --strict -o net.small.onnx
      edgesqueeze compress net.onnx --channels 0.3 --channel-multiple 8 -o net.thin.onnx
      edgesqueeze compress net.onnx --channels 0.5 --calib calib.npz --recover calib.npz -o net.thin.onnx
      edgesqueeze compress net.onnx --low-rank 0.9 --low-rank-spatial --json -o net.lr.onnx
    """
    from ..compress.api import compress
    from ..model import load_model, parse_input_shapes, save_model

    refuse_overwrite(output, model, val if val and val != "random" else None, recover_data, channel_calib)
    check_writable(output)
    shapes = parse_input_shapes(input_shapes)
    m = load_model(model, shapes, pin=static)
    reader = None
    if val is not None:
        from ..data import open_data

        reader = open_data(val, m)
    calib_x = None
    if channel_calib is not None and channels is None:
        raise InputError("--calib needs --channels (it guides channel pruning)", path=channel_calib)
    if channel_calib is not None:
        from .recover import read_samples

        calib_x, _, line = read_samples(channel_calib, m, input_shapes)
        info(f"channel calibration: {line}")
    spare = tuple(r for r in channel_spare.split(",") if r and r != "none")
    out, report = compress(m, sparsity=sparsity, prune=prune, prune_scope=prune_scope, prune_std=prune_std,
                           channels=channels, channel_multiple=channel_multiple, low_rank_energy=low_rank_energy,
                           rank_ratio=rank_ratio, low_rank_spatial=low_rank_spatial, share=_bits(share),
                           share_bias=share_bias, val=reader, shapes=shapes, channel_calib=calib_x,
                           channel_spare=spare)
    report["warnings"] = accuracy_warnings(report.get("accuracy"), report.get("accuracy_steps"), max_drop / 100)
    if report["warnings"] and strict:
        raise VerificationError(f"{report['warnings'][0]} (--strict: {output} not written)", path=str(model),
                                hint=f"the limit is --max-drop {max_drop:g} points")
    for w in report["warnings"]:
        warn(w)
    save_model(out, output, inputs=(model, val))
    info(f"wrote {output}")
    if recover_data:
        report["recover"] = _recover_after(m, output, recover_data, input_shapes, as_json)
    report["output"] = str(output)
    emit(report, as_json, _text)


def _recover_after(teacher, output, data, input_shapes, as_json) -> dict:
    """``compress --recover DATA``: distil ``teacher`` into the model just written at ``output``, in place."""
    from ..compress.recover import RecoverOptions, recover
    from ..model import load_model
    from .recover import EpochBar, read_samples

    student = load_model(output)
    x, _, line = read_samples(data, student, input_shapes)
    rep = recover(student, teacher, x, output, progress=None if as_json else EpochBar(RecoverOptions().epochs))
    info(f"recovered {output} on {line} (best epoch {rep['best_epoch']} of {rep['epochs_run']})")
    return {"data": line, **{k: rep[k] for k in ("epochs_run", "best_epoch", "history", "lr", "lr_probe")}}


def accuracy_warnings(acc, steps, max_drop: float) -> list:
    """Warnings naming each compression step that lost more than ``max_drop`` (a fraction) of top-1, and the whole
    compression when no single step did but together they did. ``acc``/``steps``: the report's ``accuracy`` and
    ``accuracy_steps``."""
    from ..pipeline.support import top1_loss

    if not acc or acc.get("before") is None:
        return []
    out, prev = [], acc["before"]
    for s in steps:
        lost = top1_loss(prev, s["top1"], max_drop)
        if lost:
            out.append(f"compression step '{s['step']}' loses {lost}")
        prev = s["top1"]
    lost = top1_loss(acc["before"], acc["after"], max_drop)
    if lost and not out:
        out.append(f"the compressed model loses {lost} over the input ("
                   f"steps {' -> '.join(s['step'] for s in steps)})")
    return out


def _text(report) -> str:
    lines = [f"steps: {' -> '.join(report['steps'])}"]
    rows = [["parameters", report["params_before"], report["params_after"]],
            ["non-zero", report["nonzero_before"], report["nonzero_after"]],
            ["MACs", *("n/a (dynamic input)" if v is None else v for v in (report["macs_before"],
                                                                         report["macs_after"]))]]
    acc = report.get("accuracy")
    if acc and acc["before"] is not None:
        rows.append(["top-1", f"{acc['before']:.4f}", f"{acc['after']:.4f}"])
    lines.append(table(rows, ["", "before", "after"]))
    rep = report["reports"]
    if "sparsity" in rep:
        for s in rep["sparsity"]["skipped"]:
            lines.append(f"2:4 skipped {s['layer']}: {s['reason']}")
    if "channels" in rep:
        for g in rep["channels"]["groups"]:
            state = g["frozen"] or f"{g['channels']} -> {g['kept']}"
            lines.append(f"channels {'+'.join(g['producers'])}: {state}")
    if "low_rank" in rep:
        for ly in rep["low_rank"]["layers"]:
            lines.append(f"low-rank {ly['layer']}: rank {ly['rank']}/{ly['full_rank']}, "
                         f"energy {ly['energy']:.3f}, params {ly['params_before']} -> {ly['params_after']}")
        for ly in rep["low_rank"]["skipped"]:
            lines.append(f"low-rank skipped {ly['layer']}: {ly['reason']}")
    change = report.get("output_change")
    if change:
        for name, c in change.items():
            lines.append(f"output '{name}' on random inputs: max abs change {c['max_abs']:.4g}, "
                         f"max rel {c['max_rel']:.4g}")
    return "\n".join(lines)
