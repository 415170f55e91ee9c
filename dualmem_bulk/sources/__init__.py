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

from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa

__all__ = ["ROW_COLUMN", "Rejected", "SourceBatch"]

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
