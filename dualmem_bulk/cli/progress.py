"""The command line's progress display on stderr: a Rich bar on a terminal, a plain line every
few seconds otherwise, nothing with ``--quiet``.

The figures shown are honest: a phase's rate is its nodes over the wall time since the phase
began, recomputed when the phase ends, and shown only once the phase has lasted half a second
(nodes counted at once, such as the pieces a conversion already verified, made a phase of a few
milliseconds show millions of nodes/s); done never exceeds total (the total grows to the count
done).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["CliProgress"]

_MIN_RATE_S = 0.5
"""Seconds a phase must have run before its rate is shown."""


class CliProgress:
    """Implements :class:`dualmem_bulk.progress.Progress` for the CLI."""

    def __init__(self, console: Console, quiet: bool = False, every_s: float = 5.0) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._quiet = quiet
        self._every, self._last = every_s, 0.0
        self._name, self._done, self._start, self._printed = "", 0, 0.0, 0
        self._total: int | None = None
        if console.is_terminal and not quiet:
            self._bar = Progress(
                TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>12} nodes/s"), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
            )
            self._bar.start()

    def phase(self, name: str, total: int | None) -> None:
        """Close the current phase (its final rate) and start ``name``."""
        self._close_phase()
        self._name, self._total, self._done, self._printed = name, total, 0, 0
        self._start = self._last = time.monotonic()
        if self._bar is not None:
            self._task = self._bar.add_task(name, total=total, rate="-")

    def _rate(self) -> float | None:
        elapsed = time.monotonic() - self._start
        return self._done / elapsed if elapsed >= _MIN_RATE_S else None

    def advance(self, nodes: int) -> None:
        """Count ``nodes`` more nodes done in the current phase."""
        self._done += nodes
        if self._total is not None and self._done > self._total:
            self._total = self._done  # a source that held more than its first count
        now = time.monotonic()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=nodes, total=self._total,
                             rate=_shown(self._rate()))
        elif not self._quiet and now - self._last >= self._every:
            self._last = now
            self._line(self._rate())

    def _line(self, rate: float | None) -> None:
        total = f"/{self._total:,}" if self._total else ""
        if rate is None:  # too short a time for a rate
            speed = f"in {time.monotonic() - self._start:.2f} s"
        else:
            speed = f"{rate:,.0f} nodes/s"
            if self._total:
                speed += f", ETA {max(self._total - self._done, 0) / rate:,.0f} s"
        print(f"{self._name}: {self._done:,}{total} nodes, {speed}", file=sys.stderr, flush=True)
        self._printed = self._done

    def _close_phase(self) -> None:
        """The phase's last figures: its nodes over its whole wall time."""
        if not self._name:
            return
        rate = self._rate()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, rate=_shown(rate))
        elif not self._quiet and self._done != self._printed:
            self._line(rate)

    def message(self, text: str) -> None:
        """Print a line for the operator (kept with ``--quiet``: these are not progress)."""
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def done(self) -> None:
        """End the display."""
        self._close_phase()
        self._name = ""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _shown(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}"
