"""The skeleton every migration driver shares (offline: :mod:`dualmem_bulk.offline.run`; online:
:mod:`dualmem_bulk.online.driver`): one invocation under the run lock that refuses a run
directory it does not own, honours a stop request between batches, turns an OS error into a
resumable stop, and leaves nothing behind when it refuses a fresh run."""

from __future__ import annotations

from collections.abc import Callable, Container
from pathlib import Path
from typing import TypeVar, Unpack

from dualmem_bulk._signals import StopRequest
from dualmem_bulk.errors import Interrupted, UsageError
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.journal import Journal, migrating
from dualmem_bulk.rundir.keys import JournalValues

__all__ = ["Driver", "drive"]

R = TypeVar("R")


class Driver:
    """One invocation of a run, under the run lock; a subclass opens ``journal``."""

    journal: Journal

    def __init__(self, run_dir: Path, progress: Progress, stop: StopRequest) -> None:
        self.run_dir, self.progress, self.stop = run_dir, progress, stop

    def _refuse_foreign(self, keep: Container[str]) -> None:
        """Refuse a run directory without a journal that holds anything but ``keep``."""
        if any(p.name not in keep for p in self.run_dir.iterdir()):
            raise UsageError(f"{self.run_dir}: not empty and holds no journal; remove it or pass "
                             "another run_dir", "run_dir")

    def _check_stop(self, where: str) -> None:
        """Stop (resumable) if a signal asked for it, and say so in the journal."""
        if self.stop.requested:
            self.journal.set_state(self.journal.state, f"interrupted by {self.stop.signal}")
            raise Interrupted(f"interrupted by {self.stop.signal} {where}; run the same command "
                              "again to resume")

    def _failed(self, exc: Exception, **values: Unpack[JournalValues]) -> None:
        """Record the run as failed; an OS error (a full disk, a lost mount) is a resumable
        stop: :class:`~dualmem_bulk.errors.Interrupted` is raised from it."""
        self.journal.set_state("failed", f"{type(exc).__name__}: {exc}", **values)
        if isinstance(exc, OSError):
            raise Interrupted(f"the run stopped: {exc}; fix the cause and run the same command "
                              "again to resume") from exc


def drive(run_dir: Path, progress: Progress, run: Callable[[StopRequest], R],
          refused: type[BaseException] | tuple[type[BaseException], ...],
          leave_nothing: Callable[[], None]) -> R:
    """``run`` under the run lock of ``run_dir``; if it raises ``refused`` and the run directory
    did not exist before, ``leave_nothing`` removes what the refused run created."""
    fresh = not run_dir.exists()
    try:
        with migrating(run_dir, progress) as stop:
            return run(stop)
    except refused:
        if fresh:
            leave_nothing()
        raise
