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
recorded; finished parts are never redone. The task is
:func:`dualmem_bulk.offline.partition_task.export_partition`; this module is the driver's side.

For a Parquet source the snapshot keeps the source's own bytes (one sparse copy per file, each
task copying its row groups into it and reading its rows from there) and each snapshot part is
a sidecar of the kept rows' keys and checksums (:mod:`dualmem_bulk.stores.snapshot_bytes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dualmem_bulk._fs import fsync_path, remove
from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.convert import node_uuids
from dualmem_bulk.engines import TaskPool
from dualmem_bulk.errors import InvalidRows, RunChanged
from dualmem_bulk.offline.partition_task import PartitionDone, PartitionTask, export_partition
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.files import QUARANTINE, SNAPSHOT
from dualmem_bulk.rundir.journal import BatchRecord, Journal
from dualmem_bulk.rundir.run_report import RunReport
from dualmem_bulk.sources import NoRows, SourcePart
from dualmem_bulk.sources.detect import Source
from dualmem_bulk.sources.parquet import ParquetPart
from dualmem_bulk.sources.scan import SAMPLE
from dualmem_bulk.sources.validate import Origins, SeenIds
from dualmem_bulk.stores import TargetFormat
from dualmem_bulk.stores.snapshot import Snapshot, part_name
from dualmem_bulk.stores.snapshot_bytes import copy_name, prepare_copy
from dualmem_bulk.stores.staging import StagedWriter
from dualmem_bulk.verify.pieces import PieceVerdict

__all__ = ["PartitionedExport"]


def _origins(stats: dict[str, Any]) -> Origins | None:
    """The source file and row of a recorded part's valid rows (None if not journalled)."""
    if "origins" not in stats:
        return None
    runs = stats["origins"]["runs"]
    codes = [np.arange(first, first + n, dtype=np.int64) for first, n in runs]
    return (tuple(stats["origins"]["files"]),
            np.concatenate(codes) if codes else np.zeros(0, np.int64))


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
        stored = self.journal.values["partitions"]
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
