"""The offline run: export, validate and convert the source partition by partition, commit,
verify.

The run directory (``TARGET.run`` unless given) holds the journal, the snapshot (one part file
per source partition), the quarantine and the
report: :mod:`dualmem_bulk.rundir.files` names them all.

A copy run exports in partitions (:mod:`dualmem_bulk.offline.partitioned`): each partition's task
writes its snapshot part and its target fragment, and the driver commits them in order, one
journalled unit per partition. Re-running the same ``convert`` resumes at the first partition the
journal has not recorded; verification runs again. An in-place run of a Lance store does the
same, its tasks reading the store's pre-migration version and writing their fragments into the
store, invisibly: one commit publishes them all once the snapshot is whole. An in-place run of a
Parquet store is a copy run into a staging store beside it. The target is built under a hidden
staging name next to it (see :mod:`dualmem_bulk.stores.staging`) and renamed into place when
complete (:mod:`dualmem_bulk.offline.place`). Memory stays bounded by the batch size: every
phase streams.
"""

from __future__ import annotations

import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import lance

from dualmem_bulk._fs import check_path, remove, write_json
from dualmem_bulk._signals import StopRequest
from dualmem_bulk._version import __version__
from dualmem_bulk.driver import Driver, drive
from dualmem_bulk.engines import open_pool
from dualmem_bulk.engines.local import quiet_gc
from dualmem_bulk.errors import (
    InputError,
    Interrupted,
    RunChanged,
    SourceError,
    TargetExists,
    UsageError,
    VerificationFailed,
)
from dualmem_bulk.offline.config import OfflineConfig, changes, source_files, source_rows
from dualmem_bulk.offline.dry_run import dry_run
from dualmem_bulk.offline.partitioned import PartitionedExport
from dualmem_bulk.offline.place import discard, in_place_meta, place
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.rundir.files import (
    LOCK,
    PRE_MIGRATION_TAG,
    QUARANTINE,
    REPORT,
    SNAPSHOT,
    staging_path,
)
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import JournalValues
from dualmem_bulk.rundir.run_report import RunReport, finish
from dualmem_bulk.schema import DUAL_SCHEMA
from dualmem_bulk.sources.scan import CHUNK_ROWS, open_checked
from dualmem_bulk.stores import DEFAULT_BATCH_SIZE
from dualmem_bulk.stores.snapshot import Snapshot
from dualmem_bulk.stores.staging import StagedWriter, staged_writer
from dualmem_bulk.verify.offline import verify_offline
from dualmem_bulk.verify.pieces import PieceVerdict

__all__ = ["DEFAULT_BATCH_SIZE", "OfflineConfig", "run_offline"]


