"""How a command calls the library and answers: errors as one line on stderr (and one JSON
object on stdout with ``--json``) and an exit code; reports as text or JSON; confirmations.
A library error names configuration fields (``batch_size``); here they become the flags that
set them (``--batch-size``).

Exit codes: 0 success, 1 verification found differences, 2 usage error, 3 invalid input
(nothing written), 4 interrupted (resumable), 5 another migrator holds the run, 70 internal error.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from dualmem_bulk import __version__
from dualmem_bulk.cli.progress import CliProgress
from dualmem_bulk.errors import DualmemError, UsageError

__all__ = ["ERR", "INTERNAL_ERROR", "INVALID_INPUT", "call", "call_with_progress", "confirm",
           "emit", "fail", "flag", "flagged", "usage"]

ERR = Console(stderr=True)
T = TypeVar("T")
INTERNAL_ERROR = 70
INVALID_INPUT = 3
_FLAGS = {"spaces": "--space", "fmt": "--format"}
"""The flags not spelled as their field (``--`` + the field, ``_`` as ``-``)."""


def flag(field: str) -> str:
    """The flag that sets configuration field ``field`` (``batch_size``: ``--batch-size``)."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def flagged(error: DualmemError) -> str:
    """``error``'s message with each configuration field it names shown as its flag (a whole
    word: not part of a longer name or of a path)."""
    message = str(error)
    for field in error.fields:
        message = re.sub(rf"(?<![\w/.-]){re.escape(field)}(?![\w/-])", flag(field), message)
    return message


def fail(message: str, exit_code: int, error_type: str, as_json: bool,
         label: str = "error") -> typer.Exit:
    """Say what went wrong in one line on stderr (and, with ``--json``, one
    ``{"status": "error", ...}`` object on stdout); the exit to raise."""
    ERR.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps({"status": "error", "error": message, "exit_code": exit_code,
                          "error_type": error_type, "tool_version": __version__},
                         sort_keys=True))
    return typer.Exit(exit_code)


def call(function: Callable[[], T], as_json: bool) -> T:
    """Run a library call, turning its errors into one line and an exit code. An operating
    system's refusal (permission denied, a name too long...) is not a bug: exit 3."""
    try:
        return function()
    except DualmemError as exc:
        raise fail(flagged(exc), exc.exit_code, type(exc).__name__, as_json) from exc
    except KeyboardInterrupt:
        raise fail("interrupted", 4, "KeyboardInterrupt", as_json) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}", INVALID_INPUT, type(exc).__name__,
                   as_json) from exc
    except Exception as exc:  # an unexpected failure: say so, keep the traceback
        traceback.print_exc()
        raise fail(str(exc), INTERNAL_ERROR, type(exc).__name__, as_json,
                   "internal error") from exc


def call_with_progress(function: Callable[[CliProgress], T], as_json: bool, quiet: bool) -> T:
    """:func:`call` with a progress display that is always closed."""
    progress = CliProgress(ERR, quiet)

    def closed() -> T:  # the display ends before an error's line, which comes last
        try:
            return function(progress)
        finally:
            progress.done()

    return call(closed, as_json)


def usage(text: str, as_json: bool) -> None:
    """Refuse the command line (exit 2)."""
    raise fail(text, 2, "UsageError", as_json, "usage error")


def emit(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    """Print a report: ``data`` as one JSON object with ``--json``, else ``lines``."""
    if as_json:
        print(json.dumps({**data, "tool_version": __version__}, sort_keys=True, default=str))
    else:
        for line in lines:
            print(line)


def confirm(question: str, flags: str) -> None:
    """Ask on a terminal; without one, or on "no", refuse (a usage error: nothing changed)."""
    if not sys.stdin.isatty():
        raise UsageError(f"no terminal to ask for confirmation; pass {flags} to go ahead. "
                         "Nothing was changed")
    try:
        confirmed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # Ctrl-C or end of input at the prompt
        confirmed = False
    if not confirmed:
        raise UsageError("not confirmed; nothing was changed")
