"""What the build stages share: the mutable :class:`BuildState` and the frozen :class:`StageRecord` each returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import onnx

from .progress import Bar, Progress

DONE, SKIPPED = "done", "skipped"


@dataclass(frozen=True)
class StageRecord:
    """What one stage did: ``status`` done or skipped (with its ``reason``), a one-line ``detail`` for the
    progress line, the ``seconds`` it took, its JSON-ready ``payload`` (the summary's ``stages[name]``: model
    counts, calibration, files...), the top-level ``summary`` entries it contributes (latency, accuracy, the
    bundle's models and sizes) and ``warnings`` said after its progress line."""

    name: str
    status: str
    detail: str = ""
    reason: Optional[str] = None
    seconds: float = 0.0
    payload: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in (DONE, SKIPPED):
            raise ValueError(f"stage status must be done or skipped, not {self.status!r}")
        object.__setattr__(self, "payload", MappingProxyType(dict(self.payload)))
        object.__setattr__(self, "summary", MappingProxyType(dict(self.summary)))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    def to_dict(self) -> dict:
        """The stage's entry in the summary's ``stages`` (and ``--json``)."""
        return {"status": self.status, **({"reason": self.reason} if self.reason else {}), **self.payload,
                "seconds": self.seconds}

    @classmethod
    def from_info(cls, name: str, info: dict, detail: str) -> "StageRecord":
        """A record from a helper's info dict (``status``, optional ``reason``, the rest is payload)."""
        payload = dict(info)
        return cls(name, payload.pop("status"), detail, payload.pop("reason", None), payload=payload)


@dataclass
class BuildState:
    """The models and facts the stages have produced so far; each stage reads what earlier ones left."""

    progress: Progress
    log: Callable[[str], None]
    bar: Optional[Bar] = None  # the running stage's progress bar
    warnings: List[str] = field(default_factory=list)
    records: Dict[str, StageRecord] = field(default_factory=dict)
    original: Optional[onnx.ModelProto] = None  # the input model, as loaded
    model: Optional[onnx.ModelProto] = None  # the FP32 model the later stages start from
    source: Optional[dict] = None  # the input file's name, sha256 and size
    models: Dict[str, onnx.ModelProto] = field(default_factory=dict)  # bundle models by kind
    variant_sources: Dict[str, onnx.ModelProto] = field(default_factory=dict)  # before the compat lowering
    sparse_applied: bool = False
    cache_text: Optional[str] = None  # the TensorRT calibration cache
    check_feeds: Optional[dict] = None  # the feed dict checks run on (concrete shapes of a dynamic model)
    calib_info: Optional[dict] = None  # the manifest's calibration section
    accuracy: Optional[dict] = None
    profile: Optional[dict] = None  # the TensorRT optimization profile of the dynamic inputs (None: all static)
    bundle: Optional[dict] = None  # manifest, engine script and archive path, once written

    def warn(self, message: str) -> None:
        """Record a warning for the summary and log it now."""
        self.warnings.append(message)
        self.log(f"warning: {message}")
