"""The ``edgesqueeze`` command line: one verb per module in this package, loaded on demand.

Every verb accepts ``--json``; errors print one line and exit with the codes of
:mod:`edgesqueeze.errors`; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from typing import List, Optional

import click

from .. import __version__
from ..errors import EXIT_CODES, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EdgeSqueezeError, did_you_mean

# verb -> module in edgesqueeze.cli (in the order --help lists them); each module defines `command`
COMMANDS = {
    "export": "export",
    "inspect": "inspect",
    "convert": "convert",
    "optimize": "optimize",
    "compress": "compress",
    "recover": "recover",
    "train": "train",
    "pack": "pack",
    "unpack": "unpack",
    "quantize": "quantize",
    "eval": "evaluate",
    "build": "build",
    "verify": "verify",
    "sign": "sign",
    "compare": "compare",
    "bench": "bench",
    "power": "power",
    "report": "report",
    "deploy": "deploy",
    "fleet": "fleet",
    "plugins": "plugins",
    "devices": "devices",
}

_EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in sorted(EXIT_CODES.items()))


class LazyGroup(click.Group):
    """A click group whose verbs live in their own modules and are imported when used."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return [name for name, mod in COMMANDS.items() if _module_exists(mod)]

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        mod = COMMANDS.get(name)
        if mod is None or not _module_exists(mod):
            return None
        return importlib.import_module(f"{__name__}.{mod}").command

    def resolve_command(self, ctx: click.Context, args: List[str]):
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            ctx.fail(f"no such command '{args[0]}'{did_you_mean(args[0], self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)


def _module_exists(mod: str) -> bool:
    return importlib.util.find_spec(f"{__name__}.{mod}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=_EPILOG)
@click.version_option(__version__, "--version", prog_name="edgesqueeze")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or informational messages.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """edgesqueeze: make a trained network small and fast on NVIDIA Jetson, and prove it with measurements.

    \b
    Typical workflow:
      edgesqueeze inspect  net.onnx --target orin-nano
      edgesqueeze build    net.onnx --target orin-nano --precision int8 --calib calib.npz -o bundle/
      edgesqueeze bench    bundle/
      edgesqueeze deploy   bundle/ --device user@jetson

    Run 'edgesqueeze VERB --help' for each verb's options and examples.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or bool(os.environ.get("EDGESQUEEZE_DEBUG"))
    ctx.obj["quiet"] = quiet
    from .common import show_shape_notes

    show_shape_notes()


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI and return its exit code (used by the ``edgesqueeze`` console script)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("EDGESQUEEZE_DEBUG"))
    try:
        rv = cli.main(args=args, prog_name="edgesqueeze", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("edgesqueeze: interrupted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("edgesqueeze: interrupted", err=True)
        return EXIT_INTERRUPTED
    except EdgeSqueezeError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"edgesqueeze: error: {exc.one_line()}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except (MemoryError, OverflowError) as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"edgesqueeze: error: {_input_files(args)}: the input is too large to process "
                   f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})", err=True)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line unless --debug
        if debug:
            traceback.print_exc()
        click.echo(f"edgesqueeze: internal error: {type(exc).__name__}: {exc} "
                   f"(a bug: rerun with --debug and report it)", err=True)
        return EXIT_INTERNAL


def _input_files(args: List[str]) -> str:
    """The existing files and folders named on the command line (the inputs an out-of-memory error blames)."""
    named = [a for a in args if not a.startswith("-") and os.path.exists(a.partition("?")[0])]
    return ", ".join(named) or "the input"


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
