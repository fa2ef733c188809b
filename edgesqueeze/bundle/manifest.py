"""The bundle manifest: what a bundle holds, for which target, and the sha256 of every file.

A bundle is a folder (optionally a ``.tar.gz`` of that folder)::

    manifest.json          schema, target profile, precision, options, versions, models, inputs, files
    models/                model.fp32.onnx, model.fp16.onnx, model.int8_qdq.onnx (+ TensorRT variants);
                           a model with over 1 GiB of weights also has its <name>.onnx.data (external data)
    calib/calibration.cache
    plugins/               CUDA plugin sources + CMake project (only when the model has custom nodes)
    build_engine.sh        the trtexec command line for the target's TensorRT version
    run_on_device.py       the on-device runner (Python 3.6+, standard library)

The manifest records no timestamps and no absolute paths, so two builds with the
same inputs and options give byte-identical bundles.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..errors import InputError, VerificationError
from ..fileio import PathLike, sha256_file
from ..model import data_file_of

SCHEMA = "edgesqueeze.bundle/1"
MANIFEST = "manifest.json"
CACHE_NAME = "calib/calibration.cache"  # the TensorRT calibration cache (also in ``tensorrt.calibration_cache``)
REQUIRED_KEYS = ("schema", "target", "precision", "options", "versions", "models", "inputs", "files")
# written on the device after deployment (engines, timing caches, the plugin build): never hashed
DEVICE_OUTPUT_DIRS = ("engines", "plugins/build", "results")


def hash_files(root: PathLike, relpaths: Optional[Iterable[str]] = None) -> Dict[str, dict]:
    """Return ``{relpath: {"sha256", "size"}}`` for every file under ``root`` (or the given ones).

    Relative paths use ``/`` and are sorted; ``manifest.json`` and device outputs are left out.
    """
    root = Path(root)
    if relpaths is None:
        relpaths = list_files(root)
    return {rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
            for rel in sorted(relpaths)}


def list_files(root: PathLike) -> List[str]:
    """Sorted relative paths of the regular files under ``root``, minus the manifest, its signature and device
    outputs."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel in (MANIFEST, MANIFEST + ".sig") or _is_device_output(rel) or name.startswith(".") and name.endswith(".tmp"):
                continue
            out.append(rel)
    return sorted(out)


def _is_device_output(rel: str) -> bool:
    return any(rel == d or rel.startswith(d + "/") for d in DEVICE_OUTPUT_DIRS)


def model_size(files: Dict[str, dict], rel: str) -> int:
    """The bytes of the bundle model ``rel`` as the manifest's ``files`` list them: its ``.onnx`` file and, for a
    model with external data, its ``.onnx.data`` file."""
    return sum(files[p]["size"] for p in (rel, data_file_of(rel).as_posix()) if p in files)


def manifest_bytes(manifest: dict) -> bytes:
    """Serialise a manifest deterministically (sorted keys, two-space indent, trailing newline)."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_manifest(bundle: PathLike) -> dict:
    """Read and schema-check ``bundle/manifest.json``.

    Args:
        bundle: the bundle folder (or the manifest file itself).

    Returns:
        The manifest as a dict.

    Raises:
        InputError: the folder or manifest is missing, or the manifest is not JSON.
        VerificationError: the manifest has the wrong schema or lacks a required key.
    """
    given = Path(bundle)
    path = given / MANIFEST if given.is_dir() else given
    if not path.exists():
        if not path.parent.exists() or (path == given and given.name != MANIFEST):
            raise InputError("no such bundle folder", path=str(given if path == given else path.parent))
        raise InputError("not a bundle: manifest.json is missing", path=str(path.parent),
                         hint="make one with 'edgesqueeze build MODEL --target T -o DIR'")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(f"manifest.json is not valid JSON: {exc}", path=str(path)) from exc
    if not isinstance(manifest, dict):
        raise VerificationError("manifest.json is not a JSON object", path=str(path))
    schema = manifest.get("schema")
    if schema != SCHEMA:
        raise VerificationError(f"unknown bundle schema {schema!r}; this edgesqueeze reads {SCHEMA!r}",
                                path=str(path))
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise VerificationError(f"manifest.json lacks the key(s): {', '.join(missing)}", path=str(path))
    if not isinstance(manifest["files"], dict) or not isinstance(manifest["models"], dict):
        raise VerificationError("manifest.json: 'files' and 'models' must be objects", path=str(path))
    return manifest


def check_bundle(bundle: PathLike) -> dict:
    """Check a bundle's files against its manifest and return what was found (raises only on a bad manifest).

    Returns:
        ``{"manifest", "ok": bool, "problems": [{"path", "problem"}], "extra": [relpath], "checked": N}``;
        a problem is ``missing``, ``size`` or ``sha256`` (changed content) or ``unlisted model``.
    """
    root = Path(bundle)
    manifest = read_manifest(root)
    problems: List[dict] = []
    for rel, want in sorted(manifest["files"].items()):
        if not _safe_relpath(rel):
            problems.append({"path": rel, "problem": "unsafe path in the manifest"})
            continue
        f = root / rel
        if _leaves(root, rel):
            problems.append({"path": rel, "problem": "a link, or a path through one (a bundle has no links)"})
        elif not f.is_file():
            problems.append({"path": rel, "problem": "missing"})
        elif f.stat().st_size != want.get("size"):
            problems.append({"path": rel, "problem": f"size {f.stat().st_size} != {want.get('size')} (changed)"})
        elif sha256_file(f) != want.get("sha256"):
            problems.append({"path": rel, "problem": "sha256 differs (changed)"})
    for kind, rel in sorted(manifest["models"].items()):
        if rel and not (isinstance(rel, str) and _safe_relpath(rel)):
            problems.append({"path": str(rel), "problem": f"model '{kind}' points outside the bundle"})
        elif rel and rel not in manifest["files"]:
            problems.append({"path": rel, "problem": f"model '{kind}' is not listed in 'files'"})
    extra = [rel for rel in list_files(root) if rel not in manifest["files"]]
    return {"manifest": manifest, "ok": not problems, "problems": problems, "extra": extra,
            "checked": len(manifest["files"])}


def verify_bundle(bundle: PathLike) -> dict:
    """Verify a bundle: schema, then the size and sha256 of every file the manifest lists.

    Files the device writes later (``engines/``, ``plugins/build/``, ``results/``) are ignored; other
    files the manifest does not list are tolerated (see :func:`check_bundle` to list them).

    Args:
        bundle: the bundle folder.

    Returns:
        The manifest.

    Raises:
        InputError: no such folder, or no manifest in it.
        VerificationError: bad schema, or a listed file is missing or changed (the message names it).
    """
    report = check_bundle(bundle)
    if report["problems"]:
        first = report["problems"][0]
        more = len(report["problems"]) - 1
        raise VerificationError(f"bundle file {first['problem']}" + (f" (and {more} more problem(s))" if more else ""),
                                path=str(Path(bundle) / first["path"]),
                                hint="rebuild the bundle or copy it again")
    return report["manifest"]


def _leaves(root: Path, rel: str) -> bool:
    """True when ``root/rel`` is a link or passes through one (a bundle is written with none)."""
    p = root
    for part in Path(rel).parts:
        p = p / part
        if p.is_symlink():
            return True
    return False


def _safe_relpath(rel: str) -> bool:
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel
