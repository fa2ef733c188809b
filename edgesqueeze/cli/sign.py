"""``edgesqueeze sign``: sign a bundle's manifest with an SSH key (OpenSSH's own signature format)."""
from __future__ import annotations

import click

from .common import emit, json_option


@click.command("sign")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("-k", "--key", required=True, type=click.Path(dir_okay=False), metavar="KEY",
              help="SSH private key (or a public key whose private half is in ssh-agent).")
@json_option
def command(bundle, key, as_json):
    """Sign BUNDLE: check every file against the manifest, then sign manifest.json with KEY.

    The signature (manifest.json.sig, made by 'ssh-keygen -Y sign -n edgesqueeze') covers every file,
    since the manifest holds their sha256. Check it with 'edgesqueeze verify --allowed-signers FILE' or
    'ssh-keygen -Y verify'; 'edgesqueeze deploy --require-signature FILE' refuses unsigned bundles.

    \b
    An allowed-signers file has one line per trusted key:
      me@example.com namespaces="edgesqueeze" ssh-ed25519 AAAAC3Nza...

    \b
    Examples:
      edgesqueeze sign bundle/ --key ~/.ssh/id_ed25519
      edgesqueeze verify bundle/ --allowed-signers ~/.ssh/allowed_signers
    """
    from ..bundle import sign_bundle

    sig = sign_bundle(bundle, key)
    emit({"bundle": str(bundle), "signature": str(sig)}, as_json, lambda o: f"signed {o['bundle']}: {o['signature']}")
