"""``edgesqueeze recover``: win back a compressed model's accuracy by distillation from the original."""
from __future__ import annotations

import click

from ..fileio import check_writable, refuse_overwrite
from .common import emit, info, json_option, output_option


def _arrays(path, name):
    import numpy as np

    from ..errors import InputError

    if not str(path).endswith(".npz"):
        raise InputError("recover reads .npz data (the input array, optionally 'label')", path=str(path))
    d = np.load(path)
    keys = [k for k in d.files if k != "label"]
    if not keys:
        raise InputError("no input array", path=str(path))
    x = d[name] if name in d.files else d[keys[0]]
    return x.astype(np.float32), (d["label"] if "label" in d.files else None)


@click.command("recover")
@click.argument("student", type=click.Path())
@click.option("--teacher", required=True, type=click.Path(), help="The original (uncompressed) .onnx.")
@click.option("--data", required=True, type=click.Path(), help="Training inputs (.npz); labels optional.")
@click.option("--labels", is_flag=True, help="Also use the data's 'label' array (cross entropy).")
@click.option("--val", default=None, type=click.Path(), help="Labelled .npz for the per-epoch top-1 (early stop).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--lr", type=float, default=1e-2, show_default=True)
@click.option("--temperature", type=float, default=4.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@output_option(help="Recovered .onnx to write.")
@json_option
def command(student, teacher, data, labels, val, epochs, lr, temperature, seed, output, as_json):
    """Distil TEACHER into STUDENT (a compressed copy) on unlabelled DATA; pruned zeros stay zero.

    \b
    Example:
      edgesqueeze recover net.pruned.onnx --teacher net.onnx --data calib.npz --val val.npz -o net.rec.onnx
    """
    from ..compress.recover import recover
    from ..model import load_model

    refuse_overwrite(output, student, teacher, data)
    check_writable(output)
    s, t = load_model(student), load_model(teacher)
    name = s.graph.input[0].name
    x, y = _arrays(data, name)
    vset = _arrays(val, name) if val else None

    def show(row):
        top = f"  val top-1 {row['val_top1']:.4f}" if row["val_top1"] is not None else ""
        info(f"epoch {row['epoch']:3d}/{epochs}  loss {row['loss']:.4f}{top}")

    report = recover(s, t, x, output, labels=y if labels else None, val=vset, epochs=epochs, lr=lr,
                     temperature=temperature, seed=seed, progress=None if as_json else show)
    report["output"] = output
    emit(report, as_json, lambda r: f"wrote {output} (best epoch {r['best_epoch']} of {r['epochs_run']})")
