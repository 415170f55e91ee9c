"""Readers that yield legacy Memory rows in bounded batches, whatever the source format.

Every reader yields :class:`SourceBatch` objects whose ``batch`` is *loose* legacy data: the
column names of :data:`dualmem_bulk.schema.LEGACY_SCHEMA` (missing nullable columns may be
absent), an ``embedding`` that may still be a variable-length list of float32 (rows of the wrong
length are judged later, by the validator, so they can be quarantined one by one), ``content``
as utf8 or binary (invalid UTF-8 is judged later too), plus an int64 ``_row`` column: the row's
0-based position in its source file (line index for JSON lines). Rows a reader cannot decode at
all (a line that is not JSON, say) come back in ``rejected`` instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import pyarrow as pa

from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import DUAL_NAME, schema_identity

__all__ = [
    "ROW_COLUMN",
    "NoRows",
    "Rejected",
    "SourceBatch",
    "SourcePart",
    "plan_runs",
    "refuse_dual",
]

ROW_COLUMN = "_row"
"""Name of the int64 column that carries each row's position in its source file."""


class Rejected(NamedTuple):
    """A source row that is not a valid Memory, with where it was and why."""

    source: str
    """File the row came from."""
    row: int
    """0-based row (or line) index in that file."""
    id: str | None
    """The row's id when it could be read."""
    reason: str
    """What was wrong, in words an operator can act on."""
    record: str | None = None
    """The raw record (JSON text, or hex of undecodable bytes) when there is one."""


@dataclass(frozen=True)
class SourceBatch:
    """One bounded batch of loose legacy rows from one source file."""

    source: str
    """File the rows came from."""
    batch: pa.RecordBatch
    """Loose legacy columns plus ``_row`` (see the module docstring)."""
    rejected: tuple[Rejected, ...] = field(default=())
    """Rows of this stretch of the file that could not be decoded at all."""


class SourcePart(Protocol):
    """One partition of a source: a slice that a task in any process reads on its own, yielding
    the same batches (same ``_row`` values) as the whole source's reader yields for that slice.
    Parts are picklable specs; reading one opens its files anew."""

    @property
    def rows(self) -> int:
        """Rows (or lines, records) the part covers, for progress; the valid rows may be
        fewer."""
        ...

    @property
    def needs(self) -> tuple[Path, ...]:
        """What a worker must see to read the part."""
        ...

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """The part's loose batches of at most ``batch_size`` rows, in source order."""
        ...

    def describe(self) -> str:
        """Where the part is, in words (the journal keeps the plan to check a resume)."""
        ...


@dataclass(frozen=True)
class NoRows:
    """The one partition of a source that has nothing to read (an Engram data root with no
    whole record, say): its task still writes an empty snapshot part and an empty target."""

    path: Path
    rows: int = 0

    @property
    def needs(self) -> tuple[Path, ...]:
        """The source."""
        return (self.path,)

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """Nothing."""
        yield from ()

    def describe(self) -> str:
        """The source, empty."""
        return f"{self.path}: nothing to read"


def plan_runs(sizes: list[int], every: int) -> list[tuple[int, int, int]]:
    """Consecutive runs over pieces of ``sizes`` rows: ``(first, end, rows)``, each at least
    ``every`` rows (the last may be short) and at least one piece.

    Example:
        >>> plan_runs([5, 5, 5, 2], 8)
        [(0, 2, 10), (2, 4, 7)]
    """
    runs: list[tuple[int, int, int]] = []
    first = 0
    while first < len(sizes):
        end, rows = first, 0
        while end < len(sizes) and (end == first or rows < every):
            rows += sizes[end]
            end += 1
        runs.append((first, end, rows))
        first = end
    return runs


def refuse_dual(path: Path, schema: pa.Schema) -> None:
    """Raise :class:`SourceError` if ``schema`` is a DualMemoryNode store's: it is no legacy
    source (converting it again would read its 16-byte ids as Memory ids)."""
    identity = schema_identity(schema)
    if (identity and identity[0] == DUAL_NAME) or "node_type" in schema.names:
        raise SourceError(path, "already a DualMemoryNode store (converted), not a legacy Memory "
                                "source; `dualmem-bulk inspect` it, or convert the legacy store")
