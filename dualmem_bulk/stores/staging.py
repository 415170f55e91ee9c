"""Resumable target writers: units written by any process, committed by the driver alone.

The store is built under a hidden staging path next to the target and renamed onto it when the
last unit is committed. Writing a unit (:meth:`StagedWriter.write`, in a worker process or the
driver) leaves it invisible; only :meth:`StagedWriter.commit`, run by the driver in unit order,
makes it part of the store, and the journal records it after that. A unit written or committed
but not recorded when the process died is invisible or rolled back on resume
(:meth:`StagedWriter.resume`), so a unit is redone, never doubled.

- Lance: each unit is written as a fragment (``lance.fragment.write_fragments``, files fsynced)
  and committed as one version (Overwrite for the first unit, Append after); the version is
  recorded. Resume restores the recorded version if a later, unrecorded commit exists. The
  migrator stays the table's only committer.
- Lance in place (the legacy store itself): each unit's fragments are written into the store
  and only recorded (their metadata is the unit's part); one commit at the end publishes them
  all over the pre-migration version.
- Parquet: one part file per unit (``part-00000.parquet``...), written under a temporary name,
  fsynced and renamed. Resume deletes parts the journal does not know.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import lance
import pyarrow as pa
import pyarrow.parquet as pq
from lance.file import LanceFileReader
from lance.fragment import FragmentMetadata, write_fragments

from dualmem_bulk._fs import atomic_path, fault_point, fsync_path, remove
from dualmem_bulk.errors import SourceError
from dualmem_bulk.rundir.journal import BatchRecord
from dualmem_bulk.stores import PARQUET_OPTIONS, TargetFormat, open_parquet, parquet_batches

__all__ = ["LanceInPlace", "StagedWriter", "Written", "data_files", "fsync_newer",
           "lance_write_schema", "recorded_files", "remove_strays", "staged_writer", "unsliced"]

Written = Any
"""What :meth:`StagedWriter.write` hands to :meth:`StagedWriter.commit` (picklable): Lance
fragment metadata, or a Parquet part file name."""

_UNCOMPRESSED = ("content", "embedding", "centroid")
"""Columns Lance stores without compression. On 65K nodes Lance's default string compression
of ``content`` doubled the write time (0.77 s against 0.37 s) to save 5% of the bytes, and
float vectors hardly compress (benchmarks/RESULTS.md)."""


def lance_write_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the Lance encoding choices made for speed (field metadata)."""
    for name in _UNCOMPRESSED:
        if name in schema.names:
            i = schema.get_field_index(name)
            field = schema.field(i)
            schema = schema.set(i, field.with_metadata(
                {**(field.metadata or {}), b"lance-encoding:compression": b"none"}))
    return schema


