"""A partition's task in the partitioned export (:mod:`dualmem_bulk.offline.partitioned`): it reads
its part of the source, validates, hashes, writes its snapshot and quarantine parts and its
target fragment, reads the fragment back and verifies it, where it runs (a local worker
process, a Dask worker, or the driver with ``--workers 0``)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk._fs import atomic_path, fsync_path
from dualmem_bulk._threads import InOrderWorker, prefetched
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import to_dual
from dualmem_bulk.errors import InvalidRows
from dualmem_bulk.offline.export import quarantine_table
from dualmem_bulk.rundir.files import QUARANTINE, SNAPSHOT
from dualmem_bulk.schema import DUAL_SCHEMA, QUARANTINE_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.sources import SourcePart
from dualmem_bulk.sources.parquet import ParquetPart
from dualmem_bulk.sources.scan import Tally
from dualmem_bulk.sources.validate import Origins, SeenIds, validate_batch
from dualmem_bulk.stores import PARQUET_OPTIONS, TargetFormat
from dualmem_bulk.stores.snapshot import Snapshot, part_name
from dualmem_bulk.stores.snapshot_bytes import (
    COPY_KEY,
    FIRST_ROW_KEY,
    FORMAT,
    FORMAT_KEY,
    GROUPS_KEY,
    SIDECAR_COLUMNS,
    SIDECAR_SCHEMA,
    copy_part,
)
from dualmem_bulk.stores.staging import StagedWriter, Written, staged_writer
from dualmem_bulk.verify.pieces import SNAPSHOT_KEYS, PieceVerdict, verify_batches

__all__ = ["PartitionDone", "PartitionTask", "export_partition"]

_READ_BACK_ROWS = 4096
"""Rows per batch when a task reads its fragment back to verify it (Lance's read buffers grow
with the batch)."""


@dataclass(frozen=True)
class PartitionTask:
    """One source partition to export, convert and write, for a worker: what to read, where
    its snapshot part and its fragment go."""

    unit: int
    part: SourcePart
    run_dir: Path
    target_format: TargetFormat
    target: Path
    """The staging store the fragment is written into (committed by the driver)."""
    chunk: int
    """Rows read, validated and hashed at a time (a snapshot row group)."""
    strict: bool
    drop: tuple[tuple[int, str | None], ...] = ()
    """Positions among the part's valid rows to reject as duplicates of earlier parts, each
    with where its first occurrence is."""
    copy: str | None = None
    """The snapshot's copy of the part's Parquet file (its name in the snapshot directory):
    the task copies its row groups' bytes there, reads them from there, and writes a sidecar
    as its snapshot part."""

    @property
    def needs(self) -> tuple[Path, ...]:
        """What a worker must see: the part's source files, the run directory, the target's
        directory."""
        return (*self.part.needs, self.run_dir, self.target.parent)


@dataclass(frozen=True)
class PartitionDone:
    """A partition exported and written (not yet committed): what the driver merges."""

    unit: int
    nodes_in: int
    """Source rows read (valid or not)."""
    rows: int
    """Valid rows: in the snapshot part and in the fragment."""
    digest: str
    groups: int
    """Row groups of the snapshot part."""
    quarantined: int
    reasons: dict[str, int]
    sample: list[dict[str, Any]]
    written: Written
    verdict: PieceVerdict
    """The fragment read back from disk and checked against the snapshot part."""
    uuids: pa.FixedSizeBinaryArray
    """Node UUID of every valid row, in source order."""
    spaces: pa.Array
    """Memory space of every valid row."""
    origins: Origins
    """Source file and row of every valid row."""
    seconds: float

    def stats(self) -> dict[str, Any]:
        """What the journal keeps of the partition's export (JSON)."""
        files, codes = self.origins
        return {"nodes_in": self.nodes_in, "rows": self.rows, "digest": self.digest,
                "groups": self.groups, "quarantined": self.quarantined,
                "reasons": self.reasons, "sample": self.sample, "seconds": self.seconds,
                "origins": {"files": list(files), "runs": _runs(codes)}}


def _runs(codes: np.ndarray) -> list[list[int]]:
    """``codes`` as runs of consecutive values, ``[first, count]`` each: the source rows of a
    part's valid rows in a few numbers (a run breaks only where rows were rejected)."""
    if not len(codes):
        return []
    starts = np.concatenate([[0], np.flatnonzero(np.diff(codes) != 1) + 1])
    ends = np.append(starts[1:], len(codes))
    return [[int(codes[a]), int(b - a)] for a, b in zip(starts, ends, strict=True)]


class _Drop:
    """The validator's hook rejecting the valid rows at ``positions`` (counted over the part)."""

    def __init__(self, positions: tuple[tuple[int, str | None], ...]) -> None:
        ordered = sorted(positions)
        self.at = np.asarray([p for p, _ in ordered], dtype=np.int64)
        self.firsts = [first for _, first in ordered]
        self.before = 0

    def __call__(self, valid: int) -> dict[int, str | None]:
        start, self.before = self.before, self.before + valid
        lo, hi = np.searchsorted(self.at, [start, self.before]).tolist()
        return {int(self.at[i]) - start: self.firsts[i] for i in range(lo, hi)}


