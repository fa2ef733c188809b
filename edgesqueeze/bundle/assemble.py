"""Put a bundle together from the pipeline's models: files, TensorRT variants, engine script, manifest."""
from __future__ import annotations

import dataclasses

from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import onnx

from ..model import model_bytes, payload_bytes
from ..plugins.sources import cmake_command, plugin_source_dir
from ..plugins.sparse_convert import route_sparse_2_4
from .engine_plan import CALIB_PLACEHOLDER, TRTEXEC_FLAGS, plan_engine, profile_flags
from .engine_script import ScriptSpec, render_build_engine_sh
from .manifest import CACHE_NAME
from .variants import custom_ops, inlined_variant, stripped_variant
from .writer import BundleWriter, model_relpaths, short_key

RUNNER_NAME = "run_on_device.py"
SCRIPT_NAME = "build_engine.sh"
#: a model whose weights pass this many bytes goes into the bundle as ``<name>.onnx`` + ``<name>.onnx.data`` (its
#: weights as external data, one file, page-aligned): over protobuf's 2 GB limit it has to, and from half of it
#: writing the model whole would hold a second copy of its weights in memory; smaller models stay one file
EXTERNAL_WEIGHT_BYTES = 1 << 30


def _custom_nodes(models: Dict[str, onnx.ModelProto]) -> bool:
    return any(custom_ops(m) for m in models.values())


def _plugin_sources() -> Optional[Path]:
    d = plugin_source_dir()
    return d if d.is_dir() and any(d.iterdir()) else None


def _cmake_args(sm: Optional[int]):
    return cmake_command(str(sm), None, source_dir="plugins", build_dir="plugins/build")[1:]


def _device_runner() -> Optional[Path]:
    p = Path(__file__).resolve().parent.parent / "deploy" / "device_runner.py"
    return p if p.is_file() else None


def assemble_bundle(out_dir, *, profile, precision: str, models: Dict[str, onnx.ModelProto], deploy: str,
                    source: dict, options: dict, versions: dict, inputs: dict, cache_text: Optional[str] = None,
                    sparsity: bool = False, dla: bool = False, workspace_mib: int = 1024, force: bool = False,
                    warn: Callable[[str], None] = lambda m: None,
                    variant_sources: Optional[Dict[str, onnx.ModelProto]] = None,
                    compat: Optional[Callable[[onnx.ModelProto], onnx.ModelProto]] = None,
                    compat_report: Optional[dict] = None,
                    shape_profile: Optional[Dict[str, dict]] = None) -> Tuple[dict, Optional[dict]]:
    """Write the bundle folder ``out_dir`` and return ``(manifest, engine script description or None)``.

    Args:
        profile: the target's DeviceProfile.
        precision: the resolved precision (fp32, fp16, int8).
        models: ``{"fp32": ..., "fp16"/"int8_qdq": ...}``; each is written to ``models/model.<kind>.onnx``.
        deploy: the kind the device runs with onnxruntime (and the manifest's ``models.deploy``).
        source, options, versions, inputs: manifest sections.
        cache_text: the TensorRT calibration cache (INT8 on a TensorRT target).
        sparsity: 2:4 was applied and the target has sparse tensor cores (adds ``--sparsity=enable``); also set
            when the models hold 2:4 SparseConv nodes and the target has sparse tensor cores (they are densified
            for TensorRT: :func:`edgesqueeze.plugins.sparse_convert.route_sparse_2_4`).
        dla: build for a DLA core. workspace_mib: builder workspace. force: replace an old bundle.
        warn: called with a message for each degraded part (no plugin sources, no device runner).
        variant_sources: the models the TensorRT variants (plugin / inlined) are derived from, when ``models``
            were lowered for the target (an IR-8 target gets plain, inlined ``models``, but TensorRT still
            gets the plugin variant); default ``models``.
        compat: ``model -> model`` applied to each TensorRT variant (the target's ONNX opset/IR limits).
        compat_report: the manifest's ``onnx_compat`` section.
        shape_profile: the TensorRT optimization profile of the deploy model's dynamic inputs
            (``{name: {"min", "opt", "max"}}``): ``build_engine.sh`` passes it to trtexec and the manifest records
            it as ``tensorrt.profile``; empty or None for a static model (nothing changes).

    Raises:
        InputError: ``out_dir`` exists and cannot be replaced.
    """
    # 2:4 SparseConv layers go to TensorRT's sparse tensor cores on sm_80+ (docs/kernels.md), not to the plugin
    variant_sources, native_2_4 = route_sparse_2_4(variant_sources or models, profile.sparse_2_4)
    sparsity = sparsity or native_2_4
    custom = _custom_nodes(variant_sources)
    rel = model_relpaths(models)
    with BundleWriter(out_dir, force=force) as w:
        written = _write_models(w, models, rel, cache_text)
        script_info = None
        tensorrt = None
        if profile.has_tensorrt:
            sources = _TrtSources(written, variant_sources, custom, compat or (lambda m: m), native_2_4)
            tensorrt, script_info = _add_engine_script(
                w, sources, profile, precision, warn=warn,
                generator=f"edgesqueeze {versions.get('edgesqueeze', '')}".strip(), sparsity=sparsity, dla=dla,
                workspace_mib=workspace_mib, shape_profile=dict(shape_profile or {}))
        _add_device_runner(w, warn)
        manifest = {
            "target": profile.to_dict(), "precision": precision, "options": options, "versions": versions,
            "models": {**rel, "deploy": rel[deploy]}, "inputs": inputs, "source": source,
            "custom_nodes": custom, "tensorrt": tensorrt,
        }
        if compat_report is not None:
            manifest["onnx_compat"] = compat_report
        manifest = w.commit(manifest)
    return manifest, script_info


