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
======================  ==========================  ==============================  ==========================

TensorRT 11 removes ``--fp16``, ``--int8`` and ``--calib``; JetPack 7 ships 10.13+ where they are
deprecated, so the bundle goes straight to the strongly typed path there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from packaging.version import Version

from ..errors import UnsupportedError

MEMPOOL_FROM = Version("8.4")        # --memPoolSize replaced --workspace
TRT10 = Version("10.0")              # --skipInference, --staticPlugins/--dynamicPlugins, QDQ preferred
STRONGLY_TYPED_FROM = Version("10.13")  # JetPack 7: weak typing deprecated; removed in 11
DEFAULT_WORKSPACE_MIB = 1024


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
    plugin_flag: str  # "--plugins" (8.x) or "static-or-dynamic" (10.x: decided from the library's symbols)
    alt_model: Optional[str] = None
    alt_flags: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form (recorded in the manifest under ``tensorrt``)."""
        return {"trt_version": self.trt_version, "precision": self.precision, "model": self.model,
                "precision_flags": list(self.precision_flags), "uses_calib_cache": self.uses_calib_cache,
                "strongly_typed": self.strongly_typed, "alt_model": self.alt_model,
                "alt_flags": list(self.alt_flags), "notes": list(self.notes)}


CALIB_PLACEHOLDER = "{calib}"


def plan_engine(trt_version: str, precision: str, *, fast_fp16: bool = True,
                workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> EnginePlan:
    """Decide the source model and flags for ``precision`` on TensorRT ``trt_version``.

    ``--calib`` appears as ``--calib={calib}``; the script fills in the cache path.

    Raises:
        UnsupportedError: the precision is not one of fp32, fp16, int8.
    """
    v = Version(trt_version)
    strongly = v >= STRONGLY_TYPED_FROM
    workspace = (f"--memPoolSize=workspace:{int(workspace_mib)}" if v >= MEMPOOL_FROM
                 else f"--workspace={int(workspace_mib)}")
    build_only = "--skipInference" if v >= TRT10 else "--buildOnly"
    plugin = "static-or-dynamic" if v >= TRT10 else "--plugins"
    fp16 = ["--fp16"] if fast_fp16 else []
    common = dict(trt_version=trt_version, precision=precision, strongly_typed=strongly,
                  workspace_flag=workspace, build_only_flag=build_only, plugin_flag=plugin)
    if precision == "fp32":
        return EnginePlan(model="fp32", precision_flags=["--stronglyTyped"] if strongly else [],
                          uses_calib_cache=False, **common)
    if precision == "fp16":
        if strongly:
            return EnginePlan(model="fp16", precision_flags=["--stronglyTyped"], uses_calib_cache=False,
                              notes=["strongly typed: the FP16 model's types decide each layer's precision"],
                              **common)
        return EnginePlan(model="fp32", precision_flags=["--fp16"], uses_calib_cache=False, **common)
    if precision != "int8":
        raise UnsupportedError(f"unknown precision '{precision}' for a TensorRT engine")
    cache_flags = ["--int8"] + fp16 + [f"--calib={CALIB_PLACEHOLDER}"]
    if strongly:
        if fast_fp16:  # layers without Q/DQ run in the type the model gives them: give them FP16
            return EnginePlan(model="int8_qdq_fp16", precision_flags=["--stronglyTyped"], uses_calib_cache=False,
                              notes=["strongly typed: precision comes from the QDQ model alone (TensorRT 11 has no "
                                     "--int8/--calib); its FP16 base runs the layers without Q/DQ in FP16"],
                              **common)
        return EnginePlan(model="int8_qdq", precision_flags=["--stronglyTyped"], uses_calib_cache=False,
                          notes=["strongly typed: precision comes from the QDQ model alone "
                                 "(TensorRT 11 has no --int8/--calib)"], **common)
    if v >= TRT10:
        return EnginePlan(model="int8_qdq", precision_flags=["--int8"] + fp16, uses_calib_cache=False,
                          alt_model="fp32", alt_flags=cache_flags,
                          notes=["explicit quantization from the QDQ model; ESQ_INT8_SOURCE=cache uses the FP32 "
                                 "model and the calibration cache instead"], **common)
    return EnginePlan(model="fp32", precision_flags=cache_flags, uses_calib_cache=True,
                      notes=["implicit quantization: TensorRT 8.x reads the entropy calibration cache"], **common)
