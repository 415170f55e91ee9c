"""A run's snapshot: every valid source row in the legacy schema plus its checksum, kept for
rollback and verification.

A conversion writes it as a directory of Parquet part files, one per source partition
(``snapshot.parquet/part-000000.parquet``...), each written atomically by the task that exported
the partition; the quarantine likewise (``quarantine.parquet/part-*.parquet``, only for parts
that rejected rows). Readers take the parts in name order as one table. A snapshot written as a
single file (``dualmem-bulk export``, in-place runs, runs of earlier versions) reads the same.
A part of a Parquet source's run may instead be a sidecar naming a copy of the source's own
bytes (:mod:`dualmem_bulk.stores.snapshot_bytes`): read as the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk.schema import LEGACY_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.schema.conform import conform
from dualmem_bulk.stores import open_parquet
from dualmem_bulk.stores.snapshot_bytes import (
    COPY_KEY,
    FIRST_ROW_KEY,
    FORMAT,
    FORMAT_KEY,
    GROUPS_KEY,
    SIDECAR_COLUMNS,
)

__all__ = ["Snapshot", "part_name"]


def part_name(unit: int) -> str:
    """The file name of partition ``unit``'s snapshot (and quarantine) part."""
    return f"part-{unit:06d}.parquet"


class Snapshot:
    """A snapshot file, or a directory of part files read in name order as one table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
        self._handles: list[pq.ParquetFile] | None = None

    @property
    def handles(self) -> list[pq.ParquetFile]:
        """Each file opened for streaming (footers read once)."""
        if self._handles is None:
            self._handles = [open_parquet(f) for f in self.files]
        return self._handles

    @property
    def num_rows(self) -> int:
        """Rows in all parts, from their footers."""
        return sum(h.metadata.num_rows for h in self.handles)

    @property
    def num_row_groups(self) -> int:
        """Row groups in all parts."""
        return sum(h.metadata.num_row_groups for h in self.handles)

    def batches(self, batch_size: int, columns: list[str] | None = None, start: int = 0
                ) -> Iterator[pa.RecordBatch]:
        """The rows from row ``start`` on, in bounded batches; only whole row groups (whole
        parts, for parts keeping the source's bytes) before ``start`` are skipped unread."""
        skip = start
        wanted = columns if columns is not None else SNAPSHOT_SCHEMA.names
        for file, handle in zip(self.files, self.handles, strict=True):
            meta = handle.metadata
            if skip >= meta.num_rows:
                skip -= meta.num_rows
                continue
            kv = meta.metadata or {}
            if (kv.get(FORMAT_KEY.encode()) == FORMAT.encode()
                    and not set(wanted) <= set(SIDECAR_COLUMNS)):
                rows = _kept_rows(file, handle, batch_size, wanted)
            else:
                first = 0
                while skip >= meta.row_group(first).num_rows:
                    skip -= meta.row_group(first).num_rows
                    first += 1
                rows = handle.iter_batches(batch_size=batch_size, columns=columns,
                                           row_groups=range(first, meta.num_row_groups),
                                           use_threads=False)
            for batch in rows:
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                yield batch.slice(skip) if skip else batch
                skip = 0


def _kept_rows(sidecar: Path, handle: pq.ParquetFile, batch_size: int, columns: list[str]
               ) -> Iterator[pa.RecordBatch]:
    """A sidecar part's rows (``columns`` of the snapshot schema, in its order): the kept rows
    of the copied source bytes it names, conformed as the export conformed them, and their
    checksums."""
    kv = handle.metadata.metadata or {}
    first_group, end_group = (int(g) for g in kv[GROUPS_KEY.encode()].split(b"-"))
    side = handle.read(columns=["row", "checksum"], use_threads=False)
    keep = side.column("row").to_numpy() - int(kv[FIRST_ROW_KEY.encode()])
    sums = side.column("checksum").combine_chunks()
    copy = open_parquet(sidecar.parent / kv[COPY_KEY.encode()].decode())
    legacy = set(columns) & set(LEGACY_SCHEMA.names)
    read = [n for n in copy.schema_arrow.names if n in legacy]
    wanted = [n for n in SNAPSHOT_SCHEMA.names if n in columns]
    first = 0
    for batch in copy.iter_batches(batch_size=batch_size, columns=read,
                                   row_groups=range(first_group, end_group), use_threads=False):
        lo, hi = np.searchsorted(keep, [first, first + batch.num_rows]).tolist()
        if hi > lo:
            rows = batch if hi - lo == batch.num_rows else batch.take(
                pa.array(keep[lo:hi] - first))
            full = conform(rows).append_column(SNAPSHOT_SCHEMA.field("checksum"),
                                               sums.slice(lo, hi - lo))
            yield full.select(wanted)
        first += batch.num_rows
