"""``edgesqueeze recover``: win back a compressed model's accuracy by distillation from the original."""
from __future__ import annotations

import sys

import click

from ..fileio import check_writable, refuse_overwrite
from .common import (emit, info, input_shape_option, json_option, output_option, preprocess_option, quiet,
                     set_torch_threads, torch_threads_option, with_preprocess)


def read_samples(spec, model, input_shapes=()):
    """All samples of DATA (``.npz``/``.npy`` or an image folder, through :func:`edgesqueeze.data.open_data`) as
    one array for ``model``'s first input, its labels (or None) and the data line."""
    import numpy as np

    from ..data import open_data
    from ..model import parse_input_shapes

    reader = open_data(spec, model, batch_size=1, shapes=parse_input_shapes(input_shapes) or None)
    name = model.graph.input[0].name
    x = np.concatenate([feed[name] for feed in reader])
    labels = None if reader.labels is None else np.asarray(reader.labels)[:len(x)]
    # read one sample at a time; training batches are --batch-size: the line counts samples, not batches
    return x.astype(np.float32, copy=False), labels, reader.describe(batches=False)


def _hints(values):
    out = []
    for v in values:
        s, sep, t = v.partition(":")
        if not sep or not s or not t:
            raise click.BadParameter(f"expected STUDENT_TENSOR:TEACHER_TENSOR, got '{v}'", param_hint="--hint")
        out.append((s, t))
    return tuple(out)


def _lr(value):
    """``--lr``: 'auto' (None) or a positive number."""
    if value is None or str(value).lower() == "auto":
        return None
    try:
        lr = float(value)
    except ValueError:
        lr = -1.0
    if not lr > 0:
        raise click.BadParameter(f"expected 'auto' or a positive number, got '{value}'", param_hint="--lr")
    return lr


class EpochBar:
    """A tqdm bar per epoch on a terminal (loss as it trains, the validation metric at the end); one line per
    epoch otherwise."""

    def __init__(self, epochs: int):
        self.epochs, self.bar = epochs, None
        self.live = sys.stderr.isatty() and not quiet()

    def __call__(self, row: dict) -> None:
        if "probe" in row:
            p = row["probe"]
            tried = ", ".join(f"{lr:g} -> " + (f"{loss:.4f}" if loss is not None else "diverged")
                              for lr, loss in p["losses"].items())
            info(f"lr auto: loss after {p['steps']} steps at {tried}: lr {p['lr']:g}")
            return
        if row.get("end"):
            metric = f"  val {row['metric']} {row['val']:.4f}" if row["val"] is not None else ""
            if self.bar is not None:
                self.bar.set_postfix_str(f"loss {row['loss']:.4f}{metric}")
                self.bar.close()
                self.bar = None
            else:
                info(f"epoch {row['epoch']:3d}/{self.epochs}  loss {row['loss']:.4f}{metric}")
            return
        if not self.live:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=row["steps"], desc=f"epoch {row['epoch']}/{self.epochs}", unit="step",
                            file=sys.stderr, leave=True, dynamic_ncols=True)
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss {row['loss']:.4f}")


@click.command("recover")
@click.argument("student", type=click.Path())
@click.option("--teacher", required=True, type=click.Path(), help="The original (uncompressed) .onnx.")
@click.option("--data", required=True, metavar="DATA",
              help="Training inputs: .npz/.npy or an image folder (unlabelled is enough).")
@click.option("--labels", is_flag=True, help="Also use the data's labels ('label' array, labels.txt): cross entropy.")
@click.option("--val", default=None, metavar="DATA",
              help="Held-out data: per-epoch top-1 (labelled) or agreement with the teacher; drives early stop.")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--lr", default="auto", show_default=True, metavar="auto|RATE", callback=lambda c, p, v: _lr(v),
              help="Adam's learning rate. 'auto': a short range "
                   "test (a few steps at each of four rates from 1e-2 down, from the same start; the JSON report "
                   "and the first line say which) keeps the rate whose training loss ends lowest: one rate does "
                   "not fit all (1e-2 diverges on a pruned MobileNet, 1e-3 is too slow for a 90 %-pruned CNN).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--patience", type=int, default=5, show_default=True, help="Epochs without improvement before stopping.")
@click.option("--temperature", type=float, default=4.0, show_default=True)
@click.option("--hint", "hints", multiple=True, metavar="STUDENT:TEACHER",
              help="FitNets hint: match this student tensor to this teacher tensor (1x1 conv regressor when the "
                   "channel counts differ). Repeatable.")
@click.option("--hint-weight", type=float, default=1.0, show_default=True)
@click.option("--distil", "distil_output", default=None, metavar="OUTPUT",
              help="The graph output to distil (default: the first), e.g. the class scores of a net that also "
                   "regresses boxes (add --hint OUT:OUT for the others).")
@click.option("--seed", type=int, default=0, show_default=True)
@torch_threads_option(0, "PP-OCR's classifier recovered 1.4x faster on two threads than on one on an idle "
                          "2-core machine (on a loaded one, 1 is faster).")
@preprocess_option
@input_shape_option
@output_option(help="Recovered .onnx to write.")
@json_option
def command(student, teacher, data, labels, val, epochs, lr, batch_size, patience, temperature, hints, hint_weight,
            distil_output, seed, threads, preprocess, input_shapes, output, as_json):
    """Distil TEACHER into STUDENT (a compressed copy) on unlabelled DATA; pruned zeros stay zero and shared
    weights keep their clusters (the centroids are fine-tuned).

    \b
    Example:
      edgesqueeze recover net.pruned.onnx --teacher net.onnx --data calib.npz --val val.npz -o net.rec.onnx
      edgesqueeze recover cls.c50.onnx --teacher cls.onnx --data lines/ --input x:1x3x48x192 \\
          --preprocess 'scale=127.5&mean=1,1,1' -o cls.rec.onnx
    """
    from ..compress.recover import RecoverOptions, recover
    from ..model import load_model

    refuse_overwrite(output, student, teacher, data)
    check_writable(output)
    set_torch_threads(threads, "accuracy recovery by distillation")
    s, t = load_model(student), load_model(teacher)
    x, y, line = read_samples(with_preprocess(data, preprocess), s, input_shapes)
    if labels and y is None:
        from ..errors import InputError
        raise InputError("--labels: the data has no labels ('label' array in the .npz, labels.txt in a folder)",
                         path=data)
    vset = None
    if val:
        xv, yv, _ = read_samples(with_preprocess(val, preprocess), s, input_shapes)
        vset = (xv, yv)
    if not as_json:
        info(f"data: {line}")
    opts = RecoverOptions(epochs=epochs, lr=lr, temperature=temperature, batch_size=batch_size, patience=patience,
                          seed=seed, hints=_hints(hints), hint_weight=hint_weight, output=distil_output)
    report = recover(s, t, x, output, labels=y if labels else None, val=vset, options=opts,
                     progress=None if as_json else EpochBar(epochs))
    report["output"] = output
    report["data"] = line
    emit(report, as_json, lambda r: f"wrote {output} (best epoch {r['best_epoch']} of {r['epochs_run']})")
