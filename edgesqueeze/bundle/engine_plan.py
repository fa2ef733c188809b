"""Which model and which trtexec flags build the engine for a target's TensorRT version.

The flags differ between TensorRT 8.2, 8.4+, 10.x and the strongly typed stacks
(shared/TENSORRT.md, "trtexec flags that change between versions"):

======================  ==========================  ==============================  ==========================
need                    8.2 (JetPack 4.6)           8.4 - 10.12                     10.13+ / 11 (JetPack 7)
======================  ==========================  ==============================  ==========================
workspace               ``--workspace=N``           ``--memPoolSize=workspace:N``   same
plugin library          ``--plugins=lib``           8.x ``--plugins``; 10.x         same
                                                    ``--staticPlugins`` or
                                                    ``--dynamicPlugins``
INT8                    FP32 model + ``--int8       8.x: cache; 10.x: QDQ model     QDQ model only,
                        --calib=cache``             + ``--int8`` (cache optional)   ``--stronglyTyped``
FP16                    ``--fp16``                  ``--fp16``                      FP16 model, ``--stronglyTyped``
build only              ``--buildOnly``             8.x ``--buildOnly``, 10.x       ``--skipInference``
                                                    ``--skipInference``
dynamic-shape profile   ``--minShapes --optShapes   same                            same
                        --maxShapes`` (``--shapes``
                        at inference)
calibration profile     ``--optShapesCalib``        same (10.x also                 none (no calibration)
                                                    ``--calibProfile=N``)
======================  ==========================  ==============================  ==========================

TensorRT 11 removes ``--fp16``, ``--int8`` and ``--calib``; JetPack 7 ships 10.13+ where they are
deprecated, so the bundle goes straight to the strongly typed path there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from packaging.version import Version

from ..backends.trt_plan import MEMPOOL_FROM, STRONGLY_TYPED_FROM, TRT10, strongly_typed
from ..backends.trt_profile import shapes_spec
from ..errors import UnsupportedError

DEFAULT_WORKSPACE_MIB = 1024
CALIB_PLACEHOLDER = "{calib}"
WORKSPACE_PLACEHOLDER = "{mib}"
STATIC_OR_DYNAMIC = "static-or-dynamic"  # 10.x: --staticPlugins or --dynamicPlugins, from the library's symbols


def _flag_row(since: Version) -> Dict[str, Optional[str]]:
    strong = strongly_typed(str(since))  # from 10.13 the weak-typing flags are not used (gone in 11)
    return {
        "since": str(since),
        "workspace": (f"--memPoolSize=workspace:{WORKSPACE_PLACEHOLDER}" if since >= MEMPOOL_FROM
                      else f"--workspace={WORKSPACE_PLACEHOLDER}"),
        "build_only": "--skipInference" if since >= TRT10 else "--buildOnly",
        "plugins": STATIC_OR_DYNAMIC if since >= TRT10 else "--plugins",
        "strongly_typed": "--stronglyTyped" if strong else None,
        "fp16": None if strong else "--fp16",
        "int8": None if strong else "--int8",
        "calib": None if strong else f"--calib={CALIB_PLACEHOLDER}",
        # dynamic inputs: the build profile (every release), inference shapes, and the calibration profile of
        # implicit INT8 (trtexec 8.x-10.x --optShapesCalib sets min = opt = max; 11 has no calibration)
        "min_shapes": "--minShapes", "opt_shapes": "--optShapes", "max_shapes": "--maxShapes", "shapes": "--shapes",
        "calib_shapes": None if strong else "--optShapesCalib",
    }


# The trtexec flag table: one row per TensorRT version range (a row holds from ``since`` to the next row).
# build_engine.sh is generated from the row of the target's version; the manifest carries the whole table
# (``tensorrt.trtexec_flags``) so the on-device runner picks the row of the device's own trtexec.
TRTEXEC_FLAGS: List[Dict[str, Optional[str]]] = [
    _flag_row(v) for v in (Version("0"), MEMPOOL_FROM, TRT10, STRONGLY_TYPED_FROM)]


def profile_flags(trt_version: str, profile: Dict[str, dict]) -> List[str]:
    """trtexec's optimization-profile flags for ``profile`` (the dynamic inputs, ``{name: {min, opt, max}}``):
    ``--minShapes/--optShapes/--maxShapes``. Empty when no input is dynamic: a static model's command is unchanged.
    """
    if not profile:
        return []
    row = trtexec_flags(trt_version)
    return [f"{row[key]}={shapes_spec(profile, sel)}"
            for key, sel in (("min_shapes", "min"), ("opt_shapes", "opt"), ("max_shapes", "max"))]


def calib_profile_flag(trt_version: str, profile: Dict[str, dict]) -> Optional[str]:
    """The calibration profile flag that goes with ``--calib`` for dynamic inputs (``--optShapesCalib=`` the opt
    shapes); None when no input is dynamic or the version does not calibrate (strongly typed)."""
    flag = trtexec_flags(trt_version)["calib_shapes"]
    return f"{flag}={shapes_spec(profile, 'opt')}" if profile and flag else None


def trtexec_flags(trt_version: str) -> Dict[str, Optional[str]]:
    """The row of :data:`TRTEXEC_FLAGS` for ``trt_version`` (placeholders ``{mib}``, ``{calib}`` unfilled)."""
    v = Version(trt_version)
    return [row for row in TRTEXEC_FLAGS if Version(row["since"]) <= v][-1]


@dataclass(frozen=True)
class EnginePlan:
    """How ``build_engine.sh`` builds the engine: the source model kind and the precision flags.

    ``model`` is the key of the bundle's ``models`` the engine is built from ("fp32", "fp16" or "int8_qdq");
    ``alt_model``/``alt_flags`` is the other INT8 route where the TensorRT version offers two (10.x: QDQ model
    by default, FP32 model + calibration cache as the alternative).
    """

    trt_version: str
    precision: str
    model: str
    precision_flags: List[str]
    uses_calib_cache: bool
    strongly_typed: bool
    workspace_flag: str
    build_only_flag: str
    plugin_flag: str  # "--plugins" (8.x) or STATIC_OR_DYNAMIC (10.x: decided from the library's symbols)
    alt_model: Optional[str] = None
    alt_flags: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form (recorded in the manifest under ``tensorrt``)."""
        return {"trt_version": self.trt_version, "precision": self.precision, "model": self.model,
                "precision_flags": list(self.precision_flags), "uses_calib_cache": self.uses_calib_cache,
                "strongly_typed": self.strongly_typed, "alt_model": self.alt_model,
                "alt_flags": list(self.alt_flags), "notes": list(self.notes)}


