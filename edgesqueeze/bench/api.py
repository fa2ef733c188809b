"""``bench``: the Python function behind ``edgesqueeze bench`` (a model file or a bundle folder, locally)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Tuple

from ..backends import get_runner
from ..backends.trt_profile import check_profile, covering_profile
from ..data import open_data
from ..errors import InputError
from ..fileio import sha256_file
from ..model import input_specs, load_model
from .harness import run_benchmark


def resolve_model(path, backend: str = "ort") -> Tuple[Path, dict]:
    """Resolve a model file or a bundle folder to ``(model path, bundle info)``.

    A bundle's ``manifest.json`` names the model under ``models.deploy`` (else ``models.fp32``) and the
    target under ``target`` (a profile dict with ``name``, or a name). For TensorRT the bundle's explicit
    variant is used (``tensorrt.engine_models``): custom nodes without functions when a plugin library
    (``plugins/**/*.so``) was built, functions inlined otherwise; ``bundle["variant"]`` says which.

    Raises:
        InputError: missing path, a folder without manifest.json, or a manifest naming a missing model.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", path=str(p))
    if p.is_file():
        return p, {}
    manifest = p / "manifest.json"
    if not manifest.exists():
        raise InputError("folder has no manifest.json: not an edgesqueeze bundle", path=str(p),
                         hint="give a bundle folder from 'edgesqueeze build' or an .onnx file")
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"manifest.json is not JSON: {exc}", path=str(manifest)) from exc
    models = m.get("models") or {}
    rel = models.get("deploy") or models.get("fp32")
    if not rel:
        raise InputError("manifest.json names no model (models.deploy / models.fp32)", path=str(manifest))
    model = p / rel
    if not model.exists():
        raise InputError(f"the bundle's model {rel} is missing", path=str(p), hint="edgesqueeze verify " + str(p))
    target = m.get("target")
    name = target.get("name") if isinstance(target, dict) else target
    calib = p / "calib" / "calibration.cache"
    plugins = sorted(str(x) for x in (p / "plugins").glob("**/*.so"))
    source = (m.get("source") or {}).get("name")
    info = {"bundle": str(p), "target": name, "source": Path(source).stem if source else p.name,
            "precision": m.get("precision"), "calibration": str(calib) if calib.exists() else None,
            "plugins": plugins, "variant": rel}
    trt_info = m.get("tensorrt") or {}
    engines = trt_info.get("engine_models") or {}
    if backend == "trt" and engines:
        key = f"{trt_info.get('model', 'fp32')}.{'plugin' if plugins else 'inlined'}"
        if engines.get(key) and (p / engines[key]).exists():
            model = p / engines[key]
            info["variant"] = f"{engines[key]} ({'plugin library loaded' if plugins else 'custom ops inlined'})"
    return model, info


def bench(path, *, backend: str = "ort", iterations: int = 100, duration: Optional[float] = None,
          warmup: int = 10, warmup_s: Optional[float] = None, batch_sizes: Sequence[int] = (1,),
          power: str = "auto", target: Optional[str] = None,
          data: Optional[str] = None, threads: Optional[int] = None, input_shapes=None, progress=None,
          power_interval_ms: float = 50.0, idle_s: Optional[float] = None, announce=None,
          shapes: Optional[Sequence[dict]] = None, **runner_opts) -> dict:
    """Benchmark a model file or a bundle on this machine and return the results dict.

    Args:
        path: ``model.onnx`` or a bundle folder.
        backend: ``ort`` (CPU, default) or ``trt``.
        iterations / duration: timed iterations, or seconds. warmup / warmup_s: warm-up iterations, or seconds.
        batch_sizes: batch sizes to sweep. power: probe name (``auto`` picks what exists).
        target: device profile for the roofline (default: this CPU for ``ort``; the bundle's target for ``trt``).
        data: ``.npz``/``.npy``/image folder (see :func:`edgesqueeze.data.open_data`) or None for random data.
        threads: onnxruntime threads. input_shapes: ``{name: dims}`` for dynamic inputs.
        announce: called with no argument once the model and data are loaded, before timing starts.
        shapes: input shapes to sweep instead of batch sizes (``[{input: dims}, ...]``, e.g. from
            :func:`~edgesqueeze.backends.trt_profile.parse_shape_sweep`) for a model with dynamic inputs; the
            TensorRT engine gets one optimization profile covering them all.
        **runner_opts: more runner options (e.g. ``optimization`` for ort, default ``"all"`` here as a deployment
            runs it; ``dla_core`` for trt).

    Raises:
        InputError, UnsupportedError, MissingDependencyError: as the parts raise them.
    """
    model_path, bundle = resolve_model(path, backend)
    model = load_model(model_path, input_shapes, require_static=not shapes)
    if shapes:
        runner_opts.update(_shape_sweep_options(model, shapes, backend))
    if backend == "trt":
        runner_opts.setdefault("precision", bundle.get("precision") or "auto")
        runner_opts.setdefault("target", target or bundle.get("target"))
        if bundle.get("calibration"):
            runner_opts.setdefault("calibration", bundle["calibration"])
        if bundle.get("plugins"):
            runner_opts.setdefault("plugins", bundle["plugins"])
        runner = get_runner("trt", model_path, **runner_opts)
        runner.model = model
    else:
        if backend == "ort":
            runner_opts.setdefault("optimization", "all")  # as a deployment runs it
        runner = get_runner(backend, model, threads=threads, **runner_opts)
        runner.path = str(model_path)
    if shapes:  # random inputs at each swept shape; the model's dtypes from one feed at the first shape
        reader, described = [shape_feed(model, shapes[0])], "random (seed 0) at each --shapes shape"
    else:
        reader, described = _data(data, model)
    if announce:
        announce()
    model_info = None
    if bundle:
        variant = model_path.stem[len("model."):] if model_path.stem.startswith("model.") else model_path.stem
        model_info = {"name": f"{bundle['source']}:{variant}", "path": str(model_path),
                      "sha256": sha256_file(model_path)}
    prof = target or (bundle.get("target") if backend == "trt" else None)
    result = run_benchmark(runner, reader, warmup=warmup, warmup_s=warmup_s, iterations=iterations,
                           duration=duration,
                           batch_sizes=batch_sizes, power=power, profile=prof, progress=progress,
                           power_interval_ms=power_interval_ms, idle_s=idle_s, data_description=described,
                           model_info=model_info, shapes=shapes)
    if bundle:
        result["options"]["bundle"] = bundle["bundle"]
        result["options"]["bundle_target"] = bundle.get("target")
        result["options"]["bundle_model"] = bundle.get("variant")
    result["options"]["threads"] = threads
    return result


def _shape_sweep_options(model, shapes, backend: str) -> dict:
    """Check the swept shapes against the model's inputs; TensorRT gets the profile that covers them."""
    specs = input_specs(model)
    missing = [n for n in specs if n not in shapes[0]]
    if missing:
        raise InputError(f"--shapes leaves out input(s) {', '.join(missing)}; give every input: "
                         + ",".join(f"{n}:DIMS" for n in specs))
    profile = covering_profile(shapes)
    check_profile(specs, profile)
    return {"shape_profiles": profile} if backend == "trt" else {}


def shape_feed(model, shape) -> dict:
    """One feed dict of ``shape`` ({input: dims}) with the model's input dtypes (zeros: it carries the dtypes)."""
    import numpy as np

    return {n: np.zeros([int(d) for d in shape[n]], dtype=spec["dtype"]) for n, spec in input_specs(model).items()
            if n in shape}


def _data(spec, model):
    reader = open_data(spec, model, limit=64 if spec else 8)
    return reader, reader.describe()
