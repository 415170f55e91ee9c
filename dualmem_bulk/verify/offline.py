"""Prove an offline run's target holds exactly the snapshot's nodes, every field unchanged.

What is re-read and why that suffices: every target row is read in full; its legacy fields are
re-encoded and hashed and compared with the row's stored checksum (catches any changed carried
field), its derived fields are checked against the conversion rules (UUID from the id,
``strength`` = ``activation`` bit for bit, ``consolidation_score`` = 0.0, Episode type, Concept
fields null); the snapshot's ``space``, ``id``, ``checksum`` and ``episode`` columns are compared
with the target's row at the same position (the join of all keys runs only when they do not line
up, to name what is missing, extra, duplicated or different); and the three table digests
(recorded at export, stored in the target, recomputed from its fields) must be equal.

The target is checked piece by piece (:mod:`dualmem_bulk.verify.pieces`). The run's
verification re-reads only the pieces whose committed files are not the ones a conversion
verified before its commit (none, unless something went wrong).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.engines import TaskPool
from dualmem_bulk.engines.local import WorkerPool
from dualmem_bulk.errors import SourceError
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.rundir.files import SNAPSHOT
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.reports import VerifyReport
from dualmem_bulk.stores import TargetStore
from dualmem_bulk.stores.snapshot import Snapshot
from dualmem_bulk.verify.dropped import verify_without_snapshot
from dualmem_bulk.verify.pieces import (
    READ_BATCH,
    SNAPSHOT_KEYS,
    PieceTask,
    PieceVerdict,
    verify_piece,
)
from dualmem_bulk.verify.rows import Keys, Problem, join_problems, listed

if TYPE_CHECKING:
    import polars as pl

__all__ = ["verify_offline"]


def _keys(snapshot: Path, target: TargetStore, batch_size: int
          ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Both sides' join keys; only needed when the target is not the snapshot row for row."""
    snap, tgt = Keys(), Keys()
    for batch in Snapshot(snapshot).batches(batch_size, SNAPSHOT_KEYS):
        snap.add(batch, "id")
    for batch in target.batches(min(batch_size, READ_BATCH)):
        tgt.add(batch, "episode_id")
    return snap.frame("s"), tgt.frame("t")


def _snapshot_digest(snapshot: Path, batch_size: int) -> TableDigest:
    """The snapshot's checksum digest."""
    digest = TableDigest()
    for batch in Snapshot(snapshot).batches(batch_size, ["checksum"]):
        digest += TableDigest.of(batch.column("checksum"))
    return digest


def verify_offline(run_dir: Path, progress: Progress = NULL_PROGRESS,
                   batch_size: int = 16_384, pool: TaskPool | None = None,
                   checked: Iterable[PieceVerdict] = ()) -> VerifyReport:
    """Verify an offline run's target against its snapshot; see the module docstring.

    The target's pieces are checked by ``pool``'s workers (default: in this process), except
    those whose committed files are the ones a conversion verified (``checked``). A snapshot
    dropped at finalize leaves the checks of :mod:`dualmem_bulk.verify.dropped`."""
    started = time.perf_counter()
    journal = Journal.open(run_dir)
    try:
        target_path, snapshot = journal.values["target"], journal.values["snapshot"]
    finally:
        journal.close()
    if snapshot is None:
        raise SourceError(run_dir, "the run has not finished its export yet; nothing to verify")
    if not (run_dir / SNAPSHOT).exists():  # dropped at finalize
        with contextlib.ExitStack() as stack:
            alone = pool or stack.enter_context(WorkerPool(0))
            return verify_without_snapshot(run_dir, progress, batch_size, alone, started)
    assert target_path is not None, "a run records its target when it starts"
    target = TargetStore(Path(target_path))
    report = VerifyReport(ok=False, run_dir=str(run_dir), target=target_path,
                          recorded_digest=snapshot["digest"])

    snapshot_file = run_dir / SNAPSHOT
    pieces = target.pieces()
    progress.phase("verify", sum(pieces))
    starts = np.concatenate([[0], np.cumsum(pieces)[:-1]]).astype(int).tolist() if pieces else []
    by_files = {verdict.files: verdict for verdict in checked}
    verified = {i: by_files[files] for i in range(len(pieces))
                if (files := target.piece_files(i)) in by_files}
    tasks = [PieceTask(target.path.resolve(), i, snapshot_file.resolve(), start, batch_size)
             for i, start in enumerate(starts) if i not in verified]
    problems: list[Problem] = []
    stored, recomputed = TableDigest(), TableDigest()
    aligned = True
    with contextlib.ExitStack() as stack:
        workers: TaskPool = pool or stack.enter_context(WorkerPool(0))
        def fresh() -> Iterator[PieceVerdict]:
            for _task, verdict in workers.ordered(verify_piece, tasks):
                report.read_back += verdict.rows
                yield verdict

        verdicts = itertools.chain(
            (verified[i] for i in range(len(pieces)) if i in verified), fresh())
        for verdict in verdicts:
            problems += verdict.problems
            stored += verdict.stored
            recomputed += verdict.recomputed
            aligned = aligned and verdict.aligned
            progress.advance(verdict.rows)
    snap_digest = _snapshot_digest(snapshot_file, batch_size)
    if not (aligned and snap_digest.rows == stored.rows):
        problems += join_problems(*_keys(snapshot_file, target, batch_size))
    report.snapshot_rows, report.target_rows = snap_digest.rows, stored.rows
    report.snapshot_digest, report.target_digest = snap_digest.hex, stored.hex
    report.recomputed_digest = recomputed.hex
    digests = {report.recorded_digest, report.snapshot_digest, report.target_digest,
               report.recomputed_digest}
    if len(digests) != 1 and not problems:
        problems.append(("", "", "table digests differ"))
    report.mismatched = len({(sp, i) for sp, i, _ in problems})
    report.mismatches = listed(problems)
    report.ok = not problems and snap_digest.rows == stored.rows
    report.elapsed_s = round(time.perf_counter() - started, 3)
    progress.done()
    return report
