"""The online run for a live :class:`~dualmem_bulk.stores.memory_store.MemoryStore`: the
change log is the feed (the protocol: :mod:`dualmem_bulk.online.run`). The copy's tasks are
:mod:`dualmem_bulk.online.copy`'s; this is the driver's side of it, which plans the ranges,
commits them in order and journals each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualmem_bulk._fs import fault_point
from dualmem_bulk._signals import StopRequest
from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.engines import open_pool
from dualmem_bulk.errors import Interrupted, VerificationFailed
from dualmem_bulk.online.config import OnlineConfig
from dualmem_bulk.online.copy import RangeTask, copy_range, next_size
from dualmem_bulk.online.driver import OnlineDriver
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.keys import RangeRecord, change_number
from dualmem_bulk.schema import DUAL_SCHEMA
from dualmem_bulk.stores.dual import ROUND, Applied, apply_changes, minus, writer_lock
from dualmem_bulk.stores.memory_store import MemoryStore
from dualmem_bulk.stores.staging import staged_writer
from dualmem_bulk.verify.pinned import Pinned, compare_at_pin, describe_identity

__all__ = ["OnlineMemoryStore"]


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


class OnlineMemoryStore(OnlineDriver):
    """One invocation of an online run whose source is a MemoryStore."""

    def __init__(self, config: OnlineConfig, run_dir: Path, progress: Progress,
                 stop: StopRequest) -> None:
        self.store = MemoryStore(config.store, create=False)
        try:
            super().__init__(config, run_dir, progress, stop)
        except BaseException:
            self.store.close()
            raise

    def _pin(self) -> Any:
        """The source position the copy starts from (here: the change-log position)."""
        return self.store.change_position()

    def close(self) -> None:
        """Close the journal and the store."""
        super().close()
        self.store.close()

    def _copy(self) -> None:
        """Copy the store in rowid ranges as tasks, then index the id (resuming at the first
        range not recorded)."""
        _RangeCopy(self).copy()

    def _apply(self, *, upto: int | None = None, track: bool = False) -> Applied:
        """Apply one round of changes and journal the position; the caller holds the writer
        lock and a read (or write) transaction on the store."""
        after = change_number(self.journal.values["online_applied"])
        applied = apply_changes(self.store, self.dual, after, limit=ROUND, upto=upto,
                                track=track)
        if applied.position != after:
            self._counted(applied)
            self._save(**applied.journalled())
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
        return self.store.change_position() - change_number(self.journal.values["online_applied"])

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

    def _verified_digest(self) -> Pinned[int]:
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
                    "done", f"cut over at change {self.journal.values['online_applied']}, pause "
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


class _RangeCopy:
    """The driver's side: plans, runs the tasks on a pool, commits and journals in order."""

    def __init__(self, run: OnlineMemoryStore) -> None:
        self.run = run
        self.size = run.config.batch_size
        self.waited = 0.0
        """Seconds spent held by the pause file (not copy time)."""

    def clock(self) -> float:
        """Copy time: wall time less the pauses."""
        return time.perf_counter() - self.waited

    def tasks(self, copied: dict[str, Any]) -> Iterator[RangeTask]:
        """The ranges not recorded yet, each sized when the pool asks for it; the stop request
        and the pause file are honoured before each."""
        run = self.run
        if copied["plan"] is None:
            return
        first, last = copied.get("next", copied["plan"][0]), copied["plan"][1]
        unit, pin = copied["ranges"], change_number(run.journal.values["online_pin"])
        store, target = run.config.store.resolve(), run.config.target.resolve()
        while first <= last:
            mark = time.perf_counter()
            run._between_batches(f"after copying {run.report.nodes_copied:,} nodes")
            self.waited += time.perf_counter() - mark
            end = min(last, first + self.size - 1)
            yield RangeTask(unit, store, target, first, end, pin)
            unit, first = unit + 1, end + 1

    def copy(self) -> None:
        run = self.run
        copied = run.journal.values["online_copied"]
        if "plan" not in copied:  # planned after the pin; a copy in pages of ids starts over
            copied = {"plan": run.store.rowid_bounds(), "ranges": 0, "rows": 0,
                      "digest": TableDigest().hex}
            run.report.nodes_copied = 0
            run._save(online_copied=copied, online_version=None)
        run._restore()
        total = run.store.count()
        run.progress.phase("copy", total)
        run.progress.advance(copied["rows"])
        version = run.journal.values["online_version"]
        writer = staged_writer("lance", run.config.target, DUAL_SCHEMA)
        began = last = self.clock()
        copy_s = run.report.copy_s
        rate = run.config.max_rate
        try:
            with open_pool("local", run.config.workers, rows=total) as pool:
                task_s = run.config.target_batch_s * max(1, pool.workers)
                run.report.workers = pool.workers
                for task, done in pool.ordered(copy_range, self.tasks(copied)):
                    with writer_lock(run.run_dir):
                        if done.written or version is None:
                            version = writer.commit(task.unit, done.written)[0]
                    if rate and done.rows:
                        time.sleep(max(0.0, done.rows / rate - (self.clock() - last)))
                    last = self.clock()
                    digest = TableDigest.from_hex(copied["rows"], copied["digest"])
                    digest += TableDigest.from_hex(done.rows, done.digest)
                    copied = {**copied, "ranges": task.unit + 1, "next": task.last + 1,
                              "rows": digest.rows, "digest": digest.hex}
                    run.report.nodes_copied = copied["rows"]
                    run.report.nodes_copied_this_invocation += done.rows
                    run.report.copy_s = round(copy_s + last - began, 3)
                    record: RangeRecord = {
                        "unit": task.unit, "first": task.first, "last": task.last,
                        "rows": done.rows, "digest": done.digest, "version": version,
                        "seconds": done.seconds, "invocation": run.report.resumed,
                        "committed_at": time.time()}
                    run._save(online_copied=copied, online_version=version, target_created=True,
                              copied_range=record)  # durable, then reported
                    run.progress.advance(done.rows)
                    if task.last < copied["plan"][1] and done.seconds > 0:  # not the last
                        self.size = next_size(task.last - task.first + 1, done.seconds,
                                              task_s)
        except BrokenProcessPool as exc:
            run.journal.set_state(run.journal.state, f"a worker process died: {exc}")
            raise Interrupted(f"a worker process died ({exc}); run the same command again to "
                              "resume") from exc
        with writer_lock(run.run_dir):
            if version is None:  # nothing to copy: the dataset must exist all the same
                version = writer.commit(0, [])[0]
                run._save(online_version=version, target_created=True)
            version = run.dual.index()
        run.report.copy_nodes_per_s = round(copied["rows"] / max(run.report.copy_s, 1e-9), 1)
        run.report.phase = "catching-up"
        run._save(online_version=version, phase="catching-up")
