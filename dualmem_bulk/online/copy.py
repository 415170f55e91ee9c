"""The online run's copy of a live MemoryStore: consecutive rowid ranges, each one task.

The driver plans from two b-tree look-ups, the smallest and the largest rowid, read after the
change-log position P is pinned, and hands out consecutive rowid ranges. A task (in a worker
process, or in the driver with no workers) opens the store read-only, reads its range in one
short read transaction, hashes and converts the rows (the kernels of the former page copy:
``row_checksums``, ``to_dual``) and writes them as one Lance fragment, fsynced and not yet
committed; it returns the count, digest and fragment metadata. The driver commits the fragments
in range order and journals each range (``online_range.NNNNNN``, and the position in
``online_copied``) after its commit: a killed copy restores the recorded Lance version and goes
on at the first range not recorded, so no range is redone and no row doubled. This module is the
tasks' side; the driver's is :class:`~dualmem_bulk.online.store.OnlineMemoryStore`.

Exact without one snapshot (see :mod:`dualmem_bulk.online.run`): a row the service leaves alone
after P keeps its rowid, which lies between the two bounds, so exactly one range copies it. A
row the service changes after P has a log entry after P, and the catch-up writes its state as
it then is. The tasks leave out every id with such an entry (read in the same transaction as
the rows), so a row whose rowid moved (removed, then stored again) is never copied twice.
A ``VACUUM`` of the store during the copy may renumber rowids; the cut-over's comparison of
digests and counts would then refuse to cut over.

Range sizes adapt as the pages did: the first spans ``batch_size`` rowids, each later one is
scaled so that the driver commits about every ``target_batch_s``: a task takes about that times
the number of workers (at most doubling or halving, between ``MIN_ROWS`` and ``MAX_ROWS``
rowids), which also bounds how long a stop or the pause file waits for the running tasks.
Sizing each task to ``target_batch_s`` alone gave 2 workers twice the commits of one (98
ranges against 53 for 100K nodes on a loaded machine) and the driver 60% more CPU.
``--max-rate`` spaces the commits: after a range of n rows, the driver waits until n / rate
seconds of copy time have passed since the previous commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dualmem_bulk._threads import prefetched
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import to_dual
from dualmem_bulk.schema import DUAL_SCHEMA
from dualmem_bulk.stores.memory_store import read_range
from dualmem_bulk.stores.staging import Written, staged_writer

__all__ = ["MAX_ROWS", "MIN_ROWS", "RangeDone", "RangeTask", "copy_range",
           "next_size"]

MIN_ROWS, MAX_ROWS = 100, 50_000
"""Bounds of an adaptive copy page or range (rows; rowids for a range)."""
_READ_ROWS = 4_096
"""Rows a task reads, hashes and converts at a time."""


def next_size(size: int, seconds: float, target_s: float) -> int:
    """The next page or range size, so that it takes about ``target_s`` when ``size`` took
    ``seconds``: at most doubling or halving, within ``MIN_ROWS`` and ``MAX_ROWS``."""
    scaled = size * target_s / seconds
    return int(min(MAX_ROWS, max(MIN_ROWS, size / 2, min(scaled, size * 2))))


@dataclass(frozen=True)
class RangeTask:
    """One rowid range of the store to copy, for a worker."""

    unit: int
    store: Path
    target: Path
    first: int
    last: int
    pin: int
    """Ids with a change-log entry after this position are left to the catch-up."""


@dataclass(frozen=True)
class RangeDone:
    """A range read, converted and written (not yet committed)."""

    unit: int
    rows: int
    digest: str
    """Table digest of the rows' checksums."""
    written: Written
    seconds: float


def copy_range(task: RangeTask) -> RangeDone:
    """Read, hash and convert one rowid range; write it as one fsynced, uncommitted fragment."""
    started = time.perf_counter()
    digest = TableDigest()
    failure: list[BaseException] = []

    def converted() -> Iterator[pa.RecordBatch]:
        nonlocal digest
        try:
            for batch in read_range(task.store, task.first, task.last, task.pin, _READ_ROWS):
                sums = row_checksums(batch)
                digest += TableDigest.of(sums)
                yield to_dual(batch, sums)
        except BaseException as exc:  # Lance, pulling the batches, would rewrap it
            failure.append(exc)
            raise

    writer = staged_writer("lance", task.target, DUAL_SCHEMA)
    try:
        written = writer.write(task.unit, prefetched(converted()))
    except Exception:
        if failure:
            raise failure[0] from None
        raise
    return RangeDone(task.unit, digest.rows, digest.hex, written,
                     round(time.perf_counter() - started, 3))
