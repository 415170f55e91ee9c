"""One piece of the target (Lance fragment, Parquet part file) re-read in full and checked
against the snapshot rows from the position it should start at, so pieces are independent
tasks for worker processes. A conversion verifies each partition this way in the task that
wrote it, from its data files and its snapshot part read back from disk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk._threads import prefetched
from dualmem_bulk.checksum import TableDigest, episode_checksums
from dualmem_bulk.schema import SNAPSHOT_SCHEMA
from dualmem_bulk.stores import TargetStore
from dualmem_bulk.stores.snapshot import Snapshot
from dualmem_bulk.verify.rows import Problem, row_problems

__all__ = ["READ_BATCH", "SNAPSHOT_KEYS", "PieceTask", "PieceVerdict", "snapshot_keys",
           "verify_batches", "verify_piece"]

SNAPSHOT_KEYS = ["space", "id", "checksum", "episode"]
"""The snapshot columns each target row is compared with."""
_SNAP_SCHEMA = pa.schema([SNAPSHOT_SCHEMA.field(n) for n in SNAPSHOT_KEYS])
READ_BATCH = 4096
"""Rows per batch when re-reading the target: the Lance reader's buffers grow with the batch;
at 4,096 rows verifying 200K nodes peaks at 934 MiB RSS, at 16,384 rows at 1,328 MiB."""


class _InOrder:
    """The snapshot's rows, handed out in the order the target was written from them."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches, self._pending = batches, pa.Table.from_batches([], _SNAP_SCHEMA)

    def take(self, n: int) -> pa.Table | None:
        """The next ``n`` rows, or ``None`` if the snapshot has fewer left."""
        while self._pending.num_rows < n:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._pending = pa.concat_tables([self._pending, pa.Table.from_batches([batch])])
        rows, self._pending = self._pending.slice(0, n), self._pending.slice(n)
        return rows


def _same_rows(expected: pa.Table | None, batch: pa.RecordBatch, episodes: pa.Array) -> bool:
    """Whether the target rows are the snapshot rows at the same positions, all columns that
    the join would compare (space, id, row checksum, episode checksum) being equal."""
    if expected is None:
        return False
    snap = expected.combine_chunks().to_batches()[0] if expected.num_rows else None
    if snap is None:
        return bool(batch.num_rows == 0)
    pairs = [
        (snap.column("space").fill_null(""), batch.column("space").fill_null("")),
        (snap.column("id"), batch.column("episode_id")),
        (snap.column("checksum"), batch.column("checksum")),
        (episode_checksums(snap), episodes),
    ]
    return all(pc.all(pc.equal(a.cast(b.type), b)).as_py() is True for a, b in pairs)


def snapshot_keys(snapshot: Path, start: int, batch_size: int) -> Iterator[pa.RecordBatch]:
    """The snapshot's :data:`SNAPSHOT_KEYS` columns from row ``start`` on."""
    yield from Snapshot(snapshot).batches(batch_size, SNAPSHOT_KEYS, start)


@dataclass(frozen=True)
class PieceTask:
    """One piece of the target (Lance fragment, Parquet part) to verify, for a worker."""

    target: Path
    piece: int
    snapshot: Path
    start: int
    """The snapshot row the piece's first row was written from, if nothing was lost."""
    batch_size: int

    @property
    def needs(self) -> tuple[Path, ...]:
        """What a worker must see: the snapshot and the target."""
        return (self.snapshot, self.target)


@dataclass
class PieceVerdict:
    """What one piece showed: rows breaking a rule, its digests, whether it lines up with the
    snapshot at ``start``."""

    rows: int
    problems: list[Problem]
    stored: TableDigest
    recomputed: TableDigest
    aligned: bool
    files: tuple[str, ...] = ()
    """The data files read (when verified before the commit, to match against the store)."""


def verify_piece(task: PieceTask) -> PieceVerdict:
    """Re-read one piece in full: checksums recomputed from its fields, conversion rules, and
    the snapshot's rows at the same positions."""
    target = TargetStore(task.target)
    return verify_batches(target.piece_batches(task.piece, min(task.batch_size, READ_BATCH)),
                          snapshot_keys(task.snapshot, task.start, task.batch_size))


def verify_batches(batches: Iterator[pa.RecordBatch], expected_keys: Iterator[pa.RecordBatch],
                   files: tuple[str, ...] = ()) -> PieceVerdict:
    """Check target rows read back from disk against the snapshot rows they were written from
    (:data:`SNAPSHOT_KEYS` columns, in order; see :func:`verify_piece`). ``files`` names what
    was read."""
    expected = _InOrder(expected_keys)
    verdict = PieceVerdict(0, [], TableDigest(), TableDigest(), True, files)
    for batch in prefetched(batches):
        problems, digest = row_problems(batch)
        verdict.problems += problems
        verdict.recomputed += digest
        verdict.stored += TableDigest.of(batch.column("checksum"))
        episodes = episode_checksums(batch)
        verdict.aligned = verdict.aligned and _same_rows(expected.take(batch.num_rows), batch,
                                                         episodes)
        verdict.rows += batch.num_rows
    return verdict