@dataclasses.dataclass(frozen=True)
class _Written:
    """The models as the bundle holds them: their files, what names their engines and the calibration cache's bytes."""
    models: Dict[str, onnx.ModelProto]
    rel: Dict[str, str]                  # kind -> path inside the bundle
    identity: Dict[str, bytes]           # kind -> what names its engine (:func:`_add_model`)
    cache_bytes: Optional[bytes]


@dataclasses.dataclass(frozen=True)
class _TrtSources:
    """What TensorRT's models come from: the bundle's models, or their variants (inlined / plugin) when the
    models hold custom nodes, each lowered by ``lower`` (the target's ONNX opset/IR limits)."""
    written: _Written
    variant_sources: Dict[str, onnx.ModelProto]
    custom: bool
    lower: Callable[[onnx.ModelProto], onnx.ModelProto]
    routed_2_4: bool = False             # 2:4 SparseConv densified for TensorRT's sparse tensor cores


def _write_models(w: BundleWriter, models: Dict[str, onnx.ModelProto], rel: Dict[str, str],
                  cache_text: Optional[str]) -> _Written:
    """Write every model (sorted by kind) and the calibration cache, if any."""
    identity = {kind: _add_model(w, rel[kind], models[kind]) for kind in sorted(models)}
    cache_bytes = cache_text.encode("utf-8") if cache_text else None
    if cache_bytes:
        w.add_bytes(CACHE_NAME, cache_bytes)
    return _Written(models, rel, identity, cache_bytes)


def _add_model(w: BundleWriter, rel: str, model: onnx.ModelProto) -> bytes:
    """Write ``model`` at ``rel``, with external data when its weights pass :data:`EXTERNAL_WEIGHT_BYTES`; returns
    what names its engine (:func:`short_key`): the bytes written, or the sha256 of the model and its data file."""
    if payload_bytes(model) > EXTERNAL_WEIGHT_BYTES:
        return w.add_model(rel, model, external=True).encode("ascii")
    data = model_bytes(model)
    w.add_bytes(rel, data)
    return data


def _add_engine_script(w: BundleWriter, src: _TrtSources, profile, precision: str, *,
                       warn: Callable[[str], None], generator: str, sparsity: bool, dla: bool, workspace_mib: int,
                       shape_profile: Dict[str, dict]) -> Tuple[dict, dict]:
    """Write the TensorRT models, the plugin sources and ``build_engine.sh``; returns the manifest's
    ``tensorrt`` section and the engine script description."""
    plan = plan_engine(profile.tensorrt, precision, fast_fp16=profile.fast_fp16, workspace_mib=workspace_mib)
    if plan.model not in src.written.models and plan.model == "int8_qdq_fp16":  # no FP16-base QDQ model was made
        plan = dataclasses.replace(plan, model="int8_qdq", notes=plan.notes + [
            "no FP16-base QDQ model in the bundle: layers without Q/DQ run in FP32"])
    plugin_dir = _plugin_sources() if src.custom else None
    if src.custom and plugin_dir is None:
        warn("the model has custom nodes but the plugin sources are not available: the engine script "
             "uses the functions-inlined model only")
    if plugin_dir is not None:
        w.add_tree("plugins", plugin_dir)
    sources, engine_models = _write_engine_models(w, src, plan, plugin_dir)
    spec = ScriptSpec(target=profile.name, display_name=profile.display_name, sm=profile.sm,
                      jetpack=profile.jetpack, trt_tag=profile.trt_version_tag(), plan=plan,
                      sources=sources, calib_cache=CACHE_NAME if src.written.cache_bytes else None,
                      custom_nodes=src.custom and plugin_dir is not None, sparsity=sparsity, dla=dla,
                      workspace_mib=workspace_mib, cmake_args=_cmake_args(profile.sm) if plugin_dir else (),
                      generator=generator, profile=shape_profile)
    w.add_text(SCRIPT_NAME, render_build_engine_sh(spec), executable=True)
    return _engine_records(spec, profile, engine_models, plugin_dir)


