"""Deployable bundles: the folder (or reproducible ``.tar.gz``) a device receives.

>>> from edgesqueeze.bundle import verify_bundle
>>> manifest = verify_bundle("bundle/")          # doctest: +SKIP

Layout and manifest: :mod:`.manifest`; the engine script: :mod:`.engine_plan` and :mod:`.engine_script`.
"""
from __future__ import annotations

from .archive import archive_bytes, extract_archive, write_archive
from .engine_plan import EnginePlan, plan_engine
from .engine_script import ScriptSpec, render_build_engine_sh
from .manifest import MANIFEST, SCHEMA, check_bundle, hash_files, read_manifest, verify_bundle
from .signing import SIGNATURE, is_signed, sign_bundle, verify_signature
from .writer import BundleWriter

__all__ = ["BundleWriter", "EnginePlan", "MANIFEST", "SCHEMA", "SIGNATURE", "ScriptSpec", "archive_bytes",
           "check_bundle", "extract_archive", "hash_files", "is_signed", "plan_engine", "read_manifest",
           "render_build_engine_sh", "sign_bundle", "verify_bundle", "verify_signature", "write_archive"]
