"""The precision vocabulary, written once: every verb, profile and plan spells precisions with these names.

>>> Precision("fp16") is Precision.FP16, PRECISION_CHOICES
(True, ('auto', 'fp32', 'fp16', 'int8'))
"""
from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A word of the command line's vocabulary: equal to its string, and printed (``f"{x}"``) as it."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Precision(Choice):
    """A numeric precision a target computes in; the value is the name users type (``--precision fp16``)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


AUTO = "auto"  # not a precision: "the best the target runs", resolved against a device profile
PRECISIONS = tuple(p.value for p in Precision)  # ("fp32", "fp16", "int8")
PRECISION_CHOICES = (AUTO,) + PRECISIONS  # what --precision accepts
