"""``edgesqueeze verify``: check a bundle's manifest schema and the sha256 of every file."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from ..errors import VerificationError
from .common import emit, json_option, warn


@click.command("verify")
@click.argument("bundle", type=click.Path())
@click.option("--allowed-signers", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also check the manifest's signature against this OpenSSH allowed-signers file.")
@json_option
def command(bundle, allowed_signers, as_json):
    """Verify BUNDLE (a folder or .tar.gz): manifest schema, then the size and sha256 of every file.

    A changed or missing file is an error naming it (exit code 7). Files the device writes later
    (engines/, plugins/build/, results/) are ignored; other unlisted files are reported.

    \b
    Examples:
      edgesqueeze verify bundle/
      edgesqueeze verify bundle.tar.gz --json
      edgesqueeze verify bundle/ --allowed-signers ~/.ssh/allowed_signers   # and who signed it (exit 7 if no one)
    """
    from ..bundle import check_bundle, extract_archive, verify_signature

    path = Path(bundle)
    if path.name == "manifest.json" and path.is_file():
        path = path.parent  # the bundle's own manifest names the bundle
    tmp = None
    try:
        if path.is_file():
            tmp = tempfile.mkdtemp(prefix="edgesqueeze-verify-")
            path = extract_archive(path, tmp)
        report = check_bundle(path)
        if allowed_signers and report["ok"]:
            report["signed_by"] = verify_signature(path, allowed_signers)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    m = report["manifest"]
    out = {"bundle": str(bundle), "ok": report["ok"], "checked": report["checked"], "problems": report["problems"],
           "extra": report["extra"], "target": m["target"].get("name"), "precision": m["precision"],
           "deploy": m["models"].get("deploy"), "versions": m.get("versions"), "signed_by": report.get("signed_by")}
    if report["extra"] and not as_json:
        warn(f"{len(report['extra'])} file(s) not in the manifest: {', '.join(report['extra'][:5])}"
             + (" ..." if len(report["extra"]) > 5 else ""))
    if not report["ok"]:
        if as_json:
            emit(out, True, str)
        first = report["problems"][0]
        more = len(report["problems"]) - 1
        raise VerificationError(f"bundle file {first['problem']}" + (f" (and {more} more problem(s): "
                                + ", ".join(p["path"] for p in report["problems"][1:6]) + ")" if more else ""),
                                path=str(Path(bundle) / first["path"]))

    def text(o):
        signed = f"; signed by {o['signed_by']}" if o["signed_by"] else ""
        return (f"{o['bundle']}: OK: {o['checked']} files match the manifest "
                f"(target {o['target']}, precision {o['precision']}, deploy model {o['deploy']}){signed}")

    emit(out, as_json, text)
