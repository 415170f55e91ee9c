"""The partitioned export: every source partition is one task that does all of its rows' work
where it runs (a local worker process, a Dask worker, or the driver with ``--workers 0``).

A task reads its part of the source, validates it (duplicates within the part included),
computes row checksums and node UUIDs, writes its snapshot part and quarantine part, converts,
writes its target fragment (invisible until committed), reads the fragment back and verifies it
against the snapshot part, and returns its counts, digest and node UUIDs. The driver only plans,
merges and commits: it rejects a node UUID that an earlier part already holds (the first valid
occurrence in source order wins, as in a serial export) by having the task redo its part with
those rows quarantined, commits the fragments in part order, and records each finished part in
the journal before reporting it. A resumed run starts at the first part the journal has not
recorded; finished parts are never redone.

For a Parquet source the snapshot keeps the source's own bytes (one sparse copy per file, each
task copying its row groups into it and reading its rows from there) and each snapshot part is
a sidecar of the kept rows' keys and checksums (:mod:`dualmem_bulk.stores.snapshot_bytes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk._fs import atomic_path, fsync_path, remove
from dualmem_bulk._threads import InOrderWorker, prefetched
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import node_uuids, to_dual
from dualmem_bulk.engines import TaskPool
from dualmem_bulk.errors import InvalidRows, RunChanged
from dualmem_bulk.export import SAMPLE, Tally, quarantine_table
from dualmem_bulk.journal import BatchRecord, Journal
from dualmem_bulk.progress import Progress
from dualmem_bulk.report import RunReport
from dualmem_bulk.schema import DUAL_SCHEMA, QUARANTINE_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.schema.validate import Origins, SeenIds, validate_batch
from dualmem_bulk.sources import NoRows, SourcePart
from dualmem_bulk.sources.detect import Source
from dualmem_bulk.sources.parquet import ParquetPart
from dualmem_bulk.stores import PARQUET_OPTIONS, TargetFormat
from dualmem_bulk.stores.snapshot import QUARANTINE, SNAPSHOT, Snapshot, part_name
from dualmem_bulk.stores.snapshot_bytes import (
    COPY_KEY,
    FIRST_ROW_KEY,
    FORMAT,
    FORMAT_KEY,
    GROUPS_KEY,
    SIDECAR_COLUMNS,
    SIDECAR_SCHEMA,
    copy_name,
    copy_part,
    prepare_copy,
)
from dualmem_bulk.stores.staging import StagedWriter, Written, staged_writer
from dualmem_bulk.verify import SNAPSHOT_KEYS, PieceVerdict, verify_batches

__all__ = ["PartitionDone", "PartitionTask", "PartitionedExport", "export_partition"]

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


def _origins(stats: dict[str, Any]) -> Origins | None:
    """The source file and row of a recorded part's valid rows (None if not journalled)."""
    if "origins" not in stats:
        return None
    runs = stats["origins"]["runs"]
    codes = [np.arange(first, first + n, dtype=np.int64) for first, n in runs]
    return (tuple(stats["origins"]["files"]),
            np.concatenate(codes) if codes else np.zeros(0, np.int64))


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


