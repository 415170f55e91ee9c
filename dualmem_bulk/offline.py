"""The offline run: export, validate and convert the source partition by partition, commit,
verify.

Layout of the run directory (``TARGET.run`` unless given)::

    journal.sqlite      state, config and source fingerprints, one row per committed unit
    lock                held (flock) by the migrator working on the run; says who it is
    snapshot.parquet/   every valid source row, legacy schema + checksum (kept for rollback):
                        one part file per source partition (one file for in-place runs of
                        a Parquet store)
    quarantine.parquet/ every rejected row with its file, row and reason (only if any)
    report.json         the final report (also printed by ``convert --json``)

A copy run exports in partitions (:mod:`dualmem_bulk.partitioned`): each partition's task
writes its snapshot part and its target fragment, and the driver commits them in order, one
journalled unit per partition. Re-running the same ``convert`` resumes at the first partition the
journal has not recorded; verification runs again. An in-place run of a Lance store does the
same, its tasks reading the store's pre-migration version and writing their fragments into the
store, invisibly: one commit publishes them all once the snapshot is whole. An in-place run of a
Parquet store exports the whole snapshot first (an interrupted export starts over), then
converts it in units. The target is built under a hidden staging name next to it (see
:mod:`dualmem_bulk.stores.staging`) and renamed into place when complete. Memory stays bounded
by the batch size: every phase streams.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk import __version__
from dualmem_bulk._fs import (
    check_path,
    fault_point,
    fsync_path,
    remove,
    source_identity,
    write_json,
)
from dualmem_bulk._pool import quiet_gc, release_memory
from dualmem_bulk._signals import StopRequest
from dualmem_bulk._threads import prefetched
from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.convert import to_dual
from dualmem_bulk.dry_run import dry_run
from dualmem_bulk.engines import open_pool
from dualmem_bulk.errors import (
    InputError,
    Interrupted,
    RunChanged,
    SourceError,
    TargetExists,
    UsageError,
    VerificationFailed,
)
from dualmem_bulk.export import CHUNK_ROWS, DEFAULT_BATCH_SIZE, Exporter, open_checked
from dualmem_bulk.journal import BatchRecord, Journal, migrating
from dualmem_bulk.offline_config import OfflineConfig
from dualmem_bulk.partitioned import PartitionedExport
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.report import RunReport, finish
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA
from dualmem_bulk.sources import plan_runs
from dualmem_bulk.stores import TargetFormat, detect_store, open_parquet
from dualmem_bulk.stores.snapshot import QUARANTINE, SNAPSHOT, Snapshot
from dualmem_bulk.stores.staging import (
    LanceInPlace,
    StagedWriter,
    Written,
    data_files,
    remove_strays,
    staged_writer,
    staging_path,
)
from dualmem_bulk.verify import PieceVerdict, snapshot_keys, verify_batches, verify_run

__all__ = ["DEFAULT_BATCH_SIZE", "OfflineConfig", "RunReport", "UnitTask", "UnitWritten",
           "run_offline", "write_unit"]

PRE_MIGRATION_TAG = "dualmem-pre-migration"
"""Tag on the last legacy version of a Lance store converted in place (cleanup keeps it)."""
REPORT = "report.json"



def _source_rows(config: OfflineConfig) -> int:
    """Rows in a Parquet source (its footers) or a Lance dataset (its manifest); 0 (run in one
    process) for other kinds, whose size is only known after decoding them."""
    try:
        if (config.source / "_versions").is_dir():
            return int(lance.dataset(str(config.source)).count_rows())
        files = [config.source] if config.source.is_file() else sorted(
            config.source.rglob("*.parquet"))
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except (OSError, ValueError, pa.ArrowException):
        return 0


def _identity(config: OfflineConfig) -> list[list[Any]]:
    """The source's files, sizes and mtimes (a resume refuses a changed source). A Lance store
    converted in place leaves out its data files and tags: the run writes its fragments and its
    tag into the store, and anyone else's change to it shows as a new version's manifest."""
    if not config.source.exists():
        return []
    files = source_identity(config.source)
    if config.in_place and (config.source / "_versions").is_dir():
        return [f for f in files if not str(f[0]).startswith(("data/", "_refs/"))]
    return files


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


_UNIT_READ_ROWS = 4096
"""Rows per read from the snapshot in a conversion task. Parquet decodes the embedding list
column a read at a time: 4,096 rows peaked at 292 MiB RSS, 16,384 rows at 501 MiB."""


@dataclass(frozen=True)
class UnitTask:
    """One commit unit of an in-place run to write, for a worker process: which snapshot row
    groups to convert and where to write them."""

    unit: int
    first_group: int
    end_group: int
    snapshot: Path
    target_format: TargetFormat
    path: Path
    in_place_base: int | None
    start: int
    """The snapshot row the unit starts at."""

    @property
    def needs(self) -> tuple[Path, ...]:
        """What a worker must see: the snapshot and the directory the target is in."""
        return (self.snapshot, self.path.parent)


@dataclass(frozen=True)
class UnitWritten:
    """A written (not yet committed) unit: its rows, digest and what the commit needs."""

    rows: int
    digest: str
    written: Written
    seconds: float
    verdict: PieceVerdict
    """The unit read back from its files and checked against the rows it was written from."""


def write_unit(task: UnitTask) -> UnitWritten:
    """Convert the unit's snapshot row groups (reusing their checksums), write them, read them
    back and verify them: the written files are checked before the driver commits them."""
    started = time.perf_counter()
    digest = TableDigest()

    def snapshot_batches() -> Iterator[pa.RecordBatch]:
        groups = list(range(task.first_group, task.end_group))
        if groups:
            yield from open_parquet(task.snapshot).iter_batches(
                batch_size=_UNIT_READ_ROWS, row_groups=groups, use_threads=False)

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal digest
        for batch in snapshot_batches():
            legacy = pa.RecordBatch.from_arrays(
                [batch.column(n) for n in LEGACY_SCHEMA.names], schema=LEGACY_SCHEMA)
            sums = batch.column("checksum")
            digest += TableDigest.of(sums)
            yield to_dual(legacy, sums)

    writer = staged_writer(task.target_format, task.path, DUAL_SCHEMA, task.in_place_base)
    written = writer.write(task.unit, prefetched(batches()))
    verdict = verify_batches(writer.read(written, _UNIT_READ_ROWS),
                             snapshot_keys(task.snapshot, task.start, _UNIT_READ_ROWS),
                             writer.files(written))
    return UnitWritten(digest.rows, digest.hex, written,
                       round(time.perf_counter() - started, 3), verdict)


class _Run:
    """One invocation of a run: picks up where the journal says and goes to the end."""

    def __init__(self, config: OfflineConfig, run_dir: Path, progress: Progress,
                 stop: StopRequest) -> None:
        self.config, self.run_dir, self.progress, self.stop = config, run_dir, progress, stop
        self.staging = staging_path(config.target)
        self.journal = self._open_journal()
        snapshot = self.journal.get("snapshot")
        self.checked: list[PieceVerdict] = []
        """Units verified by the tasks that wrote them (in this invocation)."""
        self.pool = open_pool(config.engine, config.workers, config.scheduler,
                              rows=snapshot["rows"] if snapshot else _source_rows(config),
                              driver_busy=self._serial_export)
        stored = self.journal.get("report")
        self.report = RunReport.from_dict(stored) if stored else RunReport(
            status="running", source=str(config.source), source_kind="",
            target=str(config.target), target_format=config.target_format,
            run_dir=str(run_dir))
        self.report.engine = config.engine
        self.moved = 0
        """Nodes this invocation exported (copy run) or converted (in-place run)."""

    @property
    def _serial_export(self) -> bool:
        """An in-place run of a Parquet store exports in the driver, then converts in units;
        every other run exports, converts and writes partition by partition in tasks."""
        return False

    @property
    def _lance_in_place(self) -> bool:
        return self.journal.get("pre_migration_version") is not None

    def _open_journal(self) -> Journal:
        config, run_dir = self.config, self.run_dir
        for path in (config.source, config.target, self.staging):
            check_path(path)  # a path the OS refuses is a refusal here, not a failed run
        identity = config.identity()
        source = _identity(config)
        if Journal.exists(run_dir):
            journal = Journal.open(run_dir)
            if journal.state == "finalized":
                journal.close()
                raise UsageError(f"{run_dir}: this run is finalized: {config.target} is the kept "
                                 "store and is never deleted. To migrate again, convert into "
                                 "a new target, with its own run directory")
            if config.restart:
                self._discard(journal)
                journal.close()
            elif journal.state == "rolling-back":
                raise UsageError(f"{run_dir}: a rollback of this run was started; finish it "
                                 f"with `dualmem-bulk rollback {run_dir}`")
            elif journal.state == "rolled-back":
                raise UsageError(f"{run_dir}: this run is rolled-back; pass --restart to "
                                 "migrate again, or choose another --run-dir")
            elif journal.get("config") != identity:
                raise RunChanged(run_dir, "the configuration changed ("
                                 + _changes(journal.get("config"), identity) + ")")
            elif journal.get("source_identity") != source and not (
                config.in_place and journal.get("phase") != "exporting"
            ):  # an in-place store changes once converting; its snapshot is the truth then
                raise RunChanged(run_dir, f"the source {config.source} changed")
            else:
                self.progress.message(f"resuming the run in {run_dir} ({journal.state})")
                return journal
        elif any(p.name != "lock" for p in run_dir.iterdir()):
            raise UsageError(f"{run_dir}: not empty and holds no journal; remove it or pass "
                             "another --run-dir")
        if not config.source.exists():
            raise SourceError(config.source, "no such file or directory")
        extra: dict[str, Any] = {"mode": "copy"}
        if config.in_place:
            extra = self._in_place_meta()
        elif config.target.exists():
            raise TargetExists(config.target)
        journal = Journal.open(run_dir, create=True)
        journal.set_state("planned", "run created", config=identity, source_identity=source,
                          target=str(config.target.resolve()),
                          staging=str(self.staging.resolve()), tool=__version__,
                          created_at=time.time(), phase="exporting", **extra)
        return journal

    def _in_place_meta(self) -> dict[str, Any]:
        """What an in-place run must know to convert and to roll back its store."""
        store = self.config.source
        fmt = detect_store(store)
        if fmt is None or not store.is_dir():
            raise UsageError(f"{store}: --in-place needs a legacy store directory (a Lance "
                             "dataset or a directory of Parquet files)")
        if fmt != self.config.target_format:
            raise UsageError(f"{store} is a {fmt} store; pass --target-format {fmt} to convert "
                             "it in place")
        meta: dict[str, Any] = {"mode": "in-place", "store_format": fmt}
        if fmt == "lance":
            meta["pre_migration_version"] = int(lance.dataset(str(store)).version)
            meta["pre_migration_tag"] = PRE_MIGRATION_TAG
            meta["store_files"] = data_files(store)  # the run's strays are the others
        return meta

    def _discard(self, journal: Journal) -> None:
        """--restart: remove what this run wrote (staging, target, snapshot), keep the lock."""
        if journal.get("mode") == "in-place" and journal.state not in (
            "planned", "exporting", "rolled-back"
        ):
            raise UsageError(f"{self.run_dir}: the store is being converted in place; roll the "
                             "run back first (dualmem-bulk rollback), then --restart")
        if (before := journal.get("store_files")) is not None:  # an in-place Lance run's
            remove_strays(self.config.source, before,
                          journal.batches() if journal.get("published_version") else None)
        remove(self.staging)
        if journal.get("target_created"):
            remove(self.config.target)
        for entry in self.run_dir.iterdir():
            if entry.name != "lock":
                remove(entry)
        self.progress.message(f"discarded the previous run in {self.run_dir}")

    def _check_stop(self, where: str) -> None:
        if self.stop.requested:
            self.journal.set_state(self.journal.state, f"interrupted by {self.stop.signal}")
            raise Interrupted(f"interrupted by {self.stop.signal} {where}; run the same command "
                              "again to resume")

    def go(self, started: float) -> RunReport:
        """Run the remaining phases; every phase leaves the journal where the next one starts."""
        phase = self.journal.get("phase", "exporting")
        if self.journal.state == "done":
            self.progress.message(f"{self.run_dir}: already done, nothing to resume")
            return self.report
        self.report.phases, self.report.phases_s = {}, {}  # this invocation's only
        try:
            with self.pool:
                self.pool.start()  # a cluster that cannot start fails the run before the export
                if phase == "exporting" and self._serial_export:
                    self._export()
                elif phase == "exporting":
                    self._export_partitioned()
                if self.journal.get("phase") == "converting":
                    self._convert()
                self._verify()
        except (Interrupted, KeyboardInterrupt):
            raise
        except BrokenProcessPool as exc:
            self.journal.set_state("failed", f"a worker process died: {exc}")
            raise Interrupted(f"a worker process died ({exc}); run the same command again to "
                              "resume") from exc
        except Exception as exc:
            self.journal.set_state("failed", f"{type(exc).__name__}: {exc}")
            if isinstance(exc, OSError):
                raise Interrupted(f"the run stopped: {exc}; fix the cause and run the same "
                                  "command again to resume") from exc
            raise
        self.report.status = "done"
        self.report.workers = self.pool.workers
        if self.report.quarantined:
            self.report.quarantine_path = str(self.run_dir / QUARANTINE)
        finish(self.report, started, self.progress, self.moved)
        self.journal.set(report=self.report.as_dict())
        write_json(self.run_dir / REPORT, self.report.as_dict())
        return self.report

    def _fresh_report(self) -> RunReport:
        return RunReport(status="running", source=str(self.config.source), source_kind="",
                         target=str(self.config.target), target_format=self.config.target_format,
                         run_dir=str(self.run_dir), engine=self.config.engine)

    def _export_partitioned(self) -> None:
        """Export, convert and commit the source partition by partition (resumable at the
        first partition not recorded)."""
        self.journal.set_state("exporting", phase="exporting")
        mark = time.perf_counter()
        self.report = self._fresh_report()
        recorded = sum(stats["nodes_in"] for stats in self.journal.exported())
        config = self.config
        source = open_checked(config.source, config.spaces, config.batch_size, config.strict,
                              self.report, self.pool)  # a WAL's files are scanned as tasks
        export = PartitionedExport(
            self.run_dir, self.journal, self.pool, self._writer(), self.report, self.progress,
            self._check_stop, config.target_format, min(config.batch_size, CHUNK_ROWS),
            config.strict)
        self.checked = export.run(config.source, source,
                                  config.checkpoint_every or config.batch_size)
        self.moved = self.report.nodes_in - recorded
        self.report.phase("export", self.moved, time.perf_counter() - mark)
        groups = Snapshot(self.run_dir / SNAPSHOT).num_row_groups
        snapshot = {"rows": self.report.snapshot_rows, "digest": self.report.snapshot_digest,
                    "groups": groups}
        self.journal.set_state("converting", "snapshot written", phase="converting",
                               snapshot=snapshot, report=self.report.as_dict())

    def _export(self) -> None:
        self.journal.set_state("exporting", phase="exporting")
        for name in (SNAPSHOT, QUARANTINE):
            remove(self.run_dir / name)
        for leftover in self.run_dir.glob(".*.tmp-*"):
            remove(leftover)
        mark = time.perf_counter()
        self.report = self._fresh_report()
        source = open_checked(self.config.source, self.config.spaces, self.config.batch_size,
                              self.config.strict, self.report)
        self.progress.phase("export", source.total_rows)
        Exporter(source, self.config.batch_size, self.report).write(
            self.run_dir / SNAPSHOT, self.run_dir / QUARANTINE, self.config.strict,
            self.progress, lambda: self._check_stop("during the export (it starts over)"))
        self.report.phase("export", self.report.nodes_in, time.perf_counter() - mark)
        release_memory()  # the export's buffers; the workers need the memory now
        groups = open_parquet(self.run_dir / SNAPSHOT).metadata.num_row_groups
        snapshot = {"rows": self.report.snapshot_rows, "digest": self.report.snapshot_digest,
                    "groups": groups}
        self.journal.forget_batches()
        self.journal.set_state("converting", "snapshot written", phase="converting",
                               snapshot=snapshot, report=self.report.as_dict())

    def _convert(self) -> None:
        journal = self.journal
        snapshot = journal.get("snapshot")
        records = journal.batches()
        groups = snapshot["groups"]
        mark = time.perf_counter()
        written = 0
        if not (records and records[-1].end_group == groups):
            written = self._write_units(records, groups, snapshot["rows"])
        self._place()
        done = journal.committed()
        self.report.nodes_converted = done.rows
        self.report.target_digest = done.hex
        self.report.units = len(journal.batches())
        if written or self._serial_export:
            self.moved = written
            self.report.phase("convert", written, time.perf_counter() - mark)
        else:  # converted and written in the export's tasks: this only renames or publishes
            self.report.phase("place", 0, time.perf_counter() - mark)
        journal.set_state("verifying", "target in place", phase="verifying",
                          target_created=True, report=self.report.as_dict())

    def _writer(self) -> StagedWriter:
        journal, config = self.journal, self.config
        base = journal.get("pre_migration_version")
        if base is None:
            if self.staging.exists() is False and journal.batches():
                raise SourceError(self.staging, "the partly written target is missing; roll "
                                                "back or re-run with --restart")
            return staged_writer(config.target_format, self.staging, DUAL_SCHEMA)
        store = lance.dataset(str(config.source))
        if PRE_MIGRATION_TAG not in store.tags.list():
            store.tags.create(PRE_MIGRATION_TAG, base)
        return staged_writer("lance", config.source, DUAL_SCHEMA, in_place_base=base)

    def _write_units(self, records: list[BatchRecord], groups: int, rows: int) -> int:
        """Convert and commit the units not recorded; the rows this call converted."""
        writer = self._writer()
        converted = 0
        group_rows = [g.num_rows for g in (open_parquet(self.run_dir / SNAPSHOT).metadata
                                          .row_group(i) for i in range(groups))]
        every = self.config.checkpoint_every or self.config.batch_size
        plan = plan_runs(group_rows, every) or [(0, 0, 0)]
        writer.resume(records)
        self.progress.phase("convert", rows)
        self.progress.advance(sum(r.rows for r in records))
        base = self.journal.get("pre_migration_version")
        starts = np.cumsum([0] + [rows for _first, _end, rows in plan]).tolist()
        snapshot, path = (self.run_dir / SNAPSHOT).resolve(), writer.path.resolve()
        tasks = [UnitTask(unit, first, end, snapshot, self.config.target_format, path, base,
                          starts[unit])
                 for unit, (first, end, _rows) in enumerate(plan) if unit >= len(records)]
        for task, done in self.pool.ordered(write_unit, tasks):
            version, part = writer.commit(task.unit, done.written)
            self.checked.append(done.verdict)
            self.journal.record_batch(BatchRecord(  # durable before it is reported
                task.unit, task.first_group, task.end_group, done.rows, done.digest, version,
                part, done.seconds, time.time()))
            if task.unit == 0 and self.config.in_place:
                self.journal.set(swapped=True)
            self.progress.advance(done.rows)
            converted += done.rows
            if task.end_group < groups:
                self._check_stop(f"after unit {task.unit + 1} ({task.end_group} of {groups} "
                                 "batches converted)")
        return converted

    def _place(self) -> None:
        """Put the finished store where it belongs; every step can be repeated after a crash."""
        target, staging, journal = self.config.target, self.staging, self.journal
        mode = journal.get("mode")
        if self._lance_in_place:
            if journal.get("published_version") is None:
                writer = self._writer()
                assert isinstance(writer, LanceInPlace)
                version = writer.publish(journal.batches())
                journal.set(published_version=version, swapped=True)  # durable, then reported
            # Fragments of attempts that never counted (a killed task, a part redone without
            # its duplicates) are in no version: remove them.
            if (before := journal.get("store_files")) is not None:
                remove_strays(self.config.source, before, journal.batches())
            return
        if mode == "in-place":
            backup = target.with_name(f".{target.name}.dualmem-legacy")
            if target.exists() and staging.exists() and not backup.exists():
                os.replace(target, backup)
                fsync_path(target.parent)
            journal.set(legacy_backup=str(backup.resolve()))
        if staging.exists():
            if target.exists():
                raise TargetExists(target)
            os.replace(staging, target)
            fsync_path(target.parent)
            fault_point("store-swap")
            journal.set(swapped=True)
        elif not target.exists():
            raise SourceError(staging, "the converted store is missing; roll back or re-run "
                                       "with --restart")

    def _verify(self) -> None:
        mark = time.perf_counter()
        verdict = verify_run(self.run_dir, self.progress, batch_size=self.config.batch_size,
                             pool=self.pool, checked=self.checked)
        self.report.phase("verify", verdict.read_back, time.perf_counter() - mark)
        self.report.verified = verdict.ok
        done = self.journal.committed()
        self.report.nodes_converted, self.report.target_digest = done.rows, done.hex
        if not verdict.ok:
            self.report.status = "verify-failed"
            self.report.workers = self.pool.workers
            self.journal.set_state("failed", verdict.summary(), report=self.report.as_dict())
            write_json(self.run_dir / REPORT, self.report.as_dict())
            raise VerificationFailed(verdict.summary())
        self.journal.set_state("done", verdict.summary(), phase="done")


def run_offline(config: OfflineConfig, progress: Progress = NULL_PROGRESS,
                keep_free: int = 0) -> RunReport:
    """Convert ``config.source`` into a new DualMemoryNode store at ``config.target``, or
    resume the run of the same config in its run directory.

    Raises an :class:`~dualmem_bulk.errors.InputError` for a bad source (a fresh run then
    leaves nothing behind), :class:`~dualmem_bulk.errors.Interrupted` when stopped (resumable),
    :class:`~dualmem_bulk.errors.RunLocked` when another migrator holds the run, and
    :class:`~dualmem_bulk.errors.VerificationFailed` if the written store does not verify.
    A dry run (see :mod:`dualmem_bulk.dry_run`) writes nothing; ``keep_free`` is the bytes it
    asks each filesystem to keep free after the run.
    """
    started = time.perf_counter()
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.checkpoint_every is not None and config.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be at least 1, got {config.checkpoint_every}")
    if config.dry_run:
        with quiet_gc():
            return dry_run(config, run_offline, progress, started, keep_free)
    run_dir = config.resolved_run_dir
    fresh = not run_dir.exists()
    staging = staging_path(config.target)
    ours = not staging.exists()
    try:
        with migrating(run_dir, progress) as stop, quiet_gc():
            return _Run(config, run_dir, progress, stop).go(started)
    except (InputError, TargetExists, UsageError):
        if fresh and ours:  # a refused run leaves nothing behind
            remove(staging)
            remove(run_dir)
        raise
