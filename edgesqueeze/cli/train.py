"""``edgesqueeze train``: prune an ONNX model with training (iterative pruning, lottery tickets, class-dependent)."""
from __future__ import annotations

import sys

import click

from ..fileio import check_writable, refuse_overwrite
from .common import emit, info, json_option, output_option, quiet, set_torch_threads, table, torch_threads_option
from .compress import _bits


class _Progress:
    """A tqdm bar over every epoch of every round on a terminal (loss, last val metric); else a line per round."""

    def __init__(self, total: int, enabled: bool, positive):
        self.total, self.positive, self.bar = total, positive, None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="train", unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, row: dict) -> None:
        if "epoch" in row:
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix_str(f"round {row['round']} loss {row['loss']:.4f}")
            return
        text = _round_text(row, self.positive)
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.enabled:
            info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _round_text(row: dict, positive) -> str:
    text = f"round {row['round']}: sparsity {row['sparsity']:.3f}  val top-1 {row['accuracy']:.4f}"
    if positive is not None:
        auc = "n/a" if row["auc"] is None else f"{row['auc']:.4f}"
        text += f"  class {positive}: FN {row['fn']}/{row['positives']} FP {row['fp']} AUC {auc}"
    return text


@click.command("train")
@click.argument("model", type=click.Path())
@click.option("--iterative", "schedule", default=None, metavar="S1,S2,...",
              help="Iterative magnitude pruning (Han et al.): prune to each sparsity, fine-tune after each.")
@click.option("--lottery", "rounds", type=click.IntRange(0), default=None, metavar="ROUNDS",
              help="Lottery tickets (Frankle & Carbin): train, prune --prune-rate of the rest, rewind; ROUNDS times.")
@click.option("--prune-rate", type=float, default=0.2, show_default=True,
              help="With --lottery: fraction of the remaining weights removed per round.")
@click.option("--important-class", type=int, default=None, metavar="K",
              help="Class-dependent pruning (Entezari & Saukh): class-balanced loss + ranking term for class K; "
                   "reports its false negatives / positives.")
@click.option("--watch-class", type=int, default=None, metavar="K",
              help="Report class K's false negatives / positives every round without changing the loss.")
@click.option("--beta", type=float, default=0.999, show_default=True, help="Class-balanced weighting's beta.")
@click.option("--lam", type=float, default=0.05, show_default=True, help="Weight of the ranking term.")
@click.option("--criterion", type=click.Choice(["magnitude", "increase"]), default=None,
              help="With --lottery: prune the smallest |W_k| or |W_k|-|W_0| [default: increase with "
                   "--important-class --reinit, else magnitude].")
@click.option("--data", required=True, help="Labelled training data (.npz with 'label', or class subfolders).")
@click.option("--val", required=True, help="Labelled validation data, judged after every round.")
@click.option("--epochs", type=int, default=5, show_default=True, help="Training epochs per round.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True,
              help="Same sparsity in every layer, or one ranking over all layers.")
@click.option("--reinit", is_flag=True, help="With --lottery: W_0 freshly drawn from --seed, not the model's weights.")
@click.option("--distill", is_flag=True, help="With --iterative: also distil from the unpruned model while "
                                              "fine-tuning (Hinton).")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Distillation temperature.")
@click.option("--layer-sparsity", "layer_sparsity", multiple=True, metavar="WEIGHT=SPARSITY",
              help="With --iterative: this weight's own final sparsity, reached along the schedule's curve "
                   "(repeatable), e.g. head.2.weight=0.95.")
@click.option("--share", default=None, metavar="CONV,FC",
              help="Then Deep Compression's trained quantization: k-means sharing with these bits per Conv and "
                   "fully-connected weight, the shared values fine-tuned, e.g. 5,5.")
@click.option("--share-bits", multiple=True, metavar="WEIGHT=BITS", help="With --share: this weight's bits "
                                                                         "(repeatable).")
@click.option("--share-epochs", type=click.IntRange(0), default=5, show_default=True,
              help="With --share: epochs of fine-tuning the shared values.")
@click.option("--share-lr", type=float, default=1e-4, show_default=True, help="With --share: its Adam learning rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@torch_threads_option(1, "One by default: on the digits CNN one thread trained in 4.7 s where two took 8-65 s "
                          "(and at least twice the CPU time) on a loaded 2-core machine, and a fixed count gives "
                          "the same bytes on any machine.")
