"""Resumable target writers: one atomic commit per unit of batches, recorded by the journal.

The store is built under a hidden staging path next to the target and renamed onto it when the
last unit is committed. A unit in flight when the process died is either committed (and then
recorded in the journal only if the journal write happened) or invisible: on resume,
:meth:`resume` rolls the staging store back to exactly the units the journal recorded, so a unit
is redone, never doubled.

- Lance: one ``write_dataset`` commit (a new version) per unit; the version is recorded. Resume
  restores the recorded version if a later, unrecorded commit exists. Lance itself does not
  fsync, so the files of each commit are fsynced before the commit is reported.
- Parquet: one part file per unit (``part-00000.parquet``...), written under a temporary name,
  fsynced and renamed. Resume deletes parts the journal does not know.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import lance
import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk._fs import atomic_path, fault_point, fsync_dir, remove
from dualmem_bulk.journal import BatchRecord
from dualmem_bulk.stores import PARQUET_OPTIONS, TargetFormat

__all__ = ["StagedWriter", "staged_writer", "staging_path", "unsliced"]


def staging_path(target: Path) -> Path:
    """Where the store is built before it is renamed onto ``target``."""
    return target.with_name(f".{target.name}.dualmem-partial")


class StagedWriter(Protocol):
    """Commits units of DualMemoryNode batches to a staging store."""

    path: Path

    def resume(self, committed: list[BatchRecord]) -> None:
        """Bring the staging store back to exactly the ``committed`` units."""

    def commit(self, unit: int, batches: Iterable[pa.RecordBatch]) -> tuple[int | None, str | None]:
        """Write one unit atomically; return (Lance version, part file name)."""


def _fsync_newer(root: Path, since_ns: int) -> None:
    """fsync the files under ``root`` modified since ``since_ns``, then their directories."""
    dirs: set[Path] = set()
    for top, _subdirs, files in os.walk(root):
        for name in files:
            path = Path(top) / name
            if path.stat().st_mtime_ns >= since_ns:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                dirs.add(Path(top))
    for changed in dirs:
        fsync_dir(changed)


def unsliced(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A copy of ``batch`` whose arrays start at offset 0 when any of them does not: Lance 14
    panics on a sliced all-null struct column (``end <= self.len()``)."""
    if all(col.offset == 0 for col in batch.columns):
        return batch
    return batch.take(pa.array(range(batch.num_rows), pa.int64()))


class _Staging:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema

    def _fresh(self, committed: list[BatchRecord]) -> bool:
        """With nothing committed, the staging store starts over: remove what is there."""
        if not committed:
            remove(self.path)
        return not committed


class _LanceStaging(_Staging):
    def resume(self, committed: list[BatchRecord]) -> None:
        if not self._fresh(committed):
            self._restore(committed[-1].version)

    def _restore(self, version: int | None) -> None:
        """Make ``version`` the latest again if a later, unrecorded commit exists."""
        if version is None:
            raise ValueError(f"{self.path}: the journal holds no Lance version for the last unit")
        ds = lance.dataset(str(self.path))
        if ds.version != version:
            ds.checkout_version(version).restore()  # type: ignore[no-untyped-call]

    def _mode(self, unit: int) -> str:
        return "append" if (self.path / "_versions").is_dir() else "create"

    def commit(self, unit: int, batches: Iterable[pa.RecordBatch]) -> tuple[int | None, str | None]:
        fault_point("target-write")
        since = time.time_ns() - 1_000_000_000
        mode = self._mode(unit)
        reader = pa.RecordBatchReader.from_batches(self.schema, map(unsliced, batches))
        ds = lance.write_dataset(reader, str(self.path), schema=self.schema, mode=mode,
                                 max_rows_per_file=1 << 30,
                                 transaction_properties={"dualmem.unit": str(unit)})
        _fsync_newer(self.path, since)
        fsync_dir(self.path.parent)
        return int(ds.version), None


class _LanceInPlace(_LanceStaging):
    """The legacy Lance store itself: unit 0 overwrites it (a new version, dual schema), later
    units append; resuming with no unit recorded goes back to the pre-migration version."""

    def __init__(self, path: Path, schema: pa.Schema, base_version: int) -> None:
        super().__init__(path, schema)
        self.base_version = base_version

    def resume(self, committed: list[BatchRecord]) -> None:
        self._restore(committed[-1].version if committed else self.base_version)

    def _mode(self, unit: int) -> str:
        return "overwrite" if unit == 0 else "append"


class _ParquetStaging(_Staging):
    def resume(self, committed: list[BatchRecord]) -> None:
        if self._fresh(committed):
            return
        known = {r.part for r in committed}
        for part in self.path.iterdir():
            if part.name not in known:
                remove(part)

    def commit(self, unit: int, batches: Iterable[pa.RecordBatch]) -> tuple[int | None, str | None]:
        fault_point("target-write")
        if not self.path.exists():
            self.path.mkdir()
            fsync_dir(self.path.parent)
        name = f"part-{unit:05d}.parquet"
        with atomic_path(self.path / name) as tmp, pq.ParquetWriter(
            tmp, self.schema, **PARQUET_OPTIONS
        ) as writer:
            for batch in batches:
                writer.write_batch(batch)
        return None, name


def staged_writer(fmt: TargetFormat, path: Path, schema: pa.Schema,
                  in_place_base: int | None = None) -> StagedWriter:
    """The resumable writer for ``fmt`` at staging ``path``; with ``in_place_base`` (a Lance
    version), the writer converts that Lance store in place, version by version."""
    if in_place_base is not None:
        return _LanceInPlace(path, schema, in_place_base)
    return _LanceStaging(path, schema) if fmt == "lance" else _ParquetStaging(path, schema)

