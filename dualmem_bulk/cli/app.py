"""The ``dualmem-bulk`` application: its commands (defined by stage in :mod:`.offline`,
:mod:`.runs`, :mod:`.stores` and :mod:`.online`), ``--version``, and the entry point."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from dualmem_bulk import __version__
from dualmem_bulk.cli.calls import INTERNAL_ERROR, fail
from dualmem_bulk.cli.offline import convert, export, generate
from dualmem_bulk.cli.online import cutover, migrate
from dualmem_bulk.cli.runs import finalize, rollback, status, verify
from dualmem_bulk.cli.stores import index, inspect
from dualmem_bulk.cli.text import Command, Group

__all__ = ["app", "main"]

app = typer.Typer(cls=Group, no_args_is_help=True)
for command in (generate, convert, export, verify, status, inspect, index, rollback, finalize,
                migrate, cutover):
    app.command(cls=Command)(command)


def _show_version(value: bool) -> None:
    if value:
        print(f"dualmem-bulk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Migrate Engram Memory stores to DualMemoryNode: fast, crash-safe, verifiable."""


def main() -> None:
    """Console-script entry point: with ``--json``, even a usage error or a bug prints one
    JSON object on stdout."""
    from dualmem_bulk.engines.local import tune_malloc

    tune_malloc()
    as_json = "--json" in sys.argv[1:]
    try:
        code = app(standalone_mode=False, prog_name="dualmem-bulk")
    except typer.TyperException as exc:  # usage errors, as click raises them
        code = exc.exit_code
        no_command = type(exc).__name__ == "NoArgsIsHelpError"
        if not as_json:
            exc.show()  # type: ignore[attr-defined]  # every usage error has it
        else:
            fail("no command given" if no_command else exc.format_message(), code,
                 type(exc).__name__, as_json, "usage error")
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        code = fail("not confirmed; nothing was changed", 2, "Abort", as_json).exit_code
    except Exception as exc:  # a bug outside a library call
        traceback.print_exc()
        code = fail(str(exc), INTERNAL_ERROR, type(exc).__name__, as_json,
                    "internal error").exit_code
    sys.exit(code if isinstance(code, int) else 0)
