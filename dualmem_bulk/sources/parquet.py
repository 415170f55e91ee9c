"""Legacy Memory Parquet: one file or a directory of files, read in bounded batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.schema.conform import check_schema
from dualmem_bulk.sources import ROW_COLUMN, SourceBatch, plan_runs
from dualmem_bulk.stores import open_parquet

__all__ = ["ParquetPart", "ParquetSource", "parquet_files"]


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a file or directory (recursively, in name order)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise SourceError(path, "directory holds no .parquet files")
    return files


def _open(path: Path) -> pq.ParquetFile:
    try:
        return open_parquet(path)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(path, f"not a readable Parquet file ({exc})") from exc


def _file_batches(file: Path, handle: pq.ParquetFile, batch_size: int, first_row: int = 0,
                  row_groups: list[int] | None = None) -> Iterator[SourceBatch]:
    """Loose legacy batches of ``file`` (or of its ``row_groups``), ``_row`` counted from
    ``first_row``."""
    wanted = set(LEGACY_SCHEMA.names)
    columns = [n for n in handle.schema_arrow.names if n in wanted]
    row = first_row
    try:
        for batch in handle.iter_batches(batch_size=batch_size, columns=columns,
                                         row_groups=row_groups, use_threads=False):
            rows = pa.array(range(row, row + batch.num_rows), pa.int64())
            yield SourceBatch(str(file), batch.append_column(ROW_COLUMN, rows))
            row += batch.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(file, f"unreadable after row {row} ({exc})") from exc


@dataclass(frozen=True)
class ParquetPart:
    """Consecutive row groups of one Parquet file: a partition of a Parquet source."""

    path: Path
    first_group: int
    end_group: int
    first_row: int
    """Row index in the file of the part's first row."""
    rows: int
    read_from: Path | None = field(default=None, compare=False)
    """A copy of the file's bytes to read the rows from instead (rows still named after
    ``path``): a snapshot keeping the source's bytes."""

    @property
    def needs(self) -> tuple[Path, ...]:
        """The file."""
        return (self.path,)

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """The part's rows as the whole file's reader yields them."""
        handle = _open(self.read_from or self.path)
        check_schema(handle.schema_arrow, str(self.path))
        yield from _file_batches(self.path, handle, batch_size, self.first_row,
                                 list(range(self.first_group, self.end_group)))

    def describe(self) -> str:
        """File and row groups."""
        return f"{self.path} row groups {self.first_group}-{self.end_group - 1}"


class ParquetSource:
    """Legacy Memory rows from Parquet, only the legacy columns, streamed row group by row group."""

    kind = "parquet"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = parquet_files(path)
        self._handles = [_open(f) for f in self.files]
        for file, handle in zip(self.files, self._handles, strict=True):
            check_schema(handle.schema_arrow, str(file))

    @property
    def total_rows(self) -> int:
        """Rows in all files, from the Parquet footers."""
        return sum(h.metadata.num_rows for h in self._handles)

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """Loose legacy batches with ``_row`` = row index within each file."""
        for file, handle in zip(self.files, self._handles, strict=True):
            yield from _file_batches(file, handle, batch_size)

    def partitions(self, rows: int) -> list[ParquetPart]:
        """Runs of whole row groups of at least ``rows`` rows, never across files (a row group
        is Parquet's smallest independently readable unit)."""
        parts: list[ParquetPart] = []
        for file, handle in zip(self.files, self._handles, strict=True):
            meta = handle.metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            first_row = 0
            for first, end, n in plan_runs(sizes, rows) or [(0, 0, 0)]:
                parts.append(ParquetPart(file, first, end, first_row, n))
                first_row += n
        return parts

    def describe(self) -> dict[str, Any]:
        """The files read."""
        return {"files": [str(f) for f in self.files]}

    def damage(self) -> list[str]:
        """Parquet damage is found while reading (an unreadable file fails the run)."""
        return []
