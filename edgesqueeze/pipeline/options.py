"""The build's options: one frozen object, validated once, before anything is written.

:func:`make_options` turns ``build``'s keyword arguments into a :class:`BuildOptions`: the target's
:class:`~edgesqueeze.devices.DeviceProfile` resolved once, the precision resolved against it, the INT8 options as
the :class:`~edgesqueeze.quant.run.QuantOptions` that ``quantize`` uses too, and the output folder checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from ..backends.trt_profile import parse_profile_flags
from ..bundle.writer import check_out_dir
from ..devices import DeviceProfile, get_profile
from ..errors import DeviceError, InputError, MissingDependencyError, UnsupportedError
from ..fileio import PathLike, refuse_overwrite
from ..model import parse_input_shapes
from ..precision import AUTO, PRECISION_CHOICES, Precision
from ..quant import resolve_precision
from ..quant.run import QuantOptions
from .support import DWSEP_PASS, fusion_deferred, have, local_trt_reason

SPARSITY_CHOICES = ("2:4",)
LOCAL_ENGINE_CHOICES = ("auto", "on", "off")
DEPLOY_KIND = {Precision.INT8: "int8_qdq", Precision.FP16: "fp16", Precision.FP32: "fp32"}  # bundle model keys


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``build`` was asked, checked: see :func:`edgesqueeze.pipeline.build` for each field's meaning."""

    model_path: Path
    profile: DeviceProfile
    out_dir: Path
    requested: str  # "auto" or a precision name, as asked
    precision: Precision  # what is built
    fallback_note: Optional[str]  # why auto did not choose INT8, said once the input is known good
    quant: QuantOptions
    calib: Optional[str] = None
    calib_limit: Optional[int] = None
    val: Optional[str] = None
    val_limit: Optional[int] = None
    sparsity: Optional[str] = None
    input_shapes: Optional[dict] = None  # concrete shapes for checks (--input)
    static: bool = False  # pin the models' inputs to static shapes (--static)
    passes: Optional[Tuple[str, ...]] = None
    skip_passes: Tuple[str, ...] = ()
    optimize: bool = True
    dla: bool = False
    workspace_mib: int = 1024
    trt_reason: Optional[str] = None  # why no local TensorRT engine is built (None: one is)
    archive: bool = False
    force: bool = False
    max_accuracy_drop: float = 0.01
    strict: bool = False  # a validation that loses more than max_accuracy_drop is an error (exit 7), no bundle
    sign_key: Optional[str] = None  # an SSH key: sign the bundle's manifest (``edgesqueeze sign``)
    shape_profile: Optional[dict] = None  # --min/--opt/--max-shapes: {input: {"min", "opt", "max"}}

    @property
    def calib_used(self) -> bool:
        """True when the calibration data is read (INT8 with real data)."""
        return self.precision is Precision.INT8 and self.calib is not None and str(self.calib) != "random"

    @property
    def deploy_kind(self) -> str:
        """The bundle model that is deployed: ``int8_qdq``, ``fp16`` or ``fp32``."""
        return DEPLOY_KIND[self.precision]

    @property
    def calib_name(self) -> Optional[str]:
        """The calibration data's file name, as the manifest records it."""
        return None if self.calib is None else Path(str(self.calib)).name

    @property
    def archive_path(self) -> Path:
        """``<out_dir>.tar.gz`` next to the bundle folder."""
        return self.out_dir.parent / f"{self.out_dir.resolve().name}.tar.gz"

    @property
    def late_fusion(self) -> bool:
        """True when the depthwise-separable fusion waits until after the compress stage: compression must see
        the pointwise convolutions before they disappear into DepthwiseSeparableConv nodes."""
        return bool(self.sparsity) and self.optimize and fusion_deferred(self.profile, self.passes, self.skip_passes)

    @property
    def early_skip(self) -> Tuple[str, ...]:
        """The passes the optimize stage skips (the asked ones, plus the late fusion's)."""
        return self.skip_passes + ((DWSEP_PASS,) if self.late_fusion else ())