@output_option(help="Pruned .onnx to write.")
@json_option
def command(model, schedule, rounds, prune_rate, important_class, watch_class, beta, lam, criterion, data, val,
            epochs, lr, batch_size, scope, reinit, distill, temperature, layer_sparsity, share, share_bits,
            share_epochs, share_lr, seed, threads, output, as_json):
    """Prune MODEL with training: iterative pruning, lottery tickets, class-dependent pruning (labelled data).

    Pruned weights are exact zeros, so compress --share and pack shrink the result further.

    \b
    Examples:
      edgesqueeze train net.onnx --iterative 0.5,0.75,0.9 --data train.npz --val val.npz -o net.pruned.onnx
      edgesqueeze train net.onnx --lottery 5 --prune-rate 0.2 --data train.npz --val val.npz -o net.lt.onnx
      edgesqueeze train net.onnx --lottery 7 --prune-rate 0.3 --important-class 8 --reinit \\
          --data train.npz --val val.npz -o net.cd.onnx
      edgesqueeze train digits_cnn.onnx --iterative 0.5,0.75,0.875,0.94 --layer-sparsity head.2.weight=0.95 \\
          --distill --share 4,5 --data train.npz --val val.npz -o digits.dc.onnx
    """
    from ..compress.train_onnx import TrainOptions, labelled_arrays, parse_schedule, train_onnx
    from ..model import load_model

    refuse_overwrite(output, model, data, val)
    check_writable(output)
    opts = TrainOptions(schedule=parse_schedule(schedule) if schedule else None, rounds=rounds,
                        prune_rate=prune_rate, epochs=epochs, lr=lr, batch_size=batch_size,
                        layerwise=scope == "layer", important_class=important_class, watch_class=watch_class,
                        beta=beta, lam=lam,
                        criterion=criterion, reinit=reinit, distill=distill, temperature=temperature,
                        layer_sparsity=_pairs(layer_sparsity, float, "--layer-sparsity"), share=_bits(share),
                        share_bits=_pairs(share_bits, int, "--share-bits"), share_epochs=share_epochs,
                        share_lr=share_lr, seed=seed)
    opts.check()
    set_torch_threads(threads, "pruning with training")
    m = load_model(model)
    train_set, val_set = labelled_arrays(data, m), labelled_arrays(val, m)
    steps = len(opts.schedule) if opts.schedule else opts.rounds + 1  # epochs run in each pruning round
    positive = important_class if important_class is not None else watch_class
    progress = _Progress(steps * epochs, not (as_json or quiet()), positive)
    try:
        report = train_onnx(m, train_set, val_set, output, opts, progress=progress)
    finally:
        progress.close()
    info(f"wrote {output}")
    report["output"] = str(output)
    emit(report, as_json, lambda r: _text(r, positive))


def _pairs(items, kind, option: str):
    """``("a=0.9", "b=0.5")`` -> ``(("a", 0.9), ("b", 0.5))``, or None when empty."""
    out = []
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            out.append((name, kind(value)))
        except ValueError:
            sep = ""
        if not sep or not name:
            raise click.BadParameter(f"expected WEIGHT=VALUE, got '{item}'", param_hint=option)
    return tuple(out) or None


def _text(report: dict, positive) -> str:
    cols = ["round", "sparsity", "val top-1"] + (["FN", "FP", "AUC"] if positive is not None else [])
    rows = []
    for h in report["history"]:
        row = [h["round"], f"{h['sparsity']:.3f}", f"{h['accuracy']:.4f}"]
        if positive is not None:
            row += [f"{h['fn']}/{h['positives']}", h["fp"], "n/a" if h["auc"] is None else f"{h['auc']:.4f}"]
        rows.append(row)
    text = f"{report['method']} pruning\n" + table(rows, cols)
    if "shared" in report:
        bits = sorted({v["bits"] for v in report["shared"]["layers"].values()})
        text += (f"\nshared ({'/'.join(map(str, bits))} bits), values fine-tuned: "
                 f"val top-1 {report['shared']['accuracy']:.4f}")
    return text
