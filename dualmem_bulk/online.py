"""The online run: migrate a live :class:`~dualmem_bulk.stores.memory_store.MemoryStore` while
its service keeps reading and writing, then cut over without losing a write.

1. **Pin** the change-log position P (the store's triggers log every write after it).
2. **Copy** every row into a new Lance dataset in consecutive rowid ranges, each a task (a
   worker process, or the driver) that reads its range in its own short read transaction (a
   single long one would stop SQLite from checkpointing its WAL while the service writes) and
   writes one fragment; the driver commits them in order, one commit per range
   (:mod:`dualmem_bulk.online_copy`). The copy need not be one consistent snapshot: every row
   that changes after P has a log entry after P, and step 3 writes each such id's state as it
   is then (the ranges leave such ids out), so the result is exact and a killed copy resumes
   at its first unrecorded range. A scalar index on the id is built after the copy.
3. **Catch up**: apply the log after P in order, in rounds; the changes of one id collapse into
   its current state (upserted, or deleted if it is gone: a deleted node never comes back).
4. **Cut over** once the lag is small: pin a position S1 and, in one read transaction, apply
   the log up to S1 and scan the source's digest; compare it with the target's, recomputed
   from every node's fields. Carry both digests forward through the changes applied after S1.
   Then hold the store's write lock (``BEGIN IMMEDIATE``: the service's writers wait, readers
   don't), apply the last changes, and only if the digests and counts agree record the
   cut-over (journal ``serving = dual``) before releasing the lock. The pause is reported.

Every range and every applied position is journalled (durably) after its Lance commit, and
the Lance version with it: a resumed migrator first restores that version, so an unrecorded
commit is redone, never doubled. ``RUN_DIR/pause`` holds the migrator between batches;
``--max-rate`` caps nodes/s; range sizes adapt so each takes about ``target_batch_s``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dualmem_bulk import __version__
from dualmem_bulk._fs import fault_point, remove, write_json
from dualmem_bulk._signals import StopRequest
from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.errors import (
    Interrupted,
    RunChanged,
    TargetExists,
    UsageError,
    VerificationFailed,
)
from dualmem_bulk.journal import Journal, migrating
from dualmem_bulk.online_copy import copy_store, next_size
from dualmem_bulk.online_cutover import Pinned, compare_at_pin, describe_identity
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA, fingerprint
from dualmem_bulk.sources.engram_wal import is_engram_root
from dualmem_bulk.stores.dual import (
    ROUND,
    Applied,
    DualStore,
    apply_changes,
    minus,
    writer_lock,
)
from dualmem_bulk.stores.memory_store import MemoryStore

__all__ = ["PAUSE_FILE", "OnlineConfig", "OnlineReport", "run_online"]

PAUSE_FILE = "pause"
REPORT = "report.json"


@dataclass(frozen=True, kw_only=True)
class OnlineConfig:
    """What an online migration reads, writes and how fast."""

    store: Path
    """The live legacy MemoryStore (SQLite file) the service keeps using, or an Engram data
    root whose WAL Engram keeps appending to."""
    target: Path
    """The DualMemoryNode Lance dataset to create; must not exist yet (unless this run's)."""
    run_dir: Path | None = None
    """Journal, locks and report; default ``TARGET.run``."""
    batch_size: int = 2_000
    """Rowids of the first copy range (rows of the first batch from an Engram data root);
    later ranges adapt to ``target_batch_s``."""
    target_batch_s: float = 0.5
    """Size the copy ranges so that one is committed about this often (a task then takes
    this times the workers; the pause file is checked between ranges)."""
    workers: int | None = None
    """Worker processes copying ranges beside the driver (0: the driver alone; ``None``: one
    per core less one, none under 50,000 nodes)."""
    max_rate: float | None = None
    """Copy at most this many nodes per second (``None``: as fast as it goes)."""
    cutover_lag: int = 200
    """Cut over once the target is at most this many change-log entries behind."""
    postpone_cutover: bool = False
    """Keep catching up until ``dualmem-bulk cutover RUN_DIR`` asks for the cut-over."""
    poll_s: float = 0.2
    """Sleep between catch-up rounds when there is nothing to do, and while paused."""

    @property
    def resolved_run_dir(self) -> Path:
        """The run directory actually used."""
        return self.run_dir or self.target.with_name(self.target.name + ".run")

    @property
    def wal_source(self) -> bool:
        """Whether ``store`` is an Engram data root (its WAL is the change feed)."""
        return is_engram_root(self.store)

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {"mode": "online", "source": str(self.store.resolve()),
                "target": str(self.target.resolve()),
                "schemas": [fingerprint(LEGACY_SCHEMA), fingerprint(DUAL_SCHEMA)],
                **({"kind": "engram-wal"} if self.wal_source else {})}


@dataclass
class OnlineReport:
    """What an online run did; ``as_dict()`` is the ``migrate --online --json`` output."""

    status: str
    """``done`` (cut over), ``running`` while under way."""
    store: str
    target: str
    run_dir: str
    phase: str = "copying"
    nodes_copied: int = 0
    """Nodes copied by the run, every invocation included."""
    nodes_copied_this_invocation: int = 0
    copy_s: float = 0.0
    """Wall time of the copy over every invocation, the ``--max-rate`` throttle's sleeps
    included (``copy_nodes_per_s`` = ``nodes_copied / copy_s``)."""
    copy_nodes_per_s: float = 0.0
    workers: int | None = None
    """Worker processes that copied this invocation's rowid ranges (0: the driver alone;
    ``None``: no range copied, or an Engram data root)."""
    changes_applied: int = 0
    """Ids upserted or deleted from the change log (after collapsing), pause included."""
    catch_up_rounds: int = 0
    lag_at_pause: int | None = None
    """Change-log entries not yet applied when the cut-over pause began."""
    changes_in_pause: int | None = None
    pause_ms: float | None = None
    """How long the service's writers were held at the cut-over."""
    verified: bool = False
    """Source and target digests (recomputed from the fields) were equal at the cut-over."""
    rows: int | None = None
    digest: str | None = None
    resumed: int = 0
    """How many times this run was resumed."""
    elapsed_s: float = 0.0
    """Wall time of this invocation."""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class _Carried:
    """Both sides' digests and identity digests, carried from a verified pin through the
    changes applied after it (each round's replaced, written and read-back rows; no rescan)."""

    source: TableDigest
    target: TableDigest
    source_identity: TableDigest
    target_identity: TableDigest

    def after(self, applied: Applied) -> _Carried:
        """The digests once ``applied`` (tracked) is in both stores."""
        return _Carried(
            minus(self.source, applied.removed) + applied.source_added,
            minus(self.target, applied.removed) + applied.target_added,
            minus(self.source_identity, applied.removed_identity) + applied.source_identity,
            minus(self.target_identity, applied.removed_identity) + applied.target_identity)

    @property
    def same(self) -> bool:
        """Whether both digests and both identity digests agree."""
        return self.source == self.target and self.source_identity == self.target_identity


class _Online:
    """One invocation of an online run, under the run lock."""

    def __init__(self, config: OnlineConfig, run_dir: Path, progress: Progress,
                 stop: StopRequest) -> None:
        self.config, self.run_dir, self.progress, self.stop = config, run_dir, progress, stop
        self.store = MemoryStore(config.store, create=False)
        self.dual = DualStore(config.target)
        try:
            self.journal = self._open_journal()
        except BaseException:
            self.store.close()
            raise
        self.report = OnlineReport(**self.journal.get("report"))
        self.report.nodes_copied_this_invocation = 0

    def _open_journal(self) -> Journal:
        config, run_dir = self.config, self.run_dir
        if Journal.exists(run_dir):
            journal = Journal.open(run_dir)
            if journal.get("mode") != "online":
                raise UsageError(f"{run_dir}: holds an offline run; choose another --run-dir")
            if journal.state in ("rolling-back", "rolled-back", "finalized"):
                raise UsageError(f"{run_dir}: this run is {journal.state}; choose another "
                                 "--run-dir (or remove it) to migrate again")
            if journal.get("config") != config.identity():
                raise RunChanged(run_dir, "the store or target changed")
            report = journal.get("report")
            report["resumed"] += journal.state != "done"
            journal.set(report=report)
            self.progress.message(f"resuming the online run in {run_dir} "
                                  f"({journal.get('phase')})")
            return journal
        if any(p.name not in ("lock", PAUSE_FILE) for p in run_dir.iterdir()):
            raise UsageError(f"{run_dir}: not empty and holds no journal; remove it or pass "
                             "another --run-dir")
        if config.target.exists():
            raise TargetExists(config.target)
        pin = self._pin()
        report = OnlineReport(status="running", store=str(config.store),
                              target=str(config.target), run_dir=str(run_dir))
        journal = Journal.open(run_dir, create=True)
        journal.set_state("converting", f"online run created at change {pin}", mode="online",
                          phase="copying", config=config.identity(),
                          target=str(config.target.resolve()), serving="legacy",
                          online_pin=pin, online_applied=pin,
                          online_copied={"rows": 0}, online_version=None,
                          tool=__version__, created_at=time.time(), report=report.as_dict())
        return journal

    def _pin(self) -> Any:
        """The source position the copy starts from (here: the change-log position)."""
        return self.store.change_position()

    def close(self) -> None:
        """Close the journal and the store."""
        self.journal.close()
        self.store.close()

    def _save(self, **values: Any) -> None:
        """Record progress (durably, before it is reported), and when (``status``)."""
        self.journal.set(report=self.report.as_dict(), checkpoint_at=time.time(), **values)

    def _between_batches(self, where: str) -> None:
        """Honour a stop request and the pause file."""
        announced = False
        while True:
            if self.stop.requested:
                self.journal.set_state(self.journal.state, f"interrupted by {self.stop.signal}")
                raise Interrupted(f"interrupted by {self.stop.signal} {where}; run the same "
                                  "command again to resume")
            if not (self.run_dir / PAUSE_FILE).exists():
                return
            if not announced:  # in the journal's events too, so `status` shows it
                note = f"paused: {self.run_dir / PAUSE_FILE} exists; remove it to go on"
                self.journal.set_state(self.journal.state, note)
                self.progress.message(note)
                announced = True
            time.sleep(self.config.poll_s)

    def go(self, started: float) -> OnlineReport:
        if self.journal.state == "done":
            self.progress.message(f"{self.run_dir}: already cut over, nothing to resume")
            write_json(self.run_dir / REPORT, self.report.as_dict())
            return self.report
        try:
            if self.journal.get("phase") == "copying":
                self._copy()
            self._catch_up()
            self._cutover()
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:
            self.journal.set_state("failed", f"{type(exc).__name__}: {exc}",
                                   report=self.report.as_dict())
            if isinstance(exc, OSError):
                raise Interrupted(f"the run stopped: {exc}; fix the cause and run the same "
                                  "command again to resume") from exc
            raise
        self.report.elapsed_s = round(time.perf_counter() - started, 3)
        self._save()
        write_json(self.run_dir / REPORT, self.report.as_dict())
        return self.report

    def _restore(self) -> None:
        """Undo a Lance commit the journal did not record (the migrator died in between)."""
        version = self.journal.get("online_version")
        with writer_lock(self.run_dir):
            if version is None:
                remove(self.config.target)  # created by this run: it was absent at the start
            else:
                self.dual.restore(version)

    def _copy(self) -> None:
        copy_store(self)  # rowid ranges as tasks: dualmem_bulk.online_copy

    def _next_size(self, size: int, rows: int, seconds: float) -> int:
        """Throttle to ``max_rate``, and size the next page for ``target_batch_s``."""
        rate = self.config.max_rate
        if rate and rows:
            time.sleep(max(0.0, rows / rate - seconds))
        if rows < size or seconds <= 0:
            return size
        return next_size(size, seconds, self.config.target_batch_s)

    def _apply(self, *, upto: int | None = None, track: bool = False) -> Applied:
        """Apply one round of changes and journal the position; the caller holds the writer
        lock and a read (or write) transaction on the store."""
        after = self.journal.get("online_applied")
        applied = apply_changes(self.store, self.dual, after, limit=ROUND, upto=upto,
                                track=track)
        if applied.position != after:
            self._counted(applied)
            self._save(online_applied=applied.position, **(
                {"online_version": applied.version} if applied.version is not None else {}))
        return applied

    def _counted(self, applied: Applied) -> None:
        """Count an applied round in the report and the progress."""
        self.report.changes_applied += applied.upserts + applied.deletes
        self.report.catch_up_rounds += 1
        self.progress.advance(applied.upserts + applied.deletes)

    def _round(self, *, track: bool = False) -> Applied:
        """One catch-up round in its own read transaction."""
        with writer_lock(self.run_dir), self.store.snapshot():
            return self._apply(track=track)

    def _lag(self) -> int:
        return self.store.change_position() - int(self.journal.get("online_applied"))

    def _caught_up(self, pending: int, *, idle: bool) -> bool:
        """After a catch-up round leaving ``pending`` entries: whether to cut over now. With
        ``--postpone-cutover`` it waits for the request, polling while there is nothing to do."""
        if pending > self.config.cutover_lag:
            return False
        if not self.config.postpone_cutover or self.journal.get("cutover_requested"):
            return True
        if self.journal.get("phase") != "awaiting-cutover":
            self.report.phase = "awaiting-cutover"
            self._save(phase="awaiting-cutover")
            self.progress.message(f"caught up; waiting for `dualmem-bulk cutover {self.run_dir}`")
        if idle:
            time.sleep(self.config.poll_s)
        return False

    def _catch_up(self) -> None:
        """Apply the change log until the lag is at most ``cutover_lag`` (and, with
        ``postpone_cutover``, until a cut-over is requested)."""
        self._restore()
        self.progress.phase("catch-up", None)
        last_note = 0.0
        while True:
            self._between_batches("while catching up")
            applied = self._round()
            lag = self._lag()
            if time.monotonic() - last_note > 5:
                self.progress.message(f"catch-up: {self.report.changes_applied:,} changes "
                                      f"applied, lag {lag:,} change-log entries")
                last_note = time.monotonic()
            if self._caught_up(lag, idle=applied.version is None):
                return

    def _verified_digest(self) -> Pinned:
        """Pin a position, bring the target to it and compare full digests there."""
        self.progress.phase("verify", None)
        with writer_lock(self.run_dir):
            pinned = compare_at_pin(self.store, self.dual, self.journal, self._counted,
                                    self.progress)
            if not pinned.same:
                raise VerificationFailed(f"{pinned.describe(self.config.store, self.config.target)}"
                                         "; not cut over, the service stays on the legacy store")
            self._save(online_version=self.dual.index())
        return pinned

    def _cutover(self) -> None:
        pinned = self._verified_digest()
        carried = _Carried(pinned.source, pinned.source, pinned.source_identity,
                           pinned.target_identity)
        lag, previous = self._lag(), None
        # catch up until the lag is small and stops shrinking: the pause applies only the rest
        while lag > self.config.cutover_lag or (lag > 0 and (previous is None or lag < previous)):
            carried = carried.after(self._round(track=True))
            lag, previous = self._lag(), lag
        with writer_lock(self.run_dir):  # a fresh index: no index update inside the pause
            self._save(online_version=self.dual.index())
        mark = time.perf_counter()
        with self.store.write_lock(), writer_lock(self.run_dir):
            self.report.lag_at_pause = self._lag()
            in_pause = 0
            while self._lag() > 0:
                applied = self._apply(track=True)
                in_pause += applied.upserts + applied.deletes
                carried = carried.after(applied)
            fault_point("cutover-pause")
            counts = (self.store.count(), int(self.dual.dataset().count_rows()))
            source, target = carried.source, carried.target
            same = carried.same and source.rows == counts[0] == counts[1]
            self.report.changes_in_pause = in_pause
            self.report.pause_ms = round((time.perf_counter() - mark) * 1000, 1)
            self.report.verified, self.report.rows, self.report.digest = same, counts[1], target.hex
            if same:
                self.report.phase, self.report.status = "cut-over", "done"
                self.journal.set_state(
                    "done", f"cut over at change {self.journal.get('online_applied')}, pause "
                            f"{self.report.pause_ms} ms", phase="cut-over", serving="dual",
                    cutover_at=time.time(), report=self.report.as_dict())
        if not same:
            raise VerificationFailed(
                f"{self.config.target}: at the cut-over the store had {counts[0]} rows (digest "
                f"{source.hex}), the target {counts[1]} (digest {target.hex})"
                f"{describe_identity(carried.source_identity, carried.target_identity)}; not "
                "cut over, the service stays on the legacy store")
        self.progress.message(f"cut over: writes held {self.report.pause_ms} ms, "
                              f"{in_pause} change(s) applied in the pause")


def _driver(config: OnlineConfig) -> type[_Online]:
    """The driver for the source: an Engram data root's WAL, or a MemoryStore."""
    if config.wal_source:
        from dualmem_bulk.online_wal import OnlineWal

        return OnlineWal
    return _Online


def run_online(config: OnlineConfig, progress: Progress = NULL_PROGRESS) -> OnlineReport:
    """Migrate the live store ``config.store`` into ``config.target`` and cut over (see the
    module docstring), or resume the run in its run directory.

    Raises :class:`~dualmem_bulk.errors.SourceError` for a store that is not a MemoryStore,
    :class:`~dualmem_bulk.errors.TargetExists`, :class:`~dualmem_bulk.errors.Interrupted`
    when stopped (resumable), :class:`~dualmem_bulk.errors.RunLocked` while another migrator
    holds the run, and :class:`~dualmem_bulk.errors.VerificationFailed` if the digests differ
    at the cut-over (the service then stays on the legacy store).
    """
    started = time.perf_counter()
    if config.batch_size < 1 or config.cutover_lag < 0:
        raise UsageError("--batch-size must be at least 1 and --cutover-lag at least 0")
    if config.max_rate is not None and config.max_rate <= 0:
        raise UsageError(f"--max-rate must be positive, got {config.max_rate}")
    if config.workers is not None and config.workers < 0:
        raise UsageError(f"--workers must be at least 0, got {config.workers}")
    run_dir = config.resolved_run_dir
    fresh = not run_dir.exists()
    try:
        with migrating(run_dir, progress) as stop:
            online = _driver(config)(config, run_dir, progress, stop)
            try:
                return online.go(started)
            finally:
                online.close()
    except Exception:
        if fresh and not Journal.exists(run_dir):
            remove(run_dir)  # a refused run leaves nothing behind
        raise

