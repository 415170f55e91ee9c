"""Write generated rows to a file or data root, in one of the formats a source can have."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from dualmem_bulk._fs import atomic_path
from dualmem_bulk.errors import UsageError
from dualmem_bulk.generate.engram_root import write_engram_root
from dualmem_bulk.generate.memories import check_arguments, generate_batches
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources.jsonl import write_jsonl

__all__ = ["write_generated"]


def write_generated(path: Path, nodes: int, seed: int,
                    fmt: Literal["parquet", "jsonl", "engram-wal"] = "parquet",
                    batch_size: int = 65_536) -> int:
    """Write ``nodes`` generated rows to ``path`` atomically; return the rows written.

    ``parquet``: row groups of ``batch_size``; ``jsonl``: serde JSON lines; ``engram-wal``: an
    Engram data root (``path`` a new or empty directory) holding the rows of
    :func:`generate_wal_batches` as EpisodeStore records, over a few memory spaces and several
    ``wal-<16 hex>.log`` files per space, with some MemoryUpdate, duplicate and Checkpoint
    records that replay ignores. Sequences restart at 0 in every file, as Engram's do.
    """
    if fmt == "engram-wal":
        check_arguments(nodes, seed, batch_size)
        return write_engram_root(path, nodes, seed)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; fmt {fmt} writes one file: give its name",
                         "fmt")
    batches = generate_batches(nodes, seed, batch_size)
    if fmt == "jsonl":
        return write_jsonl(batches, path)
    if fmt != "parquet":
        raise ValueError(f"fmt must be 'parquet', 'jsonl' or 'engram-wal', got {fmt!r}")
    rows = 0
    # Dictionary encoding is tried and abandoned on every float page: off, writing is ~2.5x faster.
    with atomic_path(path) as tmp, pq.ParquetWriter(
        tmp, LEGACY_SCHEMA, use_dictionary=False
    ) as writer:
        for batch in batches:
            writer.write_batch(batch, row_group_size=batch_size)
            rows += batch.num_rows
    return rows