def plan_engine(trt_version: str, precision: str, *, fast_fp16: bool = True,
                workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> EnginePlan:
    """Decide the source model and flags for ``precision`` on TensorRT ``trt_version``.

    ``--calib`` appears as ``--calib={calib}``; the script fills in the cache path.

    Raises:
        UnsupportedError: the precision is not one of fp32, fp16, int8.
    """
    v = Version(trt_version)
    row = trtexec_flags(trt_version)
    strongly = row["strongly_typed"] is not None
    common = dict(trt_version=trt_version, precision=precision, strongly_typed=strongly,
                  workspace_flag=row["workspace"].replace(WORKSPACE_PLACEHOLDER, str(int(workspace_mib))),
                  build_only_flag=row["build_only"], plugin_flag=row["plugins"])
    if strongly:
        typed = [row["strongly_typed"]]
        if precision == "fp32":
            return EnginePlan(model="fp32", precision_flags=typed, uses_calib_cache=False, **common)
        if precision == "fp16":
            return EnginePlan(model="fp16", precision_flags=typed, uses_calib_cache=False,
                              notes=["strongly typed: the FP16 model's types decide each layer's precision"],
                              **common)
    if precision == "fp32":
        return EnginePlan(model="fp32", precision_flags=[], uses_calib_cache=False, **common)
    if precision == "fp16":
        return EnginePlan(model="fp32", precision_flags=[row["fp16"]], uses_calib_cache=False, **common)
    if precision != "int8":
        raise UnsupportedError(f"unknown precision '{precision}' for a TensorRT engine")
    if strongly:
        if fast_fp16:  # layers without Q/DQ run in the type the model gives them: give them FP16
            return EnginePlan(model="int8_qdq_fp16", precision_flags=typed, uses_calib_cache=False,
                              notes=["strongly typed: precision comes from the QDQ model alone (TensorRT 11 has no "
                                     "--int8/--calib); its FP16 base runs the layers without Q/DQ in FP16"],
                              **common)
        return EnginePlan(model="int8_qdq", precision_flags=typed, uses_calib_cache=False,
                          notes=["strongly typed: precision comes from the QDQ model alone "
                                 "(TensorRT 11 has no --int8/--calib)"], **common)
    fp16 = [row["fp16"]] if fast_fp16 else []
    cache_flags = [row["int8"]] + fp16 + [row["calib"]]
    if v >= TRT10:
        return EnginePlan(model="int8_qdq", precision_flags=[row["int8"]] + fp16, uses_calib_cache=False,
                          alt_model="fp32", alt_flags=cache_flags,
                          notes=["explicit quantization from the QDQ model; ESQ_INT8_SOURCE=cache uses the FP32 "
                                 "model and the calibration cache instead"], **common)
    return EnginePlan(model="fp32", precision_flags=cache_flags, uses_calib_cache=True,
                      notes=["implicit quantization: TensorRT 8.x reads the entropy calibration cache"], **common)
