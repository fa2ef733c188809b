"""Device-side file helper for deploy: hash, commit and verify bundle files. Prints one JSON object.

Sent over SSH and run as ``python3 -c SCRIPT MODE ROOT [JSON]`` (standard library only, Python 3.6+):

- ``state ROOT '["rel", ...]'``: size and sha256 of each file and of its ``.part`` upload, when present;
- ``commit ROOT '{"commit": {"rel": sha256}, "verify": {"rel": sha256}}'``: check each ``rel.part`` against
  its hash and rename it onto ``rel``, then verify (below) the "verify" files;
- ``verify ROOT '{"rel": sha256}'``: hash every file and report the ones that are missing or differ;
- ``receive ROOT``: read files from stdin, each a JSON header line ``{"rel", "offset", "size"}`` followed by
  ``size`` bytes, and append them to ``rel.part`` from ``offset`` (written as they arrive, so a transfer cut
  off half way leaves a prefix that the next deploy continues from).
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


def receive(root, stream):
    got = {}
    while True:
        line = stream.readline()
        if not line:
            break
        head = json.loads(line.decode("utf-8"))
        path = inside(root, head["rel"]) + PART
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            os.makedirs(folder)
        with open(path, "ab") as fh:
            fh.truncate(head["offset"])
            left = head["size"]
            while left > 0:
                block = stream.read(min(1 << 18, left))
                if not block:
                    raise SystemExit("the stream ended inside %s" % head["rel"])
                fh.write(block)
                fh.flush()
                left -= len(block)
        got[head["rel"]] = head["offset"] + head["size"]
    return got


def main():
    mode, root = sys.argv[1], os.path.abspath(os.path.expanduser(sys.argv[2]))
    arg = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    out = {}
    if mode == "receive":
        out = receive(root, sys.stdin.buffer)
    elif mode == "state":
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
