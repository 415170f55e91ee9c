"""Legacy Memory Parquet: one file or a directory of files, read in bounded batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.schema.validate import check_schema
from dualmem_bulk.sources import ROW_COLUMN, SourceBatch
from dualmem_bulk.stores import open_parquet, parquet_batches

__all__ = ["ParquetSource", "parquet_files"]


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
        wanted = set(LEGACY_SCHEMA.names)
        for file, handle in zip(self.files, self._handles, strict=True):
            columns = [n for n in handle.schema_arrow.names if n in wanted]
            row = 0
            try:
                for batch in parquet_batches(handle, batch_size, columns):
                    rows = pa.array(range(row, row + batch.num_rows), pa.int64())
                    yield SourceBatch(str(file), batch.append_column(ROW_COLUMN, rows))
                    row += batch.num_rows
            except (OSError, pa.ArrowException) as exc:
                raise SourceError(file, f"unreadable after row {row} ({exc})") from exc

    def describe(self) -> dict[str, Any]:
        """The files read."""
        return {"files": [str(f) for f in self.files]}

    def damage(self) -> list[str]:
        """Parquet damage is found while reading (an unreadable file fails the run)."""
        return []
