"""The legacy Memory store, written back from a run's snapshot (rollback of an in-place run whose
backup is gone); its digest is read through the same validating scan as any legacy source's
(:func:`~dualmem_bulk.sources.scan.legacy_digest`).

The written rows are the snapshot's, in :data:`~dualmem_bulk.schema.LEGACY_SCHEMA` exactly (the
checksum column dropped), so the store's digest equals the snapshot's. Rows the run quarantined
are not in the snapshot and cannot come back this way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lance
import pyarrow as pa

from dualmem_bulk._fs import fsync_path, fsync_tree
from dualmem_bulk.errors import SourceError
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.stores import DEFAULT_BATCH_SIZE, TargetFormat, write_store
from dualmem_bulk.stores.snapshot import Snapshot

__all__ = ["write_legacy"]


def _snapshot_batches(snapshot: Path, batch_size: int, progress: Progress
                      ) -> Iterator[pa.RecordBatch]:
    """The snapshot's rows as LEGACY_SCHEMA batches (its checksum column left out)."""
    try:
        snap = Snapshot(snapshot)
        rows = snap.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(snapshot, f"not a readable snapshot ({exc})") from exc
    progress.phase("restore", rows)
    for batch in snap.batches(batch_size, LEGACY_SCHEMA.names):
        yield pa.RecordBatch.from_arrays(batch.columns, schema=LEGACY_SCHEMA)
        progress.advance(batch.num_rows)


def write_legacy(snapshot: Path, path: Path, fmt: TargetFormat, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress = NULL_PROGRESS) -> None:
    """Write the snapshot's rows as a legacy store at ``path``.

    ``parquet``: a new directory of part files, built under a hidden sibling name and renamed
    into place (``path`` must not exist). ``lance``: a new version of the dataset at ``path``
    (an overwrite commit, so earlier versions stay restorable), or a new dataset; its files are
    fsynced before this returns.
    """
    batches = _snapshot_batches(snapshot, batch_size, progress)
    if fmt == "parquet":
        if path.exists():
            raise FileExistsError(f"{path}: already exists; remove it before rebuilding")
        write_store(path, "parquet", LEGACY_SCHEMA, batches)
    else:
        mode = "overwrite" if (path / "_versions").is_dir() else "create"
        reader = pa.RecordBatchReader.from_batches(LEGACY_SCHEMA, batches)
        lance.write_dataset(reader, str(path), schema=LEGACY_SCHEMA, mode=mode)
        fsync_tree(path)
        fsync_path(path.parent)
    progress.done()
