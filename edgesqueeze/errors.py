"""One exception hierarchy for edgesqueeze, with the exit codes the CLI uses.

Exit codes (documented in the README and in ``edgesqueeze --help``):

====  =========================  ==================================================
code  exception                  meaning
====  =========================  ==================================================
0     -                          success
1     InternalError              a bug in edgesqueeze (please report it)
2     (click usage error)        bad command line: unknown option, missing argument
3     InputError                 bad input: missing/corrupt file, bad data, bad value
4     UnsupportedError           valid input the tool or the target cannot handle
5     MissingDependencyError     an optional dependency (extra) is not installed
6     DeviceError                device, SSH connection or accelerator problem
7     VerificationError          a check failed: numerical mismatch, hash mismatch
130   -                          interrupted (Ctrl-C)
====  =========================  ==================================================
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_UNSUPPORTED = 4
EXIT_MISSING_DEPENDENCY = 5
EXIT_DEVICE = 6
EXIT_VERIFICATION = 7
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: please report it with --debug output)",
    EXIT_USAGE: "bad command line (unknown option, missing argument)",
    EXIT_INPUT: "bad input: missing or corrupt file, bad data, bad option value",
    EXIT_UNSUPPORTED: "unsupported model, operator or target request",
    EXIT_MISSING_DEPENDENCY: "an optional dependency is not installed",
    EXIT_DEVICE: "device, SSH connection or accelerator problem",
    EXIT_VERIFICATION: "a check failed (numerical mismatch, hash mismatch)",
    EXIT_INTERRUPTED: "interrupted",
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return " (did you mean X?)" / " (did you mean X or Y?)" for the choices close to a misspelled ``word``, or ""
    when none is close: the one spelling of that suggestion for targets, verbs and option values."""
    close = difflib.get_close_matches(str(word).lower(), list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + (close[0] if len(close) == 1 else ", ".join(close[:-1]) + " or " + close[-1]) + "?)"


class EdgeSqueezeError(Exception):
    """Base class of every error edgesqueeze raises on purpose.

    Args:
        message: what went wrong, in one sentence.
        path: the file at fault, if any.
        node: the ONNX node at fault, if any.
        tensor: the tensor at fault, if any.
        hint: what the user can do about it.
    """

    exit_code = EXIT_INTERNAL
    kind = "error"

    def __init__(self, message: str, *, path: Optional[str] = None, node: Optional[str] = None,
                 tensor: Optional[str] = None, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.node = node
        self.tensor = tensor
        self.hint = hint

    def one_line(self) -> str:
        """Return the error as the single line the CLI prints."""
        where = []
        if self.path:
            where.append(self.path)
        if self.node:
            where.append(f"node '{self.node}'")
        if self.tensor:
            where.append(f"tensor '{self.tensor}'")
        text = (": ".join(where) + ": " if where else "") + self.message
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split("\n"))

    def to_dict(self) -> dict:
        """Return a JSON-serialisable description of the error."""
        return {"error": type(self).__name__, "exit_code": self.exit_code, "message": self.message,
                "path": self.path, "node": self.node, "tensor": self.tensor, "hint": self.hint}

    def __str__(self) -> str:
        return self.one_line()


class InputError(EdgeSqueezeError):
    """Bad input: a missing, truncated or malformed file, bad data or a bad option value."""

    exit_code = EXIT_INPUT


class UnsupportedError(EdgeSqueezeError):
    """Well-formed input that the tool or the chosen target cannot handle."""

    exit_code = EXIT_UNSUPPORTED


class MissingDependencyError(EdgeSqueezeError):
    """An optional dependency is missing; the message names the extra to install."""

    exit_code = EXIT_MISSING_DEPENDENCY

    def __init__(self, module: str, extra: str, purpose: str = ""):
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"the Python module '{module}' is needed{what} but is not installed",
                         hint=f"pip install 'edgesqueeze[{extra}]'")
        self.module = module
        self.extra = extra


class DeviceError(EdgeSqueezeError):
    """A device, SSH connection or accelerator problem."""

    exit_code = EXIT_DEVICE


class VerificationError(EdgeSqueezeError):
    """A check failed: outputs disagree numerically, or a file's hash does not match."""

    exit_code = EXIT_VERIFICATION


class InternalError(EdgeSqueezeError):
    """An internal inconsistency: a bug in edgesqueeze."""

    exit_code = EXIT_INTERNAL
