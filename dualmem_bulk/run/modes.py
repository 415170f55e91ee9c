"""The one place that reads a run's mode and picks what verify, rollback, finalize and status
do for it. A run directory holds a ``copy`` run (a new store), an ``in-place`` run (the legacy
store converted where it is) or an ``online`` run (a live store migrated while it serves);
each operation below opens the run, reads its mode once, and calls that mode's own steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from dualmem_bulk.engines import Engine, TaskPool, open_pool
from dualmem_bulk.errors import RunLocked, SourceError
from dualmem_bulk.online.finalize import end_dual_writing
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.run import finalize
from dualmem_bulk.run.rollback import Rollback, refuse_finalized
from dualmem_bulk.run.rollback_offline import CopyRollback, InPlaceRollback
from dualmem_bulk.run.rollback_online import OnlineRollback
from dualmem_bulk.run.status import offline_progress, online_extra, online_progress, status_of
from dualmem_bulk.rundir.files import SNAPSHOT
from dualmem_bulk.rundir.journal import Journal, Mode, RunLock, lock_holder
from dualmem_bulk.rundir.reports import (
    FinalizeReport,
    RollbackReport,
    StatusReport,
    VerifyReport,
)
from dualmem_bulk.verify.offline import verify_offline
from dualmem_bulk.verify.online import verify_online
from dualmem_bulk.verify.pieces import PieceVerdict

__all__ = ["finalize_plan", "finalize_run", "rollback_plan", "rollback_run", "run_status",
           "verify_run"]

_ROLLBACKS: dict[Mode, type[Rollback]] = {
    "copy": CopyRollback, "in-place": InPlaceRollback, "online": OnlineRollback}


def _existing(run_dir: Path) -> None:
    if not Journal.exists(run_dir):
        raise SourceError(run_dir, "not a run directory (no journal.sqlite)")


def verify_run(run_dir: Path, progress: Progress = NULL_PROGRESS,
               batch_size: int = 16_384, pool: TaskPool | None = None,
               checked: Iterable[PieceVerdict] = (), *, engine: Engine = "local",
               workers: int | None = 0, scheduler: str | None = None) -> VerifyReport:
    """Verify a run's target: an offline run's against its snapshot
    (:mod:`dualmem_bulk.verify.offline`), an online run's against its source at one position
    (:mod:`dualmem_bulk.verify.online`).

    An offline run's pieces are checked by ``pool``'s workers, or else by a pool of ``engine``
    (``workers=None`` sizes it for the snapshot; the default, 0, checks in this process),
    except those whose committed files are the ones a conversion verified (``checked``)."""
    journal = Journal.open(run_dir)
    try:
        if journal.mode == "online":
            return verify_online(run_dir, journal, progress, time.perf_counter())
        snapshot = journal.values["snapshot"]
    finally:
        journal.close()
    if pool is not None:
        return verify_offline(run_dir, progress, batch_size, pool, checked)
    rows = int(snapshot["rows"]) if snapshot else 0
    with open_pool(engine, workers, scheduler, rows=rows, driver_busy=False) as own:
        return verify_offline(run_dir, progress, batch_size, own, checked)


def rollback_plan(run_dir: Path) -> str:
    """What ``rollback`` would do to ``run_dir``'s stores, in one sentence (for the prompt)."""
    journal = Journal.open(run_dir)
    try:
        refuse_finalized(run_dir, journal)
        if journal.state == "rolled-back":
            return f"{run_dir} is already rolled back; nothing will change"
        return _ROLLBACKS[journal.mode].plan(journal)
    finally:
        journal.close()


def rollback_run(run_dir: Path, progress: Progress = NULL_PROGRESS) -> RollbackReport:
    """Restore the state before the run in ``run_dir`` and prove it
    (:mod:`dualmem_bulk.run.rollback`).

    Raises :class:`~dualmem_bulk.errors.UsageError` for a finalized run,
    :class:`~dualmem_bulk.errors.VerificationFailed` if the snapshot is unsound (nothing
    changed) or the restored state differs from it, and
    :class:`~dualmem_bulk.errors.RunLocked` while a migrator works on the run.
    """
    started = time.perf_counter()
    _existing(run_dir)
    with RunLock(run_dir) as lock:
        if lock.took_over:
            progress.message(lock.took_over)
        journal = Journal.open(run_dir)
        try:
            return _ROLLBACKS[journal.mode](run_dir, journal, progress).go(started)
        finally:
            journal.close()
            progress.done()


def finalize_run(run_dir: Path, drop_snapshot: bool = False,
                 remove_legacy: bool = False) -> FinalizeReport:
    """Keep the new store of a ``done`` run: record it (rollback is then refused), remove the
    in-place legacy backup (or the Lance pre-migration tag), and with ``drop_snapshot`` the
    snapshot too, only after the decision is durable. An online run's service then writes to
    the new store alone and the change log is trimmed (:mod:`dualmem_bulk.online.finalize`);
    ``remove_legacy`` removes its legacy store. Repeatable: a finalized run accepts
    ``drop_snapshot`` and ``remove_legacy`` later."""
    _existing(run_dir)
    with RunLock(run_dir):
        journal = Journal.open(run_dir)
        try:
            report = finalize.record_finalized(run_dir, journal)
            if journal.mode == "in-place":
                finalize.drop_backup(journal, report)
            # for any other run than an online one that cut over, this refuses remove_legacy
            report.legacy_kept, removed = end_dual_writing(run_dir, journal,
                                                           remove_legacy=remove_legacy)
            report.removed += removed
            finalize.drop_snapshot(run_dir, report, drop_snapshot)
            journal.set(finalize=report.as_dict())
            return report
        finally:
            journal.close()


def finalize_plan(run_dir: Path, drop_snapshot: bool = False,
                  remove_legacy: bool = False) -> str | None:
    """What ``finalize`` would do that cannot be undone, in one sentence (for the prompt);
    ``None`` if nothing (a finalized run whose snapshot is kept or already gone). Refuses as
    :func:`finalize_run` does."""
    _existing(run_dir)
    holder = lock_holder(run_dir)
    if holder is not None:
        raise RunLocked(run_dir, holder)
    journal = Journal.open(run_dir)
    try:
        state, mode = journal.state, journal.mode
        finalize.refuse_unfinished(run_dir, state)
        dropped = drop_snapshot and (run_dir / SNAPSHOT).exists()
        legacy = ([f"the legacy store {journal.config.get('source')}"]
                  if remove_legacy and mode == "online" else [])
        if state == "finalized":
            removes = [f"the snapshot {run_dir / SNAPSHOT}"] if dropped else []
            removes += legacy
            return f"remove {' and '.join(removes)}" if removes else None
        removes = ["the in-place legacy backup"] if mode == "in-place" else []
        removes += [f"the snapshot {run_dir / SNAPSHOT}"] if dropped else []
        removes += legacy
        return (f"keep {journal.values['target']} for good (rollback will be refused)"
                + (f" and remove {' and '.join(removes)}" if removes else ""))
    finally:
        journal.close()


def run_status(run_dir: Path) -> StatusReport:
    """State, progress, last checkpoint, rate, ETA, lock holder, whether rollback is possible
    (:mod:`dualmem_bulk.run.status`)."""
    journal = Journal.open(run_dir)
    try:
        if journal.mode == "online":
            return status_of(run_dir, journal, online_progress(journal), online_extra(journal))
        return status_of(run_dir, journal, offline_progress(journal), {})
    finally:
        journal.close()