class StagedWriter(Protocol):
    """Writes units of DualMemoryNode batches (any process) and commits them (driver only)."""

    path: Path

    def resume(self, committed: list[BatchRecord]) -> None:
        """Bring the staging store back to exactly the ``committed`` units."""

    def write(self, unit: int, batches: Iterable[pa.RecordBatch], durable: bool = True
              ) -> Written:
        """Write one unit invisibly; safe to run in several processes at once. With
        ``durable=False`` its files are not yet fsynced: :meth:`sync` must run before the unit
        is committed (so the fsync can overlap other work)."""

    def sync(self, written: Written) -> None:
        """Make a unit written with ``durable=False`` durable."""

    def commit(self, unit: int, written: Written) -> tuple[int | None, str | None]:
        """Make a written unit part of the store; return (Lance version, part file name)."""

    def files(self, written: Written) -> tuple[str, ...]:
        """The data files a written unit consists of, as :meth:`TargetStore.piece_files`
        names them once committed."""

    def read(self, written: Written, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Read a written unit back from its files (committed or not)."""


def fsync_newer(root: Path, since_ns: int) -> None:
    """fsync the files under ``root`` modified since ``since_ns``, then their directories."""
    dirs: set[Path] = {root} if root.is_dir() else set()
    for top, _subdirs, files in os.walk(root):
        for name in files:
            path = Path(top) / name
            if path.stat().st_mtime_ns >= since_ns:
                fsync_path(path)
                dirs.add(Path(top))
    for changed in dirs:
        fsync_path(changed)


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

    def write(self, unit: int, batches: Iterable[pa.RecordBatch], durable: bool = True
              ) -> list[FragmentMetadata]:
        schema = lance_write_schema(self.schema)
        reader = pa.RecordBatchReader.from_batches(
            schema, (pa.RecordBatch.from_arrays(unsliced(b).columns, schema=schema)
                     for b in batches))
        fragments: list[FragmentMetadata] = write_fragments(
            reader, str(self.path), schema=schema, mode="overwrite", max_rows_per_file=1 << 30)
        if durable:
            self.sync(fragments)
        return fragments

    def sync(self, written: list[FragmentMetadata]) -> None:
        data = self.path / "data"
        for name in self.files(written):
            fsync_path(data / name)
        if written:  # no rows, no data files (and maybe no data directory yet)
            fsync_path(data)

    def _first(self, unit: int) -> bool:
        return not (self.path / "_versions").is_dir()

    def files(self, written: list[FragmentMetadata]) -> tuple[str, ...]:
        return tuple(file.path for fragment in written for file in fragment.files)

    def read(self, written: list[FragmentMetadata], batch_size: int
             ) -> Iterator[pa.RecordBatch]:
        for name in self.files(written):  # one data file (all columns) per fragment
            reader = LanceFileReader(str(self.path / "data" / name))
            rows = reader.num_rows()
            for start in range(0, rows, batch_size):  # read_all loads the whole file at once
                yield from reader.read_range(start, min(batch_size, rows - start),
                                             batch_size=batch_size).to_batches()

    def commit(self, unit: int, written: list[FragmentMetadata]
               ) -> tuple[int | None, str | None]:
        fault_point("target-write")
        since = time.time_ns() - 1_000_000_000
        exists = (self.path / "_versions").is_dir()
        operation: Any = (
            lance.LanceOperation.Overwrite(lance_write_schema(self.schema), written)
            if self._first(unit) else lance.LanceOperation.Append(written))
        ds = lance.LanceDataset.commit(
            str(self.path), operation,
            read_version=lance.dataset(str(self.path)).version if exists else None,
            commit_message=f"dualmem unit {unit}")
        for meta in ("_versions", "_transactions"):
            fsync_newer(self.path / meta, since)
        fsync_path(self.path)
        fsync_path(self.path.parent)
        return int(ds.version), None


class LanceInPlace(_LanceStaging):
    """The legacy Lance store itself. Units' fragments are written into it invisibly and a
    unit's "commit" only hands their metadata to the journal (as the unit's part): the store
    keeps serving its pre-migration version, which the tasks read, until :meth:`publish`
    commits every unit's fragments as one version (Overwrite, dual schema) once the snapshot is
    whole. Readers never see a partly converted store; rolling back means restoring
    ``base_version``."""

    def __init__(self, path: Path, schema: pa.Schema, base_version: int) -> None:
        super().__init__(path, schema)
        self.base_version = base_version

    def resume(self, committed: list[BatchRecord]) -> None:
        """Nothing to undo: no unit changed the store."""

    def commit(self, unit: int, written: list[FragmentMetadata]
               ) -> tuple[int | None, str | None]:
        fault_point("target-write")
        return None, json.dumps([fragment.to_json() for fragment in written])

    def published(self, committed: list[BatchRecord]) -> int | None:
        """The version holding exactly the ``committed`` units' fragments, if it is the latest
        (a publish the journal did not record); None if the store is still at
        ``base_version``. Raises :class:`SourceError` if someone else changed the store."""
        ds = lance.dataset(str(self.path))
        if ds.version == self.base_version:
            return None
        mine = recorded_files(committed)
        theirs = [file.path for fragment in ds.get_fragments()
                  for file in fragment.metadata.files]
        if ds.version == self.base_version + 1 and theirs == mine:
            return int(ds.version)
        raise SourceError(self.path, f"the store changed since the run read version "
                                     f"{self.base_version} (it is at version {ds.version}); "
                                     "roll the run back")

    def publish(self, committed: list[BatchRecord]) -> int:
        """Commit the ``committed`` units' fragments, in unit order, as the store's new
        version (or find that commit already made); fsynced before it returns."""
        done = self.published(committed)
        if done is not None:
            return done
        since = time.time_ns() - 1_000_000_000
        fragments = [f for record in committed for f in _fragments(record)]
        ds = lance.LanceDataset.commit(
            str(self.path), lance.LanceOperation.Overwrite(
                lance_write_schema(self.schema), fragments),
            read_version=self.base_version, commit_message="dualmem in-place conversion")
        for meta in ("_versions", "_transactions"):
            fsync_newer(self.path / meta, since)
        fsync_path(self.path)
        fault_point("in-place-publish")
        return int(ds.version)


def data_files(store: Path) -> list[str]:
    """The names of a Lance store's data files (an in-place run lists them when it starts)."""
    data = store / "data"
    return sorted(p.name for p in data.iterdir() if p.is_file()) if data.is_dir() else []


