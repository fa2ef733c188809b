"""Class-dependent pruning (Entezari & Saukh 2020) against plain lottery-ticket pruning on imbalanced digits.

Binary task on scikit-learn digits: one important digit is the positive class, every other digit negative; the
training set keeps only a fraction of the positives (so they are rare), the test set is left as it is. Both
methods run the same lottery-ticket schedule (train, prune a fixed fraction of the remaining weights, rewind the
survivors to W_0) down to <= 10% of the weights, from the same seeded initial network:

- plain: cross-entropy, prune the smallest |W_k|;
- class-dependent: class-balanced cross-entropy + lam * squared-hinge ranking term, prune the smallest |W_k|-|W_0|.

Prints false negatives, false positives, AUC and accuracy per sparsity level, averaged over the seeds.

With ``--onnx MODEL`` the same comparison runs from the command line on a trained ONNX classifier taking the
8x8 digits as ``1x1x8x8`` (the example ``examples/digits/digits_cnn.onnx``): all ten classes, the important
digit's training samples cut to ``--keep-positive``, each variant one ``edgesqueeze train --lottery`` run
(plain, and with ``--important-class``), rewinding to the model's own trained weights (``--reinit``: to freshly
drawn ones); the numbers are read from its ``--json`` report.

    python benchmarks/bench_class_dependent.py [--positive 8] [--seeds 0,1,2] [--json]
    python benchmarks/bench_class_dependent.py --onnx examples/digits/digits_cnn.onnx --rounds 5 --prune-rate 0.4 \
        --epochs 4 --seeds 0,1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positive", type=int, default=8, help="the important digit")
    ap.add_argument("--keep-positive", type=float, default=0.25, help="fraction of positives kept for training")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prune-rate", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beta", type=float, default=0.999)
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ablation", action="store_true",
                    help="also run the class-dependent loss with |W_k| pruning, and cross-entropy with |W_k|-|W_0|")
    ap.add_argument("--onnx", default=None, metavar="MODEL",
                    help="run both variants through 'edgesqueeze train' on this 1x1x8x8 digits classifier")
    ap.add_argument("--reinit", action="store_true", help="with --onnx: W_0 freshly drawn, not the model's weights")
    ap.add_argument("--scope", choices=["layer", "global"], default="layer",
                    help="prune the same fraction in every layer, or one ranking over all layers")
    ap.add_argument("--jobs", type=int, default=1, help="with --onnx: 'edgesqueeze train' runs at a time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    runs, sizes = _onnx_runs(args) if args.onnx else _mlp_runs(args)
    return _report(args, runs, sizes, time.time() - t0)


def _drop_positives(y: np.ndarray, positive, keep_fraction: float, seed: int) -> np.ndarray:
    """Indices of the training samples kept: all but a random ``1 - keep_fraction`` of the important class."""
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y == positive)
    drop = rng.choice(pos, size=int(round(len(pos) * (1 - keep_fraction))), replace=False)
    return np.setdiff1d(np.arange(len(y)), drop)


def _mlp_runs(args):
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from edgesqueeze.compress.training import lottery_ticket

    torch.set_num_threads(1)
    d = load_digits()
    x, digit = (d.data / 16.0).astype(np.float32), d.target
    y = (digit == args.positive).astype(np.int64)
    variants = {"plain": (False, "magnitude"), "class-dependent": (True, "increase")}
    if args.ablation:
        variants.update({"cd-loss only": (True, "magnitude"), "increase only": (False, "increase")})
    runs = {name: [] for name in variants}
    for seed in _seeds(args):
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=digit)
        keep = _drop_positives(ytr, 1, args.keep_positive, seed)
        train_data, test_data = (xtr[keep], ytr[keep]), (xte, yte)

        def make():
            return torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100),
                                       torch.nn.ReLU(), torch.nn.Linear(100, 2))

        for name, (cd, criterion) in variants.items():
            _, _, hist = lottery_ticket(make, train_data, test_data, rounds=args.rounds, prune_rate=args.prune_rate,
                                        epochs=args.epochs, lr=args.lr, positive=1, class_dependent=cd,
                                        layerwise=args.scope == "layer",
                                        beta=args.beta, lam=args.lam, criterion=criterion, seed=seed)
            runs[name].append(hist)
    return runs, {"train_positives": int(train_data[1].sum()), "train_size": len(train_data[1]),
                  "test_positives": int(yte.sum()), "test_size": len(yte)}


def _seeds(args):
    return [int(s) for s in args.seeds.split(",")]


def _onnx_runs(args):
    """Plain and class-dependent lottery tickets as 'edgesqueeze train' runs on the ONNX digits classifier (the
    example's splits: its 1197 training images, the important digit cut down, and the other 600 as the test)."""
    import subprocess
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from train_digits import splits

    (xt, yt), (xc, yc), (xv, yv) = splits()
    xte, yte = np.concatenate([xv, xc]), np.concatenate([yv, yc])
    tmp = Path(tempfile.mkdtemp(prefix="cd-onnx-"))
    np.savez(tmp / "test.npz", input=xte, label=yte)
    common = ["--lottery", str(args.rounds), "--prune-rate", str(args.prune_rate), "--epochs", str(args.epochs),
              "--lr", str(args.lr), "--scope", args.scope, "--val", str(tmp / "test.npz"), "--json"]
    common += ["--reinit"] if args.reinit else []
    cd = ["--important-class", str(args.positive), "--beta", str(args.beta), "--lam", str(args.lam)]
    jobs = []
    for seed in _seeds(args):
        keep = _drop_positives(yt, args.positive, args.keep_positive, seed)
        np.savez(tmp / f"train{seed}.npz", input=xt[keep], label=yt[keep])
        for name, extra in (("plain", ["--watch-class", str(args.positive)]), ("class-dependent", cd)):
            jobs.append((name, [sys.executable, "-m", "edgesqueeze", "train", args.onnx, "--data",
                                str(tmp / f"train{seed}.npz"), "--seed", str(seed), "-o",
                                str(tmp / f"{name}{seed}.onnx")] + common + extra))
    env = dict(os.environ, OMP_NUM_THREADS="1")  # small runs side by side: one thread each

    def run(cmd):
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        reports = list(pool.map(run, [cmd for _, cmd in jobs]))
    runs = {"plain": [], "class-dependent": []}
    for (name, _), rep in zip(jobs, reports):
        runs[name].append(rep["history"])
    return runs, {"train_positives": int((yt[keep] == args.positive).sum()), "train_size": len(keep),
                  "test_positives": int((yte == args.positive).sum()), "test_size": len(yte)}


def _report(args, runs, sizes, seconds) -> int:
    levels = []
    for k in range(args.rounds + 1):
        row = {"round": k, "weights_kept": round(1 - runs["plain"][0][k]["sparsity"], 4)}
        for name in runs:
            rs = [r[k] for r in runs[name]]
            row[name] = {m: round(float(np.mean([r[m] for r in rs])), 4) for m in ("fn", "fp", "auc", "accuracy")}
            row[name]["fn_per_seed"] = [r["fn"] for r in rs]
        levels.append(row)
    seeds = _seeds(args)
    result = dict(sizes, positive=args.positive, seeds=seeds, options=vars(args), levels=levels,
                  seconds=round(seconds, 1))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    task = f"{args.onnx} (10 classes, 'edgesqueeze train')" if args.onnx else "vs rest"
    print(f"digit {args.positive} {task}; train {result['train_size']} samples ({result['train_positives']} "
          f"positive), test {result['test_size']} ({result['test_positives']} positive); mean over seeds {seeds}")
    head = f"{'round':>5} {'kept':>7} | {'FN plain':>8} {'FN cd':>6} | {'FP plain':>8} {'FP cd':>6} | " \
           f"{'AUC plain':>9} {'AUC cd':>7} | {'acc plain':>9} {'acc cd':>7}"
    print(head)
    print("-" * len(head))
    for r in levels:
        p, c = r["plain"], r["class-dependent"]
        print(f"{r['round']:>5} {100 * r['weights_kept']:>6.1f}% | {p['fn']:>8.2f} {c['fn']:>6.2f} | "
              f"{p['fp']:>8.2f} {c['fp']:>6.2f} | {p['auc']:>9.4f} {c['auc']:>7.4f} | "
              f"{p['accuracy']:>9.4f} {c['accuracy']:>7.4f}")
    if args.ablation:
        print("ablation (FN / AUC): " + ", ".join(f"{name}" for name in list(runs)[2:]))
        for r in levels:
            print(f"{r['round']:>5} {100 * r['weights_kept']:>6.1f}% | " + " | ".join(
                f"{r[name]['fn']:>6.2f} {r[name]['auc']:.4f}" for name in list(runs)[2:]))
    print(f"[{result['seconds']} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
