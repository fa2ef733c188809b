"""Precision policy per target: ``auto`` picks what the target's GPU does fast; impossible requests fail."""
from __future__ import annotations

from typing import Optional, Union

from ..errors import InputError

from ..precision import PRECISION_CHOICES as CHOICES


def resolve_precision(target_profile: Union[None, str, object], requested: str = "auto") -> str:
    """Return the precision to build for a target.

    Args:
        target_profile: a :class:`~edgesqueeze.devices.DeviceProfile`, a profile name, or None (this CPU).
        requested: ``auto``, ``fp32``, ``fp16`` or ``int8``.

    Returns:
        ``auto``: ``int8`` where the target's GPU has INT8 in TensorRT (Xavier, Orin), ``fp16`` where it has only
        fast FP16 (TX1, Nano, TX2), ``fp32`` otherwise (TK1; the CPU unless it has VNNI). Explicit: ``requested``.

    Raises:
        InputError: an unknown precision or profile name.
        UnsupportedError: the target cannot run the explicit request (the message says why).
    """
    from ..devices import cpu_profile, get_profile

    req = str(requested or "auto").lower()
    if req not in CHOICES:
        raise InputError(f"unknown precision '{requested}'; choose one of {', '.join(CHOICES)}")
    profile = target_profile
    if profile is None:
        profile = cpu_profile()
    elif isinstance(profile, str):
        profile = get_profile(profile)
    if req == "auto":
        return profile.best_precision()
    profile.require(req)
    return req


def precision_reason(target_profile, precision: str) -> Optional[str]:
    """One sentence on why ``auto`` chose ``precision`` for the target (for build logs)."""
    p = target_profile
    name = getattr(p, "display_name", str(p))
    return {"int8": f"{name} runs INT8 in TensorRT", "fp16": f"{name} has fast FP16 but no INT8",
            "fp32": f"{name} has neither INT8 nor fast FP16 on its accelerator"}.get(precision)
