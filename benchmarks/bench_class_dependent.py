"""Class-dependent pruning (Entezari & Saukh 2020) against plain lottery-ticket pruning on imbalanced digits.

Binary task on scikit-learn digits: one important digit is the positive class, every other digit negative; the
training set keeps only a fraction of the positives (so they are rare), the test set is left as it is. Both
methods run the same lottery-ticket schedule (train, prune a fixed fraction of the remaining weights, rewind the
survivors to W_0) down to <= 10% of the weights, from the same seeded initial network:

- plain: cross-entropy, prune the smallest |W_k|;
- class-dependent: class-balanced cross-entropy + lam * squared-hinge ranking term, prune the smallest |W_k|-|W_0|.

Prints false negatives, false positives, AUC and accuracy per sparsity level, averaged over the seeds.

    python benchmarks/bench_class_dependent.py [--positive 8] [--seeds 0,1,2] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

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
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from edgesqueeze.compress.training import lottery_ticket

    torch.set_num_threads(1)
    t0 = time.time()
    d = load_digits()
    x, digit = (d.data / 16.0).astype(np.float32), d.target
    y = (digit == args.positive).astype(np.int64)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = {"plain": (False, "magnitude"), "class-dependent": (True, "increase")}
    if args.ablation:
        variants.update({"cd-loss only": (True, "magnitude"), "increase only": (False, "increase")})
    runs = {name: [] for name in variants}
    for seed in seeds:
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=digit)
        rng = np.random.default_rng(seed)
        pos = np.flatnonzero(ytr == 1)
        drop = rng.choice(pos, size=int(round(len(pos) * (1 - args.keep_positive))), replace=False)
        keep = np.setdiff1d(np.arange(len(ytr)), drop)
        train_data, test_data = (xtr[keep], ytr[keep]), (xte, yte)

        def make():
            return torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100),
                                       torch.nn.ReLU(), torch.nn.Linear(100, 2))

        for name, (cd, criterion) in variants.items():
            _, _, hist = lottery_ticket(make, train_data, test_data, rounds=args.rounds, prune_rate=args.prune_rate,
                                        epochs=args.epochs, lr=args.lr, positive=1, class_dependent=cd,
                                        beta=args.beta, lam=args.lam, criterion=criterion, seed=seed)
            runs[name].append(hist)
        n_pos_train, n_pos_test = int(train_data[1].sum()), int(yte.sum())
    levels = []
    for k in range(args.rounds + 1):
        row = {"round": k, "weights_kept": round(1 - runs["plain"][0][k]["sparsity"], 4)}
        for name in runs:
            rs = [r[k] for r in runs[name]]
            row[name] = {m: round(float(np.mean([r[m] for r in rs])), 4) for m in ("fn", "fp", "auc", "accuracy")}
            row[name]["fn_per_seed"] = [r["fn"] for r in rs]
        levels.append(row)
    result = {"positive": args.positive, "seeds": seeds, "train_positives": n_pos_train,
              "train_size": len(train_data[1]), "test_positives": n_pos_test, "test_size": len(yte),
              "options": vars(args), "levels": levels, "seconds": round(time.time() - t0, 1)}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"digit {args.positive} vs rest; train {result['train_size']} samples ({n_pos_train} positive), "
          f"test {result['test_size']} ({n_pos_test} positive); mean over seeds {seeds}")
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
