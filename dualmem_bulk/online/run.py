"""The online run: migrate a live :class:`~dualmem_bulk.stores.memory_store.MemoryStore` while
its service keeps reading and writing, then cut over without losing a write.

1. **Pin** the change-log position P (the store's triggers log every write after it).
2. **Copy** every row into a new Lance dataset in consecutive rowid ranges, each a task (a
   worker process, or the driver) that reads its range in its own short read transaction (a
   single long one would stop SQLite from checkpointing its WAL while the service writes) and
   writes one fragment; the driver commits them in order, one commit per range
   (:mod:`dualmem_bulk.online.copy`, driven by :mod:`dualmem_bulk.online.store`). The copy
   need not be one consistent snapshot: every row that changes after P has a log entry after
   P, and step 3 writes each such id's state as it is then (the ranges leave such ids out), so
   the result is exact and a killed copy resumes at its first unrecorded range. A scalar index
   on the id is built after the copy.
3. **Catch up**: apply the log after P in order, in rounds; the changes of one id collapse into
   its current state (upserted, or deleted if it is gone: a deleted node never comes back).
4. **Cut over** once the lag is small: pin a position S1 and, in one read transaction, apply
   the log up to S1 and scan the source's digest; compare it with the target's, recomputed
   from every node's fields. Carry both digests forward through the changes applied after S1.
   Then hold the store's write lock (``BEGIN IMMEDIATE``: the service's writers wait, readers
   don't), apply the last changes, and only if the digests and counts agree record the
   cut-over (journal ``serving = dual``) before releasing the lock. The pause is reported.

Every range and every applied position is journalled (durably) after its Lance commit, and
the Lance version with it: a resumed migrator first restores that version, so an unrecorded
commit is redone, never doubled. ``RUN_DIR/pause`` holds the migrator between batches;
``--max-rate`` caps nodes/s; range sizes adapt so each takes about ``target_batch_s``.

The drivers: :class:`~dualmem_bulk.online.store.OnlineMemoryStore` for a MemoryStore,
:class:`~dualmem_bulk.online.wal.OnlineWal` for an Engram data root, both on the skeleton of
:class:`~dualmem_bulk.online.driver.OnlineDriver`; this module picks one and runs it.
"""

from __future__ import annotations

import time

from dualmem_bulk._fs import remove
from dualmem_bulk._signals import StopRequest
from dualmem_bulk.driver import drive
from dualmem_bulk.errors import UsageError
from dualmem_bulk.online.config import OnlineConfig
from dualmem_bulk.online.driver import OnlineDriver
from dualmem_bulk.online.store import OnlineMemoryStore
from dualmem_bulk.online.wal import OnlineWal
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.run_report import OnlineReport

__all__ = ["OnlineConfig", "run_online"]


def _driver(config: OnlineConfig) -> type[OnlineDriver]:
    """The driver for the source: an Engram data root's WAL, or a MemoryStore."""
    return OnlineWal if config.wal_source else OnlineMemoryStore


def run_online(config: OnlineConfig, progress: Progress = NULL_PROGRESS) -> OnlineReport:
    """Migrate the live store ``config.store`` into ``config.target`` and cut over (see the
    module docstring), or resume the run in its run directory.

    Raises :class:`~dualmem_bulk.errors.SourceError` for a store that is not a MemoryStore,
    :class:`~dualmem_bulk.errors.TargetExists`, :class:`~dualmem_bulk.errors.Interrupted`
    when stopped (resumable), :class:`~dualmem_bulk.errors.RunLocked` while another migrator
    holds the run, and :class:`~dualmem_bulk.errors.VerificationFailed` if the digests differ
    at the cut-over (the service then stays on the legacy store).
    """
    started = time.perf_counter()
    if config.batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {config.batch_size}", "batch_size")
    if config.cutover_lag < 0:
        raise UsageError(f"cutover_lag must be at least 0, got {config.cutover_lag}",
                         "cutover_lag")
    if config.max_rate is not None and config.max_rate <= 0:
        raise UsageError(f"max_rate must be positive, got {config.max_rate}", "max_rate")
    if config.workers is not None and config.workers < 0:
        raise UsageError(f"workers must be at least 0, got {config.workers}", "workers")
    run_dir = config.resolved_run_dir

    def run(stop: StopRequest) -> OnlineReport:
        online = _driver(config)(config, run_dir, progress, stop)
        try:
            return online.go(started)
        finally:
            online.close()

    def leave_nothing() -> None:
        if not Journal.exists(run_dir):
            remove(run_dir)  # a refused run leaves nothing behind

    return drive(run_dir, progress, run, Exception, leave_nothing)

