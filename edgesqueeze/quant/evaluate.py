"""Evaluate a model on data: top-1 accuracy (with labels) and output error against a reference model."""
from __future__ import annotations

import sys
from typing import Dict, Optional, Union

import numpy as np
import onnx

from ..errors import InputError

ModelLike = Union[onnx.ModelProto, str, bytes]


class _ErrorAccumulator:
    """Streaming max/mean absolute error and the reference's scale, per output."""

    def __init__(self):
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.ref_scale = 0.0
        self.sq_err = 0.0
        self.sq_ref = 0.0
        self.nonfinite = 0

    def update(self, ref: np.ndarray, act: np.ndarray) -> None:
        r = np.asarray(ref, np.float64)
        a = np.asarray(act, np.float64)
        if r.shape != a.shape:
            raise InputError(f"output shapes differ from the reference: {list(a.shape)} vs {list(r.shape)}")
        bad = ~np.isfinite(a)
        self.nonfinite += int(bad.sum())
        d = np.abs(np.where(bad, 0.0, a) - r)
        self.max_abs = max(self.max_abs, float(d.max()) if d.size else 0.0)
        self.sum_abs += float(d.sum())
        self.sq_err += float((d ** 2).sum())
        self.sq_ref += float((r ** 2).sum())
        self.count += d.size
        self.ref_scale = max(self.ref_scale, float(np.abs(r).max()) if r.size else 0.0)

    def result(self) -> dict:
        sqnr = 10 * np.log10(self.sq_ref / self.sq_err) if self.sq_err > 0 and self.sq_ref > 0 else None
        return {"max_abs": self.max_abs, "mean_abs": self.sum_abs / max(1, self.count),
                "max_rel": self.max_abs / max(self.ref_scale, 1e-12), "ref_scale": self.ref_scale,
                "sqnr_db": None if sqnr is None else float(sqnr), "nonfinite": self.nonfinite}


def _session(model: ModelLike):
    from ..ortutil import make_session

    return make_session(model)


def evaluate(model: ModelLike, reader, reference: Optional[ModelLike] = None, *, output: Optional[str] = None,
             progress: bool = False) -> Dict[str, object]:
    """Run ``model`` over ``reader`` and measure it.

    Args:
        model: the model to evaluate (ModelProto, path or bytes), run on onnxruntime CPU.
        reader: data reader (:func:`edgesqueeze.data.open_data`); its ``labels`` give top-1.
        reference: a model to compare outputs against (e.g. the FP32 original), or None.
        output: the output holding class scores for top-1 (default: the first output).
        progress: show a progress bar.

    Returns:
        ``{"top1": accuracy in percent or None (no labels), "n": samples, "output_error": {output: {max_abs,
        mean_abs, max_rel, ref_scale, sqnr_db, nonfinite}} or None, "agreement": percent of samples whose top-1
        class equals the reference's (or None), "data": reader.describe(), "random": bool}``.

    Raises:
        InputError: labels that do not fit the outputs, outputs whose shapes differ from the reference's.
        UnsupportedError: onnxruntime cannot run a model.
    """
    sess = _session(model)
    ref_sess = _session(reference) if reference is not None else None
    names = [o.name for o in sess.get_outputs()]
    score = output or names[0]
    if score not in names:
        raise InputError(f"no output named '{score}'; the outputs are: {', '.join(names)}")
    if ref_sess is not None:
        missing = [n for n in names if n not in {o.name for o in ref_sess.get_outputs()}]
        if missing:
            raise InputError(f"the reference model has no output '{missing[0]}' to compare with")
    labels = getattr(reader, "labels", None)
    correct = agree = n = 0
    errors: Dict[str, _ErrorAccumulator] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(reader), desc="evaluating", unit="batch", leave=False, disable=not sys.stderr.isatty())
    for feed in reader:
        outs = dict(zip(names, sess.run(names, feed)))
        scores = np.asarray(outs[score])
        batch = scores.shape[0] if scores.ndim else 1
        pred = scores.reshape(batch, -1).argmax(axis=1)
        if labels is not None:
            if n + batch > len(labels):
                raise InputError(f"more samples than labels ({len(labels)})")
            correct += int((pred == labels[n:n + batch]).sum())
        if ref_sess is not None:
            ref = dict(zip(names, ref_sess.run(names, feed)))
            for name in names:
                errors.setdefault(name, _ErrorAccumulator()).update(ref[name], outs[name])
            ref_pred = np.asarray(ref[score]).reshape(batch, -1).argmax(axis=1)
            agree += int((pred == ref_pred).sum())
        n += batch
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if n == 0:
        raise InputError("the evaluation data holds no batch")
    return {"top1": 100.0 * correct / n if labels is not None else None, "n": n,
            "output_error": {k: v.result() for k, v in errors.items()} if ref_sess is not None else None,
            "agreement": 100.0 * agree / n if ref_sess is not None else None,
            "data": reader.describe() if hasattr(reader, "describe") else None,
            "random": bool(getattr(reader, "is_random", False))}
