"""A legacy Memory store kept as a Lance dataset (what an in-place conversion reads and rollback
restores), streamed in bounded batches with the same small read-ahead as the target store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa

from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.schema.conform import check_schema
from dualmem_bulk.sources import ROW_COLUMN, SourceBatch, refuse_dual
from dualmem_bulk.stores import LANCE_READAHEAD, lance_batches

__all__ = ["LanceLegacySource", "LancePart", "cut_rows"]


def _numbered(path: Path, batches: Iterator[pa.RecordBatch], row: int
              ) -> Iterator[SourceBatch]:
    """``batches`` with ``_row`` counted from ``row``; read errors name the dataset."""
    try:
        for batch in batches:
            rows = pa.array(range(row, row + batch.num_rows), pa.int64())
            yield SourceBatch(str(path), batch.append_column(ROW_COLUMN, rows))
            row += batch.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(path, f"unreadable after row {row} ({exc})") from exc


def _columns(ds: lance.LanceDataset) -> list[str]:
    wanted = set(LEGACY_SCHEMA.names)
    return [n for n in ds.schema.names if n in wanted]


@dataclass(frozen=True)
class LancePart:
    """A run of consecutive rows of one version of a Lance dataset: a partition of a Lance
    source. It may start or end inside a fragment, so a dataset of one large fragment still
    splits into many parts."""

    path: Path
    version: int
    ranges: tuple[tuple[int, int, int], ...]
    """``(fragment id, offset, rows)`` of each fragment's slice, in scan order."""
    first_row: int
    """Position in the version's scan of the part's first row."""
    rows: int

    @property
    def needs(self) -> tuple[Path, ...]:
        """The dataset."""
        return (self.path,)

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """The part's rows as the whole dataset's reader yields them."""
        ds = lance.dataset(str(self.path), version=self.version)
        columns = _columns(ds)
        fragments = [ds.get_fragment(fid) for fid, _offset, _rows in self.ranges]
        if None in fragments:
            raise SourceError(self.path, f"version {self.version} lost fragments of "
                                         f"{[fid for fid, _, _ in self.ranges]} since the run "
                                         "started")
        yield from _numbered(self.path, (
            batch for fragment, (_fid, offset, rows) in zip(fragments, self.ranges, strict=True)
            if fragment is not None
            for batch in fragment.to_batches(columns=columns, batch_size=batch_size,
                                             offset=offset, limit=rows,
                                             batch_readahead=LANCE_READAHEAD)),
            self.first_row)

    def describe(self) -> str:
        """Dataset, version and fragment slices."""
        return (f"{self.path} version {self.version} rows {self.first_row}-"
                f"{self.first_row + self.rows} (fragment, offset, rows: "
                f"{[list(r) for r in self.ranges]})")


def cut_rows(sizes: list[tuple[int, int]], every: int) -> list[tuple[tuple[int, int, int], ...]]:
    """Consecutive runs of ``every`` rows (the last may be short; at least one) over pieces
    ``(id, rows)``, each run as ``(id, offset, rows)`` slices of the pieces it covers.

    Example:
        >>> cut_rows([(7, 5), (9, 5)], 4)
        [((7, 0, 4),), ((7, 4, 1), (9, 0, 3)), ((9, 3, 2),)]
    """
    runs: list[tuple[tuple[int, int, int], ...]] = []
    run: list[tuple[int, int, int]] = []
    room = every
    for piece, size in sizes:
        offset = 0
        while offset < size:
            take = min(room, size - offset)
            run.append((piece, offset, take))
            offset, room = offset + take, room - take
            if not room:
                runs.append(tuple(run))
                run, room = [], every
    if run or not runs:
        runs.append(tuple(run))
    return runs


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
        yield from _numbered(self.path, lance_batches(self._ds, batch_size, _columns(self._ds)),
                             0)

    def partitions(self, rows: int) -> list[LancePart]:
        """Runs of ``rows`` rows (the last may be short) of the version read now, cut inside
        fragments where they are larger."""
        sizes = [(f.fragment_id, int(f.count_rows())) for f in self._ds.get_fragments()]
        parts: list[LancePart] = []
        first_row = 0
        for ranges in cut_rows(sizes, max(1, rows)):
            n = sum(r for _fid, _offset, r in ranges)
            parts.append(LancePart(self.path, int(self._ds.version), ranges, first_row, n))
            first_row += n
        return parts

    def describe(self) -> dict[str, Any]:
        """The dataset, the version read and its fragment count."""
        return {"files": [str(self.path)], "version": int(self._ds.version),
                "fragments": len(self._ds.get_fragments())}

    def damage(self) -> list[str]:
        """Lance damage shows while reading (an unreadable fragment fails the run)."""
        return []
