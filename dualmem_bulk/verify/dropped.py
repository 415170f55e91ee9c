"""Verify a finalized run whose snapshot was dropped (``finalize --drop-snapshot``).

What can still be checked: every target row's checksum recomputed from its fields and compared
with the stored one, the conversion rules, and the target's table digest (stored and recomputed)
against the digest the journal recorded at export and the digest of its committed units, with
the row counts. What cannot: the snapshot file itself (its digest is not recomputed) and the
row-by-row comparison with it (position, space, id and the episode columns); the report lists
these under ``not_checked``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.engines import TaskPool
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.reports import VerifyReport
from dualmem_bulk.stores import TargetStore
from dualmem_bulk.verify.pieces import READ_BATCH, PieceVerdict, verify_batches
from dualmem_bulk.verify.rows import Problem, listed

__all__ = ["NOT_CHECKED", "PieceAlone", "verify_piece_alone", "verify_without_snapshot"]

NOT_CHECKED = [
    "the snapshot file: it was dropped at finalize, so its digest was not recomputed",
    "each target row against its snapshot row (position, space, id, episode columns); the "
    "rows' checksums and the digest recorded at export cover the legacy fields",
]


@dataclass(frozen=True)
class PieceAlone:
    """One target piece to check on its own, for a worker."""

    target: Path
    piece: int
    batch_size: int

    @property
    def needs(self) -> tuple[Path, ...]:
        """What a worker must see: the target only."""
        return (self.target,)


def verify_piece_alone(task: PieceAlone) -> PieceVerdict:
    """Checksums recomputed from the fields and the conversion rules, for one piece."""
    batches = TargetStore(task.target).piece_batches(task.piece,
                                                     min(task.batch_size, READ_BATCH))
    return verify_batches(batches, iter(()))


def verify_without_snapshot(run_dir: Path, progress: Progress, batch_size: int,
                            pool: TaskPool, started: float) -> VerifyReport:
    """Check a run's target without its snapshot; see the module docstring."""
    journal = Journal.open(run_dir)
    try:
        target_path, snapshot = str(journal.values["target"]), journal.values["snapshot"]
        committed = journal.committed()
    finally:
        journal.close()
    target = TargetStore(Path(target_path))
    pieces = target.pieces()
    progress.phase("verify", sum(pieces))
    tasks = [PieceAlone(target.path.resolve(), i, batch_size) for i in range(len(pieces))]
    problems: list[Problem] = []
    stored, recomputed = TableDigest(), TableDigest()
    for _task, verdict in pool.ordered(verify_piece_alone, tasks):
        problems += verdict.problems
        stored += verdict.stored
        recomputed += verdict.recomputed
        progress.advance(verdict.rows)
    assert snapshot is not None, "verify_offline checked that the export finished"
    recorded = TableDigest.from_hex(int(snapshot["rows"]), str(snapshot["digest"]))
    if not problems and len({recorded, committed, stored, recomputed}) != 1:
        problems.append(("", "", f"table digests differ: recorded at export {recorded.hex} "
                                 f"({recorded.rows} rows), committed {committed.hex}, target "
                                 f"{stored.hex} ({stored.rows} rows), recomputed "
                                 f"{recomputed.hex}"))
    report = VerifyReport(
        ok=not problems, run_dir=str(run_dir), target=target_path,
        snapshot_rows=recorded.rows, target_rows=stored.rows, recorded_digest=recorded.hex,
        target_digest=stored.hex, recomputed_digest=recomputed.hex,
        mismatched=len({(sp, i) for sp, i, _ in problems}),
        mismatches=listed(problems),
        not_checked=list(NOT_CHECKED),
        elapsed_s=round(time.perf_counter() - started, 3))
    progress.done()
    return report
