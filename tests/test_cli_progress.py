"""The command line's progress display (``dualmem_bulk.cli.progress``): done never exceeds total,
a phase's rate is over its own wall time (and not shown for a phase too short to have one),
``--quiet`` prints nothing."""

from __future__ import annotations

import re
import time

import pytest
from rich.console import Console

from dualmem_bulk.cli.progress import CliProgress


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_progress_done_never_exceeds_total(capsys: pytest.CaptureFixture[str]) -> None:
    progress = CliProgress(Console(stderr=True, force_terminal=False))
    progress.phase("export", 100)
    progress.advance(60)
    progress.advance(48)  # the source held more than its first count
    progress.done()
    line = _lines(capsys)[-1]
    assert "108/108 nodes" in line, line


def test_progress_rate_is_over_the_phase_wall_time(capsys: pytest.CaptureFixture[str]) -> None:
    progress = CliProgress(Console(stderr=True, force_terminal=False))
    progress.phase("verify", 20_000)
    progress.advance(20_000)  # pieces checked during the conversion: counted at once
    assert "nodes/s" not in "".join(_lines(capsys))
    time.sleep(0.6)
    progress.done()
    line = _lines(capsys)[-1]
    rate = float(re.search(r"([\d,]+) nodes/s", line)[1].replace(",", ""))  # type: ignore[index]
    assert rate <= 20_000 / 0.6, line  # not millions of nodes/s
    short = CliProgress(Console(stderr=True, force_terminal=False))
    short.phase("verify", 500)
    short.advance(500)
    short.done()
    line = _lines(capsys)[-1]
    assert "nodes/s" not in line and " in 0.0" in line, line  # too short for a rate


def test_quiet_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    progress = CliProgress(Console(stderr=True, force_terminal=True), quiet=True)
    progress.phase("convert", 10)
    progress.advance(10)
    progress.done()
    assert capsys.readouterr().err == ""
