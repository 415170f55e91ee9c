"""The conversion of a snapshot in commit units (an in-place run of a Parquet store): the task
a worker runs for one unit. The driver plans the units and commits them in order
(:mod:`dualmem_bulk.offline`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dualmem_bulk._threads import prefetched
from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.convert import to_dual
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA
from dualmem_bulk.stores import TargetFormat, open_parquet
from dualmem_bulk.stores.staging import Written, staged_writer
from dualmem_bulk.verify.pieces import PieceVerdict, snapshot_keys, verify_batches

__all__ = ["UnitTask", "UnitWritten", "write_unit"]

_UNIT_READ_ROWS = 4096
"""Rows per read from the snapshot in a conversion task. Parquet decodes the embedding list
column a read at a time: 4,096 rows peaked at 292 MiB RSS, 16,384 rows at 501 MiB."""


@dataclass(frozen=True)
class UnitTask:
    """One commit unit of an in-place run to write, for a worker process: which snapshot row
    groups to convert and where to write them."""

    unit: int
    first_group: int
    end_group: int
    snapshot: Path
    target_format: TargetFormat
    path: Path
    in_place_base: int | None
    start: int
    """The snapshot row the unit starts at."""

    @property
    def needs(self) -> tuple[Path, ...]:
        """What a worker must see: the snapshot and the directory the target is in."""
        return (self.snapshot, self.path.parent)


@dataclass(frozen=True)
class UnitWritten:
    """A written (not yet committed) unit: its rows, digest and what the commit needs."""

    rows: int
    digest: str
    written: Written
    seconds: float
    verdict: PieceVerdict
    """The unit read back from its files and checked against the rows it was written from."""


def write_unit(task: UnitTask) -> UnitWritten:
    """Convert the unit's snapshot row groups (reusing their checksums), write them, read them
    back and verify them: the written files are checked before the driver commits them."""
    started = time.perf_counter()
    digest = TableDigest()

    def snapshot_batches() -> Iterator[pa.RecordBatch]:
        groups = list(range(task.first_group, task.end_group))
        if groups:
            yield from open_parquet(task.snapshot).iter_batches(
                batch_size=_UNIT_READ_ROWS, row_groups=groups, use_threads=False)

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal digest
        for batch in snapshot_batches():
            legacy = pa.RecordBatch.from_arrays(
                [batch.column(n) for n in LEGACY_SCHEMA.names], schema=LEGACY_SCHEMA)
            sums = batch.column("checksum")
            digest += TableDigest.of(sums)
            yield to_dual(legacy, sums)

    writer = staged_writer(task.target_format, task.path, DUAL_SCHEMA, task.in_place_base)
    written = writer.write(task.unit, prefetched(batches()))
    verdict = verify_batches(writer.read(written, _UNIT_READ_ROWS),
                             snapshot_keys(task.snapshot, task.start, _UNIT_READ_ROWS),
                             writer.files(written))
    return UnitWritten(digest.rows, digest.hex, written,
                       round(time.perf_counter() - started, 3), verdict)
