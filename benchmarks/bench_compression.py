"""Deep Compression on a LeNet-300-100-style MLP trained on scikit-learn digits (seeded).

Trains the dense 64-300-100-10 MLP with torch, writes it as a dense fp32 ONNX file, prunes it with Han et al.'s
prune / fine-tune cycle (global magnitude threshold), shares the weights with per-layer k-means (5 bits for
fully-connected layers, biases too), fine-tunes the shared values themselves (Han et al.'s trained quantization:
the recovery step; --no-trained-quantization skips it, --distill adds distillation from the dense network to every
fine-tuning), packs the result as a Huffman-coded .esq file, unpacks it again and checks that the weights come back
bit for bit and that onnxruntime gives the same accuracy. Prints the size table.

Goal: the .esq file at least 30x smaller than the dense fp32 ONNX, at most 1 point of test accuracy lost.

    python benchmarks/bench_compression.py [--seed 0] [--out-dir DIR] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40, help="dense training epochs")
    ap.add_argument("--schedule", default="0.5,0.7,0.8,0.87,0.92", help="sparsity after each prune step")
    ap.add_argument("--finetune-epochs", type=int, default=15, help="fine-tuning epochs after each prune step")
    ap.add_argument("--fc-bits", type=int, default=5)
    ap.add_argument("--bias-bits", type=int, default=5)
    ap.add_argument("--trained-quantization", action=argparse.BooleanOptionalAction, default=True,
                    help="fine-tune the shared values after k-means (Han et al.'s trained quantization)")
    ap.add_argument("--tq-epochs", type=int, default=5, help="epochs of centroid fine-tuning")
    ap.add_argument("--distill", action=argparse.BooleanOptionalAction, default=False,
                    help="recovery: fine-tune with Hinton distillation from the dense network (T^2 KL on its "
                         "softened logits) on top of cross-entropy")
    ap.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    ap.add_argument("--out-dir", default=None, help="keep dense.onnx, pruned.onnx, shared.onnx, model.esq here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from edgesqueeze.cli.pack import size_table
    from edgesqueeze.compress import share_weights
    from edgesqueeze.compress.esq import pack, unpack
    from edgesqueeze.compress.torch_onnx import sequential_to_onnx
    from edgesqueeze.compress.training import finetune_shared, iterative_pruning, predict, train
    from edgesqueeze.ortutil import run_model

    torch.set_num_threads(1)  # tiny network: one thread is fastest and deterministic
    t0 = time.time()
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=args.seed, stratify=y)
    torch.manual_seed(args.seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100),
                              torch.nn.ReLU(), torch.nn.Linear(100, 10))
    train(net, (xtr, ytr), epochs=args.epochs, lr=1e-3, batch_size=32, seed=args.seed)
    shape = [len(xte), 64]
    dense = sequential_to_onnx(net, shape)
    schedule = [float(s) for s in args.schedule.split(",")]
    teacher = predict(net, xtr) if args.distill else None
    net, masks, history = iterative_pruning(net, (xtr, ytr), (xte, yte), schedule=schedule,
                                            epochs=args.finetune_epochs, lr=5e-4, batch_size=32, layerwise=False,
                                            seed=args.seed, teacher=teacher, temperature=args.temperature)
    pruned = sequential_to_onnx(net, shape)
    if args.trained_quantization:  # Han et al.: fine-tune the shared values themselves
        finetune_shared(net, (xtr, ytr), fc_bits=args.fc_bits, epochs=args.tq_epochs, lr=1e-4, batch_size=32,
                        seed=args.seed, teacher=teacher, temperature=args.temperature)
        pruned_for_sharing = sequential_to_onnx(net, shape)
    else:
        pruned_for_sharing = pruned
    shared, share_report = share_weights(pruned_for_sharing, fc_bits=args.fc_bits, bias_bits=args.bias_bits)
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="esq-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"dense.onnx": dense.SerializeToString(deterministic=True),
             "pruned.onnx": pruned.SerializeToString(deterministic=True),
             "shared.onnx": shared.SerializeToString(deterministic=True)}
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    dense_bytes = len(files["dense.onnx"])
    esq, report = pack(shared, dense_onnx_bytes=dense_bytes)
    (out_dir / "model.esq").write_bytes(esq)
    restored = unpack(out_dir / "model.esq")
    exact = restored.SerializeToString(deterministic=True) == files["shared.onnx"]

    def acc(model):
        return float(np.mean(run_model(model, {"input": xte})["logits"].argmax(1) == yte))

    accuracy = {"dense": acc(dense), "pruned": acc(pruned), "shared": acc(shared), "unpacked": acc(restored)}
    drop = (accuracy["dense"] - accuracy["unpacked"]) * 100
    result = {"seed": args.seed, "schedule": schedule, "distill": args.distill,
              "trained_quantization": args.trained_quantization, "finetune_epochs": args.finetune_epochs,
              "accuracy": accuracy, "accuracy_drop_points": round(drop, 2),
              "dense_onnx_bytes": dense_bytes, "esq_bytes": len(esq), "ratio": round(dense_bytes / len(esq), 2),
              "roundtrip_exact": exact, "kept_per_layer": {n: round(float(m.mean()), 4) for n, m in masks.items()},
              "pruning_history": history, "size": report, "seconds": round(time.time() - t0, 1),
              "goal_met": bool(exact and dense_bytes / len(esq) >= 30 and drop <= 1.0), "out_dir": str(out_dir)}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"LeNet-300-100-style MLP on sklearn digits (seed {args.seed}, {len(xtr)} train / {len(xte)} test)")
        for h in history:
            print(f"  prune step {h['round']}: sparsity {h['sparsity']:.3f}  test accuracy {h['accuracy']:.4f}")
        print(size_table(report))
        print(f"test accuracy: dense {accuracy['dense']:.4f}  pruned {accuracy['pruned']:.4f}  "
              f"+shared {accuracy['shared']:.4f}  unpacked {accuracy['unpacked']:.4f}  (drop {drop:.2f} points)")
        print(f"dense fp32 ONNX {dense_bytes} bytes -> .esq {len(esq)} bytes: {dense_bytes / len(esq):.1f}x; "
              f"unpack bit-exact: {exact}")
        print(f"goal (>= 30x, <= 1 point): {'met' if result['goal_met'] else 'NOT met'}  "
              f"[{result['seconds']} s; files in {out_dir}]")
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
