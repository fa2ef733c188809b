"""Train the example digits CNN (seeded, < 1 minute on 2 CPU cores) and export it with edgesqueeze.

Writes into examples/digits/:
  digits_cnn.pt    trained state dict
  digits_cnn.onnx  exported, verified against torch on onnxruntime (input "input" 1x1x8x8, output "logits")
  calib.npz        200 calibration images ("input" [N,1,8,8] float32, "label" [N] int64), not used in training
  val.npz          400 validation images, same layout
Run: python examples/train_digits.py
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_model import make_model  # noqa: E402

from edgesqueeze.export import export_torch  # noqa: E402
from edgesqueeze.fileio import atomic_path, write_json_atomic  # noqa: E402


def splits(seed: int = 0):
    """Return (train, calib, val) splits of load_digits as (x [N,1,8,8] float32 in [0,1], y int64)."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return (x[600:], y[600:]), (x[400:600], y[400:600]), (x[:400], y[:400])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "digits"))
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    (xt, yt), (xc, yc), (xv, yv) = splits()
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt_t), generator=gen)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = loss_fn(model(xt_t[idx]), yt_t[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean())
    print(f"validation top-1: {acc * 100:.2f}% on {len(yv)} images")
    with atomic_path(out / "digits_cnn.pt") as tmp:
        torch.save(model.state_dict(), str(tmp))
    report = export_torch(model, torch.from_numpy(xv[:1]), out / "digits_cnn.onnx", input_names=["input"],
                          output_names=["logits"])
    print(f"exported {report['path']} (max abs error vs torch {max(report['verification']['max_abs_error']):.2e})")
    for name, (x, y) in (("calib", (xc, yc)), ("val", (xv, yv))):
        with atomic_path(out / f"{name}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, input=x, label=y)
    write_json_atomic(out / "train_report.json", {"val_top1": round(acc, 4), "epochs": args.epochs,
                                                  "train": len(yt), "calib": len(yc), "val": len(yv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