def _write_engine_models(w: BundleWriter, src: _TrtSources, plan, plugin_dir: Optional[Path]):
    """``(sources, engine_models)``: the engine script's ``{(kind, variant): (path, key)}`` for the plan's
    model (and its alternative), writing the TensorRT variants of a model with custom nodes."""
    sources: Dict[Tuple[str, str], Tuple[str, str]] = {}
    engine_models: Dict[str, str] = {}
    for kind in [plan.model] + ([plan.alt_model] if plan.alt_model else []):
        with_cache = (kind == plan.model and plan.uses_calib_cache) or kind == plan.alt_model
        extra = src.written.cache_bytes if with_cache else None
        if src.custom:
            variants = {"inlined": src.lower(inlined_variant(src.variant_sources[kind]))}
            if plugin_dir is not None:
                variants["plugin"] = src.lower(stripped_variant(src.variant_sources[kind]))
            for variant, m in sorted(variants.items()):
                path = f"models/model.{kind}.trt_{variant}.onnx"
                data = _add_model(w, path, m)
                engine_models[f"{kind}.{variant}"] = path
                key = short_key(data, extra)
                sources[(kind, variant if plugin_dir is not None else "plain")] = (path, key)
        elif src.routed_2_4:  # no plugin node left, but TensorRT's model differs from the bundle's (dense 2:4)
            path = engine_models[kind] = f"models/model.{kind}.trt.onnx"
            data = _add_model(w, path, src.lower(src.variant_sources[kind]))
            sources[(kind, "plain")] = (path, short_key(data, extra))
        else:
            sources[(kind, "plain")] = (src.written.rel[kind], short_key(src.written.identity[kind], extra))
    return sources, engine_models


def _engine_records(spec: ScriptSpec, profile, engine_models: Dict[str, str],
                    plugin_dir: Optional[Path]) -> Tuple[dict, dict]:
    """The manifest's ``tensorrt`` section and the engine script description, for the written ``spec``."""
    plan, sources = spec.plan, spec.sources

    def fill(flags):
        return [f.replace(CALIB_PLACEHOLDER, CACHE_NAME) for f in flags]

    tensorrt = {**plan.to_dict(), "precision_flags": fill(plan.precision_flags),
                "alt_flags": fill(plan.alt_flags), "script": SCRIPT_NAME, "calibration_cache": spec.calib_cache,
                "engine_models": engine_models, "plugin_sources": "plugins" if plugin_dir else None,
                "sparsity": spec.sparsity, "dla": spec.dla, "workspace_mib": int(spec.workspace_mib),
                "version_tag": profile.trt_version_tag(), "workspace_flag": plan.workspace_flag,
                "trtexec_flags": [dict(row) for row in TRTEXEC_FLAGS]}
    if spec.profile:
        tensorrt["profile"] = spec.profile
    model_used = (sources[(plan.model, "plain")][0] if not spec.custom_nodes else
                  {v: sources[(plan.model, v)][0] for v in ("plugin", "inlined")})
    script_info = {"path": SCRIPT_NAME, "model": model_used, "flags": fill(plan.precision_flags),
                   "workspace_flag": plan.workspace_flag, "trt_version": plan.trt_version,
                   "strongly_typed": plan.strongly_typed,
                   **({"profile_flags": profile_flags(plan.trt_version, spec.profile)} if spec.profile else {})}
    return tensorrt, script_info


def _add_device_runner(w: BundleWriter, warn: Callable[[str], None]) -> None:
    runner = _device_runner()
    if runner is not None:
        w.add_bytes(RUNNER_NAME, runner.read_bytes(), executable=True)
    else:
        warn("the on-device runner (edgesqueeze/deploy/device_runner.py) is not available: "
             "the bundle has no run_on_device.py")