def remove_strays(store: Path, before: list[str], published: list[BatchRecord] | None) -> int:
    """Remove the data files an in-place run wrote into ``store`` that no version refers to:
    every file not listed ``before`` the run, except those of the ``published`` units (the
    version the run committed) and of the latest version. Only the run writes into the store
    while it is converted offline. Returns how many were removed."""
    if not (store / "_versions").is_dir():
        return 0
    latest = [file.path for fragment in lance.dataset(str(store)).get_fragments()
              for file in fragment.metadata.files]
    keep = {*before, *latest, *recorded_files(published or [])}
    strays = [name for name in data_files(store) if name not in keep]
    for name in strays:
        remove(store / "data" / name)
    if strays:
        fsync_path(store / "data")
    return len(strays)


def recorded_files(records: list[BatchRecord]) -> list[str]:
    """The data files (under the store's ``data``) of the units an in-place run recorded."""
    return [file.path for record in records for fragment in _fragments(record)
            for file in fragment.files]


def _fragments(record: BatchRecord) -> list[FragmentMetadata]:
    """The fragments an in-place unit wrote, from the journal's record of it (none for a unit
    an earlier version of this tool committed itself)."""
    return [FragmentMetadata.from_json(json.dumps(item))
            for item in json.loads(record.part or "[]")]


class _ParquetStaging(_Staging):
    def resume(self, committed: list[BatchRecord]) -> None:
        if self._fresh(committed):
            return
        known = {r.part for r in committed}
        for part in self.path.iterdir():
            if part.name not in known:
                remove(part)

    def write(self, unit: int, batches: Iterable[pa.RecordBatch], durable: bool = True
              ) -> str:
        """The part under its final name; without ``durable``, a crash may leave it partial,
        and :meth:`resume` removes it (the journal does not know it)."""
        if not self.path.exists():
            self.path.mkdir(exist_ok=True)
            fsync_path(self.path.parent)
        name = f"part-{unit:05d}.parquet"
        with atomic_path(self.path / name, durable=durable) as tmp, pq.ParquetWriter(
            tmp, self.schema, **PARQUET_OPTIONS
        ) as writer:
            for batch in batches:
                writer.write_batch(batch)
        return name

    def sync(self, written: str) -> None:
        fsync_path(self.path / written)
        fsync_path(self.path)

    def commit(self, unit: int, written: str) -> tuple[int | None, str | None]:
        fault_point("target-write")
        return None, written

    def files(self, written: str) -> tuple[str, ...]:
        return (written,)

    def read(self, written: str, batch_size: int) -> Iterator[pa.RecordBatch]:
        yield from parquet_batches(open_parquet(self.path / written), batch_size)


def staged_writer(fmt: TargetFormat, path: Path, schema: pa.Schema,
                  in_place_base: int | None = None) -> StagedWriter:
    """The resumable writer for ``fmt`` at staging ``path``; with ``in_place_base`` (a Lance
    version), the writer converts that Lance store in place (units published together)."""
    if in_place_base is not None:
        return LanceInPlace(path, schema, in_place_base)
    return _LanceStaging(path, schema) if fmt == "lance" else _ParquetStaging(path, schema)

