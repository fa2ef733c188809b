"""Device-side file helper for deploy: hash, commit and verify bundle files. Prints one JSON object.

Sent over SSH and run as ``python3 - MODE ROOT JSON`` (standard library only, Python 3.6+):

- ``state ROOT '["rel", ...]'``: size and sha256 of each file and of its ``.part`` upload, when present;
- ``commit ROOT '{"commit": {"rel": sha256}, "verify": {"rel": sha256}}'``: check each ``rel.part`` against
  its hash and rename it onto ``rel``, then verify (below) the "verify" files;
- ``verify ROOT '{"rel": sha256}'``: hash every file and report the ones that are missing or differ.
"""
import hashlib
import json
import os
import sys

PART = ".part"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def describe(path):
    if not os.path.isfile(path):
        return None, None
    return os.path.getsize(path), sha256(path)


def inside(root, rel):
    path = os.path.normpath(os.path.join(root, rel))
    if os.path.isabs(rel) or not (path == root or path.startswith(root.rstrip("/") + "/")):
        raise ValueError("path escapes the bundle folder: %s" % rel)
    return path


def verify(root, wanted):
    out = {}
    for rel, want in sorted(wanted.items()):
        size, got = describe(inside(root, rel))
        out[rel] = "ok" if got == want else ("missing" if got is None else "mismatch:" + got)
    return out


def main():
    mode, root, arg = sys.argv[1], os.path.abspath(os.path.expanduser(sys.argv[2])), json.loads(sys.argv[3])
    out = {}
    if mode == "state":
        for rel in arg:
            path = inside(root, rel)
            size, digest = describe(path)
            part_size, part_digest = describe(path + PART)
            out[rel] = {"size": size, "sha256": digest, "part_size": part_size, "part_sha256": part_digest}
    elif mode == "commit":
        out = {"commit": {}}
        for rel, want in sorted(arg["commit"].items()):
            path = inside(root, rel)
            size, got = describe(path + PART)
            if got == want:
                os.rename(path + PART, path)
                out["commit"][rel] = "ok"
            else:
                if size is not None:
                    os.remove(path + PART)
                out["commit"][rel] = "missing" if got is None else "mismatch:" + got
        out["verify"] = verify(root, arg.get("verify", {}))
    elif mode == "verify":
        out = verify(root, arg)
    else:
        raise SystemExit("unknown mode %r" % mode)
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