def export_partition(task: PartitionTask) -> PartitionDone:
    """Export, convert and write one partition, then verify its fragment from disk."""
    started = time.perf_counter()
    seen, digest, tally = SeenIds(), TableDigest(), Tally()
    uuids: list[pa.Array] = []
    spaces: list[pa.Array] = []
    files: dict[str, int] = {}
    origins: list[np.ndarray] = []
    drop = _Drop(task.drop) if task.drop else None
    name = part_name(task.unit)
    snapshot, quarantine = task.run_dir / SNAPSHOT / name, task.run_dir / QUARANTINE / name
    snapshot.parent.mkdir(exist_ok=True)
    part, copy, metadata = task.part, None, {}
    if task.copy is not None:
        assert isinstance(part, ParquetPart)
        copy = snapshot.parent / task.copy
        copy_part(part.path, copy, part.first_group, part.end_group)
        part = dataclasses.replace(part, read_from=copy)
        metadata = {FORMAT_KEY: FORMAT, COPY_KEY: task.copy, FIRST_ROW_KEY: str(part.first_row),
                    GROUPS_KEY: f"{part.first_group}-{part.end_group}"}
    writer = staged_writer(task.target_format, task.target, DUAL_SCHEMA)
    failure: list[BaseException] = []
    with atomic_path(snapshot) as snap_file, contextlib.ExitStack() as stack:
        snap = stack.enter_context(pq.ParquetWriter(
            snap_file, SIDECAR_SCHEMA if copy else SNAPSHOT_SCHEMA, **PARQUET_OPTIONS))
        background = stack.enter_context(InOrderWorker())  # exits before the writer closes
        rejects: list[pq.ParquetWriter] = []

        def converted() -> Iterator[pa.RecordBatch]:
            nonlocal digest
            for chunk in part.batches(task.chunk):
                checked = validate_batch(chunk, seen, drop)
                tally.add(chunk.batch.num_rows + len(chunk.rejected), checked.rejected)
                if checked.rejected:
                    if task.strict:
                        first = checked.rejected[0]
                        raise InvalidRows(tally.quarantined,
                                          f"{first.source} row {first.row}: {first.reason}")
                    if not rejects:  # opened last, so it is closed (and renamed) first
                        quarantine.parent.mkdir(exist_ok=True)
                        rejects.append(stack.enter_context(pq.ParquetWriter(
                            stack.enter_context(atomic_path(quarantine)), QUARANTINE_SCHEMA)))
                    rejects[0].write_table(quarantine_table(checked.rejected))
                good = checked.good
                sums = row_checksums(good)
                digest += TableDigest.of(sums)
                uuids.append(checked.uuids)
                origins.append((files.setdefault(chunk.source, len(files)) << 40) | checked.rows)
                spaces.append(good.column("space"))
                if good.num_rows:
                    kept = good.append_column(SNAPSHOT_SCHEMA.field("checksum"), sums)
                    if copy is not None:
                        kept = pa.RecordBatch.from_arrays(
                            [pa.array(checked.rows, pa.int64()),
                             *kept.select(list(SIDECAR_COLUMNS)).columns],
                            schema=SIDECAR_SCHEMA)
                    background.submit(snap.write_batch, kept)
                    yield to_dual(good, sums, checked.uuids)

        def guarded() -> Iterator[pa.RecordBatch]:
            """Keep the reader's own error: Lance, pulling the batches, would rewrap it."""
            try:
                yield from converted()
            except BaseException as exc:
                failure.append(exc)
                raise

        try:
            written = writer.write(task.unit, prefetched(guarded()), durable=False)
        except Exception:
            if failure:
                raise failure[0] from None
            raise
        background.drain()  # every batch written before the footer
        snap.add_key_value_metadata({"dualmem.snapshot.rows": str(digest.rows),
                                     "dualmem.snapshot.digest": digest.hex, **metadata})
        stack.close()
        # The fsyncs (hundreds of MB) overlap the verification, which reads the page cache.
        background = stack.enter_context(InOrderWorker())
        background.submit(_sync, writer, written, snap_file, copy)
        verdict = verify_batches(
            writer.read(written, _READ_BACK_ROWS),
            Snapshot(snap_file).batches(_READ_BACK_ROWS, SNAPSHOT_KEYS), writer.files(written))
        background.drain()
        snap_groups = pq.ParquetFile(snap_file).metadata.num_row_groups
    return PartitionDone(
        task.unit, tally.nodes_in, digest.rows, digest.hex, snap_groups, tally.quarantined,
        dict(tally.reasons), tally.sample, written, verdict,
        pa.concat_arrays(uuids) if uuids else pa.array([], pa.binary(16)),
        pa.concat_arrays(spaces) if spaces else pa.array([], pa.utf8()),
        (tuple(files), np.concatenate(origins) if origins else np.zeros(0, np.int64)),
        round(time.perf_counter() - started, 3))


def _sync(writer: StagedWriter, written: Written, snapshot: Path, copy: Path | None) -> None:
    """Make the fragment, the snapshot part and the bytes copied for it durable."""
    writer.sync(written)
    fsync_path(snapshot)
    if copy is not None:
        fsync_path(copy)