class _Run(Driver):
    """One invocation of a run: picks up where the journal says and goes to the end."""

    def __init__(self, config: OfflineConfig, run_dir: Path, progress: Progress,
                 stop: StopRequest) -> None:
        super().__init__(run_dir, progress, stop)
        self.config = config
        self.staging = staging_path(config.target)
        self.journal = self._open_journal()
        snapshot = self.journal.values["snapshot"]
        self.checked: list[PieceVerdict] = []
        """Units verified by the tasks that wrote them (in this invocation)."""
        self.pool = open_pool(config.engine, config.workers, config.scheduler,
                              rows=snapshot["rows"] if snapshot else source_rows(config),
                              driver_busy=False)  # the driver only plans, merges and commits
        stored = self.journal.values["report"]
        self.report = RunReport.from_dict(stored) if stored else RunReport(
            status="running", source=str(config.source), source_kind="",
            target=str(config.target), target_format=config.target_format,
            run_dir=str(run_dir))
        self.report.engine = config.engine
        self.moved = 0
        """Nodes this invocation exported."""

    def _open_journal(self) -> Journal:
        config, run_dir = self.config, self.run_dir
        for path in (config.source, config.target, self.staging):
            check_path(path)  # a path the OS refuses is a refusal here, not a failed run
        identity = config.identity()
        source = source_files(config)
        if Journal.exists(run_dir):
            journal = Journal.open(run_dir)
            if journal.state == "finalized":
                journal.close()
                raise UsageError(f"{run_dir}: this run is finalized: {config.target} is the kept "
                                 "store and is never deleted. To migrate again, convert into "
                                 "a new target, with its own run directory")
            if config.restart:
                discard(config, run_dir, self.staging, journal, self.progress)
                journal.close()
            elif journal.state == "rolling-back":
                raise UsageError(f"{run_dir}: a rollback of this run was started; finish it "
                                 f"with `dualmem-bulk rollback {run_dir}`")
            elif journal.state == "rolled-back":
                raise UsageError(f"{run_dir}: this run is rolled-back; pass restart to "
                                 "migrate again, or choose another run_dir", "restart",
                                 "run_dir")
            elif journal.config != identity:
                raise RunChanged(run_dir, "the configuration changed ("
                                 + changes(journal.config, identity) + ")")
            elif journal.values["source_identity"] != source and not (
                config.in_place and journal.values["phase"] != "exporting"
            ):  # an in-place store changes once converting; its snapshot is the truth then
                raise RunChanged(run_dir, f"the source {config.source} changed")
            else:
                self.progress.message(f"resuming the run in {run_dir} ({journal.state})")
                return journal
        else:
            self._refuse_foreign((LOCK,))
        if not config.source.exists():
            raise SourceError(config.source, "no such file or directory")
        extra: JournalValues = {"mode": "copy"}
        if config.in_place:
            extra = in_place_meta(config)
        elif config.target.exists():
            raise TargetExists(config.target)
        journal = Journal.open(run_dir, create=True)
        created: JournalValues = {
            "config": identity, "source_identity": source, "target": str(config.target.resolve()),
            "staging": str(self.staging.resolve()), "tool": __version__,
            "created_at": time.time(), "phase": "exporting", **extra}
        journal.set_state("planned", "run created", **created)
        return journal

    def go(self, started: float) -> RunReport:
        """Run the remaining phases; every phase leaves the journal where the next one starts."""
        phase = self.journal.values["phase"] or "exporting"
        if self.journal.state == "done":
            self.progress.message(f"{self.run_dir}: already done, nothing to resume")
            return self.report
        self.report.phases, self.report.phases_s = {}, {}  # this invocation's only
        try:
            with self.pool:
                self.pool.start()  # a cluster that cannot start fails the run before the export
                if phase == "exporting":
                    self._export_partitioned()
                if self.journal.values["phase"] == "converting":
                    self._convert()
                self._verify()
        except (Interrupted, KeyboardInterrupt):
            raise
        except BrokenProcessPool as exc:
            self.journal.set_state("failed", f"a worker process died: {exc}")
            raise Interrupted(f"a worker process died ({exc}); run the same command again to "
                              "resume") from exc
        except Exception as exc:
            self._failed(exc)
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

    def _convert(self) -> None:
        journal = self.journal
        snapshot = journal.values["snapshot"]
        assert snapshot is not None, "the export records the snapshot before converting"
        records = journal.batches()
        groups = snapshot["groups"]
        mark = time.perf_counter()
        if not (records and records[-1].end_group == groups):  # an earlier version's units
            raise RunChanged(self.run_dir, "dualmem-bulk's version changed (an in-place run "
                                           "now converts in its export)")
        place(self.config, self.staging, journal, self._writer)
        done = journal.committed()
        self.report.nodes_converted = done.rows
        self.report.target_digest = done.hex
        self.report.units = len(journal.batches())
        # converted and written in the export's tasks: this only renames or publishes
        self.report.phase("place", 0, time.perf_counter() - mark)
        journal.set_state("verifying", "target in place", phase="verifying",
                          target_created=True, report=self.report.as_dict())

    def _writer(self) -> StagedWriter:
        journal, config = self.journal, self.config
        base = journal.values["pre_migration_version"]
        if base is None:
            if self.staging.exists() is False and journal.batches():
                raise SourceError(self.staging, "the partly written target is missing; roll "
                                                "back or re-run with restart", "restart")
            return staged_writer(config.target_format, self.staging, DUAL_SCHEMA)
        store = lance.dataset(str(config.source))
        if PRE_MIGRATION_TAG not in store.tags.list():
            store.tags.create(PRE_MIGRATION_TAG, base)
        return staged_writer("lance", config.source, DUAL_SCHEMA, in_place_base=base)

    def _verify(self) -> None:
        mark = time.perf_counter()
        verdict = verify_offline(self.run_dir, self.progress,
                                 batch_size=self.config.batch_size, pool=self.pool,
                                 checked=self.checked)
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
    A dry run (see :mod:`dualmem_bulk.offline.dry_run`) writes nothing; ``keep_free`` is the
    bytes it asks each filesystem to keep free after the run.
    """
    started = time.perf_counter()
    if config.batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {config.batch_size}", "batch_size")
    if config.checkpoint_every is not None and config.checkpoint_every < 1:
        raise UsageError(f"checkpoint_every must be at least 1, got {config.checkpoint_every}",
                         "checkpoint_every")
    if config.dry_run:
        with quiet_gc():
            return dry_run(config, run_offline, progress, started, keep_free)
    run_dir = config.resolved_run_dir
    staging = staging_path(config.target)
    ours = not staging.exists()

    def run(stop: StopRequest) -> RunReport:
        with quiet_gc():
            return _Run(config, run_dir, progress, stop).go(started)

    def leave_nothing() -> None:  # a refused run leaves nothing behind
        if ours:
            remove(staging)
            remove(run_dir)

    return drive(run_dir, progress, run, (InputError, TargetExists, UsageError), leave_nothing)
