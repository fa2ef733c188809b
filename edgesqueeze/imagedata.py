"""Image folders as calibration/evaluation data: a small preprocessing spec, decoded batch by batch.

``images/?resize=256&crop=224&mean=0.485,0.456,0.406&std=0.229,0.224,0.225`` (or the same keys in a
``preprocess.json`` inside the folder, or ``--preprocess`` on the command line). Class sub-folders become
labels (sorted names -> 0, 1, ...).
Images are decoded while the reader is iterated, so a large folder is never held in memory at once.
Pillow is optional: without it, opening a folder raises :class:`MissingDependencyError`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl

import numpy as np

from .datareader import DataReader, cast_dtype
from .errors import InputError, MissingDependencyError
from .model import format_shape

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Preprocess:
    """How images become input tensors.

    resize: shorter side to this many pixels before the crop (0 = resize straight to the input's H x W).
    crop: centre crop size (0 = the input's H x W). scale: pixel values are divided by it (255 -> [0, 1]).
    mean/std: per channel, applied after scaling. layout: "nchw" or "nhwc" ("auto": from the input shape).
    channels: "rgb", "bgr" or "gray" ("auto": gray for 1 channel, rgb for 3).
    """

    resize: int = 0
    crop: int = 0
    scale: float = 255.0
    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)
    layout: str = "auto"
    channels: str = "auto"

    @classmethod
    def parse(cls, text: str = "", base: Optional[dict] = None) -> "Preprocess":
        """Build from ``resize=256&crop=224&mean=0.485,0.456,0.406`` (and/or a dict from preprocess.json).

        Raises:
            InputError: an unknown key or a bad value.
        """
        values = dict(base or {})
        for key, val in parse_qsl(text, keep_blank_values=True):
            values[key] = val
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown preprocessing option '{unknown[0]}'; known: {', '.join(sorted(known))}")
        kw = {}
        try:
            for key, val in values.items():
                if key in ("resize", "crop"):
                    kw[key] = int(val)
                elif key == "scale":
                    kw[key] = float(val)
                elif key in ("mean", "std"):
                    seq = val if isinstance(val, (list, tuple)) else str(val).split(",")
                    kw[key] = tuple(float(v) for v in seq)
                else:
                    kw[key] = str(val).lower()
        except ValueError as exc:
            raise InputError(f"bad preprocessing value: {exc}") from exc
        pre = cls(**kw)
        if pre.layout not in ("auto", "nchw", "nhwc"):
            raise InputError(f"layout must be nchw or nhwc, got '{pre.layout}'")
        if pre.channels not in ("auto", "rgb", "bgr", "gray"):
            raise InputError(f"channels must be rgb, bgr or gray, got '{pre.channels}'")
        if any(s == 0 for s in pre.std) or pre.scale == 0:
            raise InputError("std and scale must be non-zero")
        return pre

    def summary(self, layout: str, c: int, h: int, w: int, mode: str) -> str:
        """What is done to every image, in one line (printed with the data's description)."""
        steps = [f"decoded as {mode if mode != 'L' else 'gray'}" + (", channels reversed to BGR"
                                                                     if self.channels == "bgr" else "")]
        if self.resize:
            steps.append(f"shorter side resized to {self.resize}")
        if self.resize or self.crop:
            steps.append(f"centre-cropped to {self.crop or w}x{self.crop or h}")
        if not (self.resize or self.crop):
            steps.append(f"resized to {w}x{h} (bilinear, aspect ratio not kept)")
        elif self.crop and (self.crop, self.crop) != (w, h):
            steps.append(f"resized to {w}x{h}")
        steps.append(f"divided by {self.scale:g}")
        if any(m != 0 for m in self.mean) or any(v != 1 for v in self.std):
            steps.append(f"mean {','.join(f'{m:g}' for m in self.mean)} subtracted, "
                         f"divided by std {','.join(f'{v:g}' for v in self.std)}")
        steps.append(layout.upper())
        return "; ".join(x for x in steps if x)

    def geometry(self, shape: Sequence[int]) -> Tuple[str, int, int, int]:
        """Return (layout, channels, H, W) for a 4-D input shape."""
        if len(shape) != 4:
            raise InputError(f"an image input must be 4-D (NCHW or NHWC), got {format_shape(shape)}")
        layout = self.layout
        if layout == "auto":
            layout = "nhwc" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"
        c, h, w = (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])
        return layout, c, h, w


class ImageFolderReader(DataReader):
    """Feeds decoded from an image folder, one batch at a time."""

    def __init__(self, inputs: Dict[str, dict], root: Path, files: List[Path], labels: Optional[np.ndarray],
                 pre: Preprocess, digest: str):
        super().__init__(inputs)
        self.root, self.pre, self._digest = root, pre, digest
        self.name, spec = next(iter(inputs.items()))
        self.dtype = spec["dtype"]
        self.layout, self.c, self.h, self.w = pre.geometry(spec["shape"])
        self.mode = "L" if (pre.channels == "gray" or (pre.channels == "auto" and self.c == 1)) else "RGB"
        if self.mode == "RGB" and self.c != 3:
            raise InputError(f"the model's input has {self.c} channels; RGB images need 3", tensor=self.name)
        self.dropped = len(files) % self.batch
        self.files = files[:len(files) - self.dropped]
        if not self.files:
            raise InputError(f"{len(files)} image(s) cannot fill one batch of {self.batch}", path=str(root))
        self.labels = None if labels is None else labels[:len(self.files)]
        self._mean = np.asarray(pre.mean, np.float32).reshape(-1)
        self._std = np.asarray(pre.std, np.float32).reshape(-1)
        self.load(self.files[0])  # fail at open, not mid-calibration, on a wrong geometry

    def load(self, path: Path) -> np.ndarray:
        """Decode and preprocess one image into the input's layout (without the batch axis)."""
        import PIL.Image as pil

        pre, h, w = self.pre, self.h, self.w
        try:
            with pil.open(path) as im:
                im = im.convert(self.mode)
                if pre.resize:
                    s = pre.resize / min(im.size)
                    im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), pil.BILINEAR)
                if pre.resize or pre.crop:
                    ch, cw = (pre.crop, pre.crop) if pre.crop else (h, w)
                    left, top = (im.size[0] - cw) // 2, (im.size[1] - ch) // 2
                    if left < 0 or top < 0:
                        raise InputError(f"image {im.size[0]}x{im.size[1]} is smaller than the crop {cw}x{ch}",
                                         path=str(path))
                    im = im.crop((left, top, left + cw, top + ch))
                if im.size != (w, h):
                    im = im.resize((w, h), pil.BILINEAR)
                arr = np.asarray(im, dtype=np.float32).reshape(h, w, self.c)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            raise InputError(f"cannot read the image: {exc}", path=str(path)) from exc
        if pre.channels == "bgr":
            arr = arr[..., ::-1]
        arr = (arr / pre.scale - self._mean) / self._std
        return arr.transpose(2, 0, 1) if self.layout == "nchw" else arr

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        for start in range(0, len(self.files), self.batch):
            batch = np.stack([self.load(f) for f in self.files[start:start + self.batch]])
            yield {self.name: cast_dtype(np.ascontiguousarray(batch), self.dtype, self.name, str(self.root))}

    def __len__(self) -> int:
        return len(self.files) // self.batch

    def describe(self, batches: bool = True) -> str:
        text = self._describe_counted(str(self.root), len(self.files), "images", batches)
        return f"{text} (each image: {self.pre.summary(self.layout, self.c, self.h, self.w, self.mode)})"

    def sha256(self) -> str:
        return self._hash(self._digest, len(self.files))


