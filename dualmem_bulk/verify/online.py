"""Verify an online run. It has no snapshot: the dual store is compared with its source at one
position, every dual-store checksum recomputed from its fields (the cut-over's proof, again):

- a live MemoryStore: both stores at one pinned change-log position
  (:func:`~dualmem_bulk.verify.pinned.compare_at_pin`);
- an Engram data root: the WAL's replay at the applied position
  (:func:`~dualmem_bulk.verify.pinned.compare_wal`), the differing nodes named if any.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from dualmem_bulk.checksum import row_checksums
from dualmem_bulk.errors import UsageError
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import wal_position
from dualmem_bulk.rundir.reports import VerifyReport
from dualmem_bulk.sources.engram_wal import read_engram_wal
from dualmem_bulk.sources.engram_wal_feed import Position, legacy_columns
from dualmem_bulk.stores.dual import DualStore, writer_lock
from dualmem_bulk.stores.memory_store import MemoryStore
from dualmem_bulk.verify.pinned import Pinned, WalPinned, compare_at_pin, compare_wal
from dualmem_bulk.verify.rows import MAX_LISTED, Problem, keyed_problems, listed

__all__ = ["verify_online", "verify_wal_run"]

_VERIFY_BATCH = 4_096


def verify_online(run_dir: Path, journal: Journal, progress: Progress,
                  started: float) -> VerifyReport:
    """Compare an online run's dual store with its source at one position (see the module
    docstring): a live MemoryStore's under the run's writer lock, or an Engram data root's
    WAL replay."""
    if journal.values["phase"] == "copying":
        raise UsageError(f"{run_dir}: the online copy is still under way; verify once "
                         "`dualmem-bulk status` shows it catching up or cut over")
    config = journal.config
    if config.get("kind") == "engram-wal":
        return _verify_wal(run_dir, journal, progress, started)
    if journal.values["serving"] == "lance":
        raise UsageError(f"{run_dir}: the run is finalized and the new store alone takes the "
                         "writes: there is no legacy store to compare it with any more")
    store, target = Path(config["source"]), Path(config["target"])
    legacy = MemoryStore(store, create=False)
    try:
        progress.phase("verify", legacy.count())
        with writer_lock(run_dir):
            pinned = compare_at_pin(legacy, DualStore(target), journal, progress=progress)
    finally:
        legacy.close()
    progress.done()
    return _pinned_report(run_dir, store, target, pinned, started)


def _verify_wal(run_dir: Path, journal: Journal, progress: Progress,
                started: float) -> VerifyReport:
    """An online run from an Engram data root: the WAL's replay at the applied position against
    the dual store, every checksum recomputed from the fields."""
    progress.phase("verify", None)
    pinned, root, target, problems = verify_wal_run(run_dir, journal, progress)
    progress.done()
    return _pinned_report(run_dir, root, target, pinned, started, problems)


def _pinned_report(run_dir: Path, source: Path, target: Path, pinned: Pinned[object],
                   started: float, problems: list[Problem] | None = None) -> VerifyReport:
    """The verdict of an online run's comparison at a pinned position."""
    report = VerifyReport(
        ok=pinned.same, run_dir=str(run_dir), target=str(target),
        snapshot_rows=pinned.source.rows, target_rows=pinned.stored.rows,
        recorded_digest=pinned.source.hex, snapshot_digest=pinned.source.hex,
        target_digest=pinned.stored.hex, recomputed_digest=pinned.recomputed.hex,
        elapsed_s=round(time.perf_counter() - started, 3))
    if not pinned.same:
        named = problems or []
        report.mismatched = len({(sp, i) for sp, i, _ in named}) or 1
        report.mismatches = listed(named, MAX_LISTED - 1)
        report.mismatches.append({"id": "", "problem": pinned.describe(source, target)})
    return report


def verify_wal_run(run_dir: Path, journal: Journal, progress: Progress = NULL_PROGRESS
                   ) -> tuple[WalPinned, Path, Path, list[Problem]]:
    """Compare a WAL run's dual store with the WAL's replay at the applied position, under the
    writer lock (so a running migrator's commit and its journal entry are not split); if they
    differ, name the nodes that do (:func:`~dualmem_bulk.verify.rows.keyed_problems`)."""
    config = journal.config
    root, target = Path(config["source"]), Path(config["target"])
    problems: list[Problem] = []
    with writer_lock(run_dir):
        dual, position = DualStore(target), wal_position(journal.values["online_applied"])
        pinned = compare_wal(root, dual, position, progress)
        if not pinned.same:
            problems = keyed_problems(_with_checksums(root, position), _node_batches(dual))
    return pinned, root, target, problems


def _with_checksums(root: Path, position: Position) -> Iterator[pa.RecordBatch]:
    """The WAL's replay at ``position`` in the legacy schema, with each row's checksum."""
    for part in read_engram_wal(root, _VERIFY_BATCH, upto=position):
        batch = legacy_columns(part.batch)
        yield batch.append_column("checksum", row_checksums(batch))


def _node_batches(dual: DualStore) -> Iterator[pa.RecordBatch]:
    for fragment in dual.dataset().get_fragments():
        yield from fragment.to_batches(batch_size=_VERIFY_BATCH)