@dataclass
class PartitionedExport:
    """The driver's side: plans the parts, runs their tasks on ``pool``, rejects duplicates
    across parts, commits each part's fragment in order and journals it before reporting it."""

    run_dir: Path
    journal: Journal
    pool: TaskPool
    writer: StagedWriter
    report: RunReport
    progress: Progress
    check: Callable[[str], None]
    """Raises to stop the run between two commits."""
    target_format: TargetFormat
    chunk: int
    strict: bool

    def run(self, path: Path, source: Source, every: int) -> list[PieceVerdict]:
        """Export, convert and commit every part of the source at ``path`` not yet recorded;
        the verdicts of the fragments verified by this invocation's tasks."""
        parts = list(source.partitions(every)) or [NoRows(path)]
        plan = [p.describe() for p in parts]
        stored = self.journal.get("partitions")
        if stored is None:
            self.journal.set(partitions=plan, source_rows=sum(p.rows for p in parts))
        elif stored != plan:
            raise RunChanged(self.run_dir, "the source's partitions changed")
        records = self.journal.batches()
        self.writer.resume(records)
        self._clear_unrecorded(len(records))
        copies = self._copies(parts)
        seen = self._seen(len(records))
        digest = self._resume_report(self.journal.exported())
        self.progress.phase("export", source.total_rows)
        self.progress.advance(self.report.nodes_in)
        first_group = records[-1].end_group if records else 0
        tasks = [PartitionTask(unit, part, self.run_dir.resolve(), self.target_format,
                               self.writer.path.resolve(), self.chunk, self.strict,
                               copy=(copies.get(part.path) if isinstance(part, ParquetPart)
                                     else None))
                 for unit, part in enumerate(parts) if unit >= len(records)]
        verdicts: list[PieceVerdict] = []
        for task, done in self.pool.ordered(export_partition, tasks):
            keep = seen.first_seen(done.uuids, done.spaces, done.origins)
            if not keep.all():
                done = self._without_duplicates(task, done, keep, seen)
            version, part = self.writer.commit(task.unit, done.written)
            record = BatchRecord(task.unit, first_group, first_group + done.groups, done.rows,
                                 done.digest, version, part, done.seconds, time.time())
            self.journal.record_partition(record, done.stats())  # durable before reported
            first_group = record.end_group
            verdicts.append(done.verdict)
            digest += TableDigest.from_hex(done.rows, done.digest)
            self._merge(done.stats())
            self.progress.advance(done.nodes_in)
            if task.unit + 1 < len(parts):
                self.check(f"after partition {task.unit + 1} of {len(parts)}")
        self.report.snapshot_rows, self.report.snapshot_digest = digest.rows, digest.hex
        with contextlib.suppress(OSError):  # a quarantine only where rows were rejected
            (self.run_dir / QUARANTINE).rmdir()
        return verdicts

    def _without_duplicates(self, task: PartitionTask, done: PartitionDone,
                            keep: np.ndarray, seen: SeenIds) -> PartitionDone:
        """The part again, with the rows whose node UUID an earlier part holds quarantined."""
        if self.strict:
            first = done.uuids[int(np.flatnonzero(~keep)[0])].as_py().hex()
            raise InvalidRows(int((~keep).sum()), f"{task.part.describe()}: duplicate id: an "
                                                  f"earlier row has the same node UUID ({first})")
        drop = tuple((int(j), seen.where(int(seen.firsts[j]))) for j in np.flatnonzero(~keep))
        redo = dataclasses.replace(task, drop=drop)
        return self.pool.submit(export_partition, redo).result()

    def _copies(self, parts: list[SourcePart]) -> dict[Path, str]:
        """The snapshot's copy of each Parquet file, by the file's path: created with the
        file's footer, or (resuming) found with it unchanged."""
        copies: dict[Path, str] = {}
        for part in parts:
            if isinstance(part, ParquetPart) and part.path not in copies:
                copies[part.path] = copy_name(len(copies))
                if not prepare_copy(part.path, self.run_dir / SNAPSHOT / copies[part.path]):
                    raise RunChanged(self.run_dir, f"{part.path} changed")
        fsync_path(self.run_dir / SNAPSHOT)
        return copies

    def _clear_unrecorded(self, recorded: int) -> None:
        """Remove the snapshot and quarantine parts of partitions not recorded (an interrupted
        attempt's), and a whole-file snapshot of an earlier, serial export; keep the copies of
        the source's files (the recorded parts' bytes are in them)."""
        for name in (SNAPSHOT, QUARANTINE):
            folder = self.run_dir / name
            if folder.is_file():
                remove(folder)
            folder.mkdir(exist_ok=True)
            for entry in folder.iterdir():
                if entry.name.startswith("source-") and name == SNAPSHOT:
                    continue
                if not (entry.name.startswith("part-") and entry.name < part_name(recorded)):
                    remove(entry)
            fsync_path(folder)
        fsync_path(self.run_dir)

    def _seen(self, recorded: int) -> SeenIds:
        """The node UUIDs of the recorded partitions, read back from their snapshot parts, with
        where each was read (so a later duplicate's reason names it, as without the resume)."""
        seen = SeenIds()
        exported = self.journal.exported()
        for unit in range(recorded):
            part = Snapshot(self.run_dir / SNAPSHOT / part_name(unit))
            origins, at = _origins(exported[unit]) if unit < len(exported) else None, 0
            for batch in part.batches(1 << 16, ["id", "space"]):
                n = batch.num_rows
                seen.first_seen(node_uuids(batch.column("id")), batch.column("space"),
                                None if origins is None else (origins[0], origins[1][at:at + n]))
                at += n
        return seen

    def _resume_report(self, exported: list[dict[str, Any]]) -> TableDigest:
        """The report's counts as the recorded partitions left them; their snapshot digest."""
        digest = TableDigest()
        self.report.quarantine_codes, self.report.quarantine_sample = {}, []
        for stats in exported:
            self._merge(stats)
            digest += TableDigest.from_hex(stats["rows"], stats["digest"])
        return digest

    def _merge(self, stats: dict[str, Any]) -> None:
        report = self.report
        report.nodes_in += stats["nodes_in"]
        report.quarantined += stats["quarantined"]
        reasons = Counter(report.quarantine_codes)
        reasons.update(stats["reasons"])
        report.quarantine_codes = dict(reasons.most_common())
        report.quarantine_sample += stats["sample"][: SAMPLE - len(report.quarantine_sample)]