def image_folder_reader(path: Path, query: str, inputs: Dict[str, dict],
                        limit: Optional[int]) -> ImageFolderReader:
    """Open an image folder for a one-input model (see the module docstring for the spec).

    Raises:
        MissingDependencyError: Pillow is not installed.
        InputError: no images, a bad spec, an image that cannot be decoded or is smaller than the crop.
    """
    try:
        import PIL.Image as probe
    except ImportError as exc:
        raise MissingDependencyError("PIL (pillow)", "images", "reading image folders") from exc
    del probe
    if len(inputs) != 1:
        raise InputError(f"an image folder feeds a one-input model; this one has {len(inputs)}", path=str(path))
    base = None
    cfg = path / "preprocess.json"
    if cfg.exists():
        try:
            base = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot parse preprocess.json: {exc}", path=str(cfg)) from exc
    pre = Preprocess.parse(query, base)
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", path=str(path))
    classes = sorted({p.parent.relative_to(path).as_posix() for p in files})
    if limit is not None:
        if int(limit) <= 0:
            raise InputError(f"--limit must be positive, got {limit}")
        files = files[:int(limit)]
    digest = hashlib.sha256(json.dumps(asdict(pre), sort_keys=True).encode())
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode())
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    labels = None
    if classes != ["."]:
        index = {name: k for k, name in enumerate(classes)}
        labels = np.asarray([index[f.parent.relative_to(path).as_posix()] for f in files], np.int64)
    return ImageFolderReader(inputs, path, files, labels, pre, digest.hexdigest())
