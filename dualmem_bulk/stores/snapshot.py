"""A run's snapshot: every valid source row in the legacy schema plus its checksum, kept for
rollback and verification.

A conversion writes it as a directory of Parquet part files, one per source partition
(``snapshot.parquet/part-000000.parquet``...), each written atomically by the task that exported
the partition; the quarantine likewise (``quarantine.parquet/part-*.parquet``, only for parts
that rejected rows). Readers take the parts in name order as one table. A snapshot written as a
single file (``dualmem-bulk export``, in-place runs, runs of earlier versions) reads the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk.stores import open_parquet

__all__ = ["QUARANTINE", "SNAPSHOT", "Snapshot", "part_name"]

SNAPSHOT = "snapshot.parquet"
"""The snapshot's name in a run directory."""
QUARANTINE = "quarantine.parquet"
"""The quarantine's name in a run directory: every rejected row, with file, row and reason."""


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
        """The rows from row ``start`` on, in bounded batches; only whole row groups before
        ``start`` are skipped unread."""
        skip = start
        for handle in self.handles:
            meta = handle.metadata
            if skip >= meta.num_rows:
                skip -= meta.num_rows
                continue
            first = 0
            while skip >= meta.row_group(first).num_rows:
                skip -= meta.row_group(first).num_rows
                first += 1
            for batch in handle.iter_batches(batch_size=batch_size, columns=columns,
                                             row_groups=range(first, meta.num_row_groups),
                                             use_threads=False):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                yield batch.slice(skip) if skip else batch
                skip = 0
