"""A legacy Memory store kept as a Lance dataset (what an in-place conversion reads and rollback
restores), streamed in bounded batches with the same small read-ahead as the target store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa

from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.schema.validate import check_schema
from dualmem_bulk.sources import ROW_COLUMN, SourceBatch
from dualmem_bulk.sources.detect import refuse_dual
from dualmem_bulk.stores import lance_batches

__all__ = ["LanceLegacySource"]


class LanceLegacySource:
    """Legacy Memory rows of the latest version of a Lance dataset; ``_row`` is the row's
    position in the scan (fragment order)."""

    kind = "lance"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = [path]
        try:
            self._ds = lance.dataset(str(path))
        except (OSError, ValueError) as exc:
            raise SourceError(path, f"not a readable Lance dataset ({exc})") from exc
        refuse_dual(path, self._ds.schema)
        check_schema(self._ds.schema, str(path))

    @property
    def total_rows(self) -> int:
        """Rows of the dataset's current version."""
        return int(self._ds.count_rows())

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """Loose legacy batches (only the legacy columns) with ``_row`` counted across the scan."""
        wanted = set(LEGACY_SCHEMA.names)
        columns = [n for n in self._ds.schema.names if n in wanted]
        row = 0
        try:
            for batch in lance_batches(self._ds, batch_size, columns):
                rows = pa.array(range(row, row + batch.num_rows), pa.int64())
                yield SourceBatch(str(self.path), batch.append_column(ROW_COLUMN, rows))
                row += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(self.path, f"unreadable after row {row} ({exc})") from exc

    def describe(self) -> dict[str, Any]:
        """The dataset, the version read and its fragment count."""
        return {"files": [str(self.path)], "version": int(self._ds.version),
                "fragments": len(self._ds.get_fragments())}

    def damage(self) -> list[str]:
        """Lance damage shows while reading (an unreadable fragment fails the run)."""
        return []
