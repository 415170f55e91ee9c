"""What the JSON lines reader and writer share: the serde Memory's fields, the loose batch a
line becomes, and a numpy view of an Arrow mask."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dualmem_bulk.schema import EPISODE_TYPE, PROVENANCE_TYPE, TIMESTAMP_TYPE
from dualmem_bulk.sources import ROW_COLUMN

__all__ = ["F32_FIELDS", "LOOSE_SCHEMA", "TIME_FIELDS", "WHITESPACE", "mask"]

WHITESPACE = b" \t\r\n"
"""What JSON allows around a value."""
F32_FIELDS = ("activation", "confidence", "decay_rate")
TIME_FIELDS = ("last_access", "created_at")
LOOSE_SCHEMA = pa.schema([
    ("id", pa.utf8()), ("embedding", pa.list_(pa.float32())), ("activation", pa.float32()),
    ("confidence", pa.float32()), ("last_access", TIMESTAMP_TYPE), ("access_count", pa.uint64()),
    ("created_at", TIMESTAMP_TYPE), ("decay_rate", pa.float32()), ("content", pa.utf8()),
    ("embedding_provenance", PROVENANCE_TYPE), ("space", pa.utf8()), ("episode", EPISODE_TYPE),
    (ROW_COLUMN, pa.int64()),
])
"""The columns of a loose batch a line becomes (see :mod:`dualmem_bulk.sources`)."""


def mask(arr: pa.Array) -> np.ndarray:
    """A boolean Arrow array as a numpy bool array."""
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)
