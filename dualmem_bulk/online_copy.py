"""The online run's copy of a live MemoryStore: consecutive rowid ranges, each one task.

The driver plans from two b-tree look-ups, the smallest and the largest rowid, read after the
change-log position P is pinned, and hands out consecutive rowid ranges. A task (in a worker
process, or in the driver with no workers) opens the store read-only, reads its range in one
short read transaction, hashes and converts the rows (the kernels of the former page copy:
``row_checksums``, ``to_dual``) and writes them as one Lance fragment, fsynced and not yet
committed; it returns the count, digest and fragment metadata. The driver commits the fragments
in range order and journals each range (``online_range.NNNNNN``, and the position in
``online_copied``) after its commit: a killed copy restores the recorded Lance version and goes
on at the first range not recorded, so no range is redone and no row doubled.

Exact without one snapshot (see :mod:`dualmem_bulk.online`): a row the service leaves alone
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
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dualmem_bulk._threads import prefetched
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import to_dual
from dualmem_bulk.engines import open_pool
from dualmem_bulk.errors import Interrupted
from dualmem_bulk.schema import DUAL_SCHEMA
from dualmem_bulk.stores.dual import writer_lock
from dualmem_bulk.stores.memory_store import read_range
from dualmem_bulk.stores.staging import Written, staged_writer

if TYPE_CHECKING:
    from dualmem_bulk.online import _Online

__all__ = ["MAX_ROWS", "MIN_ROWS", "RANGE_KEY", "RangeDone", "RangeTask", "copy_range",
           "copy_store", "next_size"]

MIN_ROWS, MAX_ROWS = 100, 50_000
"""Bounds of an adaptive copy page or range (rows; rowids for a range)."""
RANGE_KEY = "online_range.{:06d}"
"""Journal key of each recorded range."""
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


class _RangeCopy:
    """The driver's side: plans, runs the tasks on a pool, commits and journals in order."""

    def __init__(self, run: _Online) -> None:
        self.run = run
        self.size = run.config.batch_size
        self.waited = 0.0
        """Seconds spent held by the pause file (not copy time)."""

    def clock(self) -> float:
        """Copy time: wall time less the pauses."""
        return time.perf_counter() - self.waited

    def tasks(self, copied: dict[str, Any]) -> Iterator[RangeTask]:
        """The ranges not recorded yet, each sized when the pool asks for it; the stop request
        and the pause file are honoured before each."""
        run = self.run
        if copied["plan"] is None:
            return
        first, last = copied.get("next", copied["plan"][0]), copied["plan"][1]
        unit, pin = copied["ranges"], run.journal.get("online_pin")
        store, target = run.config.store.resolve(), run.config.target.resolve()
        while first <= last:
            mark = time.perf_counter()
            run._between_batches(f"after copying {run.report.nodes_copied:,} nodes")
            self.waited += time.perf_counter() - mark
            end = min(last, first + self.size - 1)
            yield RangeTask(unit, store, target, first, end, pin)
            unit, first = unit + 1, end + 1

    def copy(self) -> None:
        run = self.run
        copied = run.journal.get("online_copied")
        if "plan" not in copied:  # planned after the pin; a copy in pages of ids starts over
            copied = {"plan": run.store.rowid_bounds(), "ranges": 0, "rows": 0,
                      "digest": TableDigest().hex}
            run.report.nodes_copied = 0
            run._save(online_copied=copied, online_version=None)
        run._restore()
        total = run.store.count()
        run.progress.phase("copy", total)
        run.progress.advance(copied["rows"])
        version = run.journal.get("online_version")
        writer = staged_writer("lance", run.config.target, DUAL_SCHEMA)
        began = last = self.clock()
        copy_s = run.report.copy_s
        rate = run.config.max_rate
        try:
            with open_pool("local", run.config.workers, rows=total) as pool:
                task_s = run.config.target_batch_s * max(1, pool.workers)
                run.report.workers = pool.workers
                for task, done in pool.ordered(copy_range, self.tasks(copied)):
                    with writer_lock(run.run_dir):
                        if done.written or version is None:
                            version = writer.commit(task.unit, done.written)[0]
                    if rate and done.rows:
                        time.sleep(max(0.0, done.rows / rate - (self.clock() - last)))
                    last = self.clock()
                    digest = TableDigest.from_hex(copied["rows"], copied["digest"])
                    digest += TableDigest.from_hex(done.rows, done.digest)
                    copied = {**copied, "ranges": task.unit + 1, "next": task.last + 1,
                              "rows": digest.rows, "digest": digest.hex}
                    run.report.nodes_copied = copied["rows"]
                    run.report.nodes_copied_this_invocation += done.rows
                    run.report.copy_s = round(copy_s + last - began, 3)
                    record = {"unit": task.unit, "first": task.first, "last": task.last,
                              "rows": done.rows, "digest": done.digest, "version": version,
                              "seconds": done.seconds, "invocation": run.report.resumed,
                              "committed_at": time.time()}
                    run._save(online_copied=copied, online_version=version, target_created=True,
                              **{RANGE_KEY.format(task.unit): record})  # durable, then reported
                    run.progress.advance(done.rows)
                    if task.last < copied["plan"][1] and done.seconds > 0:  # not the last
                        self.size = next_size(task.last - task.first + 1, done.seconds,
                                              task_s)
        except BrokenProcessPool as exc:
            run.journal.set_state(run.journal.state, f"a worker process died: {exc}")
            raise Interrupted(f"a worker process died ({exc}); run the same command again to "
                              "resume") from exc
        with writer_lock(run.run_dir):
            if version is None:  # nothing to copy: the dataset must exist all the same
                version = writer.commit(0, [])[0]
                run._save(online_version=version, target_created=True)
            version = run.dual.index()
        run.report.copy_nodes_per_s = round(copied["rows"] / max(run.report.copy_s, 1e-9), 1)
        run.report.phase = "catching-up"
        run._save(online_version=version, phase="catching-up")


def copy_store(run: _Online) -> None:
    """Copy the live store into the new dataset, range by range (resuming at the first range
    not recorded), then index the id."""
    _RangeCopy(run).copy()