def make_options(model_path: PathLike, target: str, out_dir: PathLike, *, precision: str = AUTO,
                 calib: Optional[str] = None, quant: QuantOptions, sparsity: Optional[str] = None,
                 input_shapes=None, local_engine: str = "auto", dla: bool = False, archive: bool = False,
                 force: bool = False, passes: Optional[Sequence[str]] = None, skip_passes: Sequence[str] = (),
                 min_shapes: Optional[str] = None, opt_shapes: Optional[str] = None,
                 max_shapes: Optional[str] = None, **rest) -> BuildOptions:
    """Check ``build``'s arguments (in the order a user meets the errors) and return the frozen options.

    ``quant`` holds the INT8 options (checked when it was made); ``min_shapes``/``opt_shapes``/``max_shapes`` are
    the TensorRT optimization profile in trtexec's syntax (``images:1x3x640x640,...``); ``rest`` are the plain
    fields of :class:`BuildOptions`.

    Raises:
        InputError: an unknown precision, sparsity or option value; INT8 without ``calib``; an output folder or
            archive that would be overwritten. UnsupportedError: the target cannot run the precision or DLA.
        MissingDependencyError, DeviceError: ``local_engine="on"`` where no engine can be built.
    """
    profile = get_profile(target)
    requested, resolved, note = _precision(profile, precision, calib)
    if sparsity is not None and sparsity not in SPARSITY_CHOICES:
        raise InputError(f"unknown --sparsity '{sparsity}'; choose {', '.join(SPARSITY_CHOICES)}")
    if dla and not profile.dla_cores:
        raise UnsupportedError(f"{profile.name} has no DLA; drop --dla", hint="xavier-nx, agx-xavier, orin-nx and "
                               "agx-orin have DLA cores")
    shape_profile = parse_profile_flags(min_shapes, opt_shapes, max_shapes) or None
    trt_reason = _engine_reason(local_engine)
    if isinstance(input_shapes, (list, tuple, str)):
        input_shapes = parse_input_shapes(input_shapes)
    options = BuildOptions(Path(model_path), profile, Path(out_dir), requested, resolved, note, quant, calib=calib,
                           sparsity=sparsity, input_shapes=input_shapes, dla=dla, trt_reason=trt_reason,
                           archive=archive, force=force, passes=tuple(passes) if passes else None,
                           skip_passes=tuple(skip_passes), shape_profile=shape_profile, **rest)
    if options.sign_key is not None and not Path(options.sign_key).expanduser().is_file():
        raise InputError("no such SSH key file for --sign", path=str(options.sign_key))
    refuse_overwrite(options.out_dir, options.model_path)
    check_out_dir(options.out_dir, force=force)  # before any work; checked again when the bundle is written
    if archive and options.archive_path.exists() and not force:
        raise InputError("the archive already exists", path=str(options.archive_path),
                         hint="pass --force to replace it")
    return options


def _precision(profile: DeviceProfile, precision: str, calib) -> Tuple[str, Precision, Optional[str]]:
    """``(requested, built, note)``: auto resolves to the target's best; INT8 without data falls back (with a note)
    under auto and is an error when asked for."""
    requested = str(precision or AUTO).lower()
    if requested not in PRECISION_CHOICES:
        raise InputError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISION_CHOICES)}")
    resolved = Precision(resolve_precision(profile, requested))
    if resolved is not Precision.INT8 or calib is not None:
        return requested, resolved, None
    if requested == Precision.INT8:
        raise InputError("--precision int8 needs calibration data", hint="give --calib calib.npz "
                         "(or --calib random for a smoke test whose accuracy means nothing)")
    fallback = Precision.FP16 if profile.supports("fp16") else Precision.FP32
    return requested, fallback, f"INT8 needs calibration data (--calib); auto chose {fallback} instead"


def _engine_reason(local_engine: str) -> Optional[str]:
    """Why no local TensorRT engine is built (None: one is); ``on`` where none can be built is an error."""
    if local_engine not in LOCAL_ENGINE_CHOICES:
        raise InputError(f"local_engine must be auto, on or off, not '{local_engine}'")
    reason = local_trt_reason() if local_engine != "off" else "local engine off"
    if local_engine == "on" and reason:
        if not have("tensorrt"):
            raise MissingDependencyError("tensorrt", "trt", "building a local engine (--local-engine on)")
        raise DeviceError(f"--local-engine on: {reason}")
    return reason
