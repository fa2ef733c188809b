"""Options and output helpers shared by the CLI verbs."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from ..errors import InputError
from ..fileio import _json_default

def _set_quiet(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.ensure_object(dict)["quiet"] = True


def json_option(func: Callable) -> Callable:
    """``--json`` (machine-readable output) plus ``-q/--quiet``, which every verb also accepts after its name."""
    func = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                        help="No progress bars or informational messages.")(func)
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(func)
target_option = click.option("-t", "--target", default=None, metavar="TARGET",
                             help="Device profile (see 'edgesqueeze devices'), e.g. tx2, xavier-nx, orin-nano, cpu.")
input_shape_option = click.option(
    "-i", "--input", "input_shapes", multiple=True, metavar="[NAME:]SHAPE",
    help="Concrete shape of a dynamic input for the checks (verification, random data, roofline), e.g. "
         "--input images:1x3x640x640 (repeat for several inputs; a bare shape for a one-input model). The "
         "model keeps its dynamic dims unless --static. Without it: batch 1, sizes from the data or the "
         "model's metadata (Ultralytics imgsz).")
static_option = click.option(
    "--static", "--pin-shapes", "static", is_flag=True,
    help="Pin the inputs to static shapes (--input, else the concrete shapes of the checks) in the written "
         "model; by default symbolic dims are kept.")


class _ShapeNotes(logging.Handler):
    """Prints each line the shape rules log (edgesqueeze.shapes) once, on stderr, unless --quiet."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seen = set()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text not in self.seen:
            self.seen.add(text)
            info(f"edgesqueeze: {text}")


def show_shape_notes() -> None:
    """Route the notes of :func:`edgesqueeze.model.concrete_input_shapes` to stderr (once per process)."""
    log = logging.getLogger("edgesqueeze.shapes")
    if not any(isinstance(h, _ShapeNotes) for h in log.handlers):
        log.addHandler(_ShapeNotes())
        log.setLevel(logging.INFO)
        log.propagate = False


def output_option(required: bool = True, help: str = "Output file.") -> Callable:  # noqa: A002 - click's name
    """The ``-o/--output`` option."""
    return click.option("-o", "--output", required=required, type=click.Path(dir_okay=True), help=help)


def quiet(ctx: Optional[click.Context] = None) -> bool:
    """True when --quiet was given (progress bars and info messages off)."""
    ctx = ctx or click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and "quiet" in ctx.obj:
            return bool(ctx.obj["quiet"])
        ctx = ctx.parent
    return False


def info(message: str) -> None:
    """Print an informational message on stderr unless --quiet."""
    if not quiet():
        click.echo(message, err=True)


def warn(message: str) -> None:
    """Print a warning on stderr (always)."""
    click.echo(f"edgesqueeze: warning: {message}", err=True)


def emit(obj: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print ``obj`` as JSON (with --json) or as the text ``text(obj)`` returns."""
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    else:
        out = text(obj)
        if out:
            click.echo(out)


def table(rows, headers, align: Optional[str] = None) -> str:
    """Format ``rows`` (lists of cells) as a plain-text table; ``align`` is a string of 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    def fmt(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)).rstrip()
    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def torch_threads_option(default: int, why: str):
    """``--threads N``: torch's CPU threads for a training command (0: torch's default, one per core); ``why``
    says what was measured for the command's default."""
    return click.option("--threads", type=click.IntRange(0), default=default, show_default=True,
                        help=f"torch CPU threads (0: torch's default, one per core). {why} The model depends on "
                             "the thread count: the same options and threads give the same bytes.")


def set_torch_threads(threads: int, what: str) -> None:
    """Apply ``--threads`` (0 leaves torch's own default)."""
    if threads:
        from .._lazy import require
        require("torch", what).set_num_threads(threads)


def preprocess_option(f):
    """``--preprocess SPEC``: how images of an image-folder DATA become input tensors (quantize, build, eval)."""
    return click.option(
        "--preprocess", "preprocess", metavar="SPEC",
        help="For image-folder data: 'resize=256&crop=224&scale=255&mean=0.485,0.456,0.406&std=0.229,0.224,0.225"
             "&layout=nchw|nhwc&channels=rgb|bgr|gray' (default: resize straight to the input size, RGB, /255; "
             "the same keys may sit in the folder's preprocess.json). The data line says what was done.")(f)


def with_preprocess(data, spec):
    """``data`` with ``spec`` appended when it is an image folder (``folder?spec``); other data as it is.

    Raises:
        InputError: ``spec`` given for data that is not an image folder.
    """
    if not spec or data is None:
        return data
    folder = str(data).split("?", 1)[0]
    if not Path(folder).is_dir():
        raise InputError("--preprocess applies to an image folder, not to this data", path=str(data))
    return f"{data}{'&' if '?' in str(data) else '?'}{spec}"
