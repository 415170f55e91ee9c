"""The online run for a live Engram data root: its WAL is the change feed.

1. **Pin** a WAL position P (per space and file: the end of the last whole record).
2. **Copy** the replay of the WAL at P (the offline reader, bounded to P) into a new Lance
   dataset, one commit per batch, each journalled with its batch count; a resume restores the
   recorded version and skips the recorded batches (the replay at P never changes: the WAL is
   append-only).
3. **Catch up** in rounds: :class:`~dualmem_bulk.sources.engram_wal_feed.WalFeed` reads the
   records after the applied position; each id they touch is replayed again from all its records
   (so several records of one id collapse, a deleted node stays deleted unless a later
   EpisodeStore adds it back, exactly as Engram's replay does), upserted or deleted, and the new
   position journalled after the Lance commit.
4. **Cut over** after a round that read at most ``cutover_lag`` records: Engram's writer cannot
   be paused, so the proof is at the applied position Q: the digest of a full replay of the WAL
   at Q must equal the dual store's, stored and recomputed from every node's fields, and so must
   the identity digests (which cover ``space`` and ``episode`` too). Only then is the cut-over
   (and Q) recorded (:func:`~dualmem_bulk.verify.pinned.compare_wal`). The service keeps reading
   Engram until it switches itself.
"""

from __future__ import annotations

import time

import pyarrow as pa

from dualmem_bulk._fs import fault_point
from dualmem_bulk.errors import VerificationFailed
from dualmem_bulk.online.copy import next_size
from dualmem_bulk.online.driver import OnlineDriver
from dualmem_bulk.rundir.keys import wal_position
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources.engram_wal import read_engram_wal
from dualmem_bulk.sources.engram_wal_feed import Position, WalFeed, legacy_columns
from dualmem_bulk.stores.dual import ROUND, writer_lock
from dualmem_bulk.verify.pinned import compare_wal

__all__ = ["OnlineWal"]


class OnlineWal(OnlineDriver):
    """One invocation of an online run whose source is an Engram data root (the WAL is only
    read, file by file: nothing to close but the journal)."""

    def _pin(self) -> Position:
        """Read every whole record once: the position."""
        feed = WalFeed(self.config.store)
        feed.advance()
        return feed.position

    def _copy(self) -> None:
        self._restore()
        pin = wal_position(self.journal.values["online_pin"])
        copied = self.journal.values["online_copied"]
        done = copied.get("batches", 0)
        source = read_engram_wal(self.config.store, self.config.batch_size, upto=pin)
        self.progress.phase("copy", source.memories)
        self.progress.advance(copied["rows"])
        version = self.journal.values["online_version"]
        for number, part in enumerate(source):
            if number < done:
                continue
            self._between_batches(f"after copying {copied['rows']:,} nodes")
            mark = time.perf_counter()
            rows = part.batch.num_rows
            if rows or version is None:
                with writer_lock(self.run_dir):
                    version = self.dual.append(legacy_columns(part.batch))
            copied = {"batches": number + 1, "rows": copied["rows"] + rows}
            self._next_size(self.config.batch_size, rows, time.perf_counter() - mark)  # --max-rate
            self.report.nodes_copied = copied["rows"]  # copy time counts the throttle's sleep
            self.report.nodes_copied_this_invocation += rows
            self.report.copy_s = round(self.report.copy_s + time.perf_counter() - mark, 3)
            self._save(online_copied=copied, online_version=version, target_created=True)
            self.progress.advance(rows)
        with writer_lock(self.run_dir):
            if version is None:  # an empty replay: the dataset must exist all the same
                version = self.dual.append(pa.RecordBatch.from_pylist([], schema=LEGACY_SCHEMA))
                self._save(online_version=version, target_created=True)
            version = self.dual.index()
        self.report.copy_nodes_per_s = round(copied["rows"] / max(self.report.copy_s, 1e-9), 1)
        self.report.phase = "catching-up"
        self._save(online_version=version, phase="catching-up")

    def _next_size(self, size: int, rows: int, seconds: float) -> int:
        """Throttle to ``max_rate``, and size the next page for ``target_batch_s``."""
        rate = self.config.max_rate
        if rate and rows:
            time.sleep(max(0.0, rows / rate - seconds))
        if rows < size or seconds <= 0:
            return size
        return next_size(size, seconds, self.config.target_batch_s)

    def _feed(self) -> WalFeed:
        """A feed at the applied position (every record up to it read again)."""
        feed = WalFeed(self.config.store)
        feed.advance(upto=wal_position(self.journal.values["online_applied"]))
        return feed

    def _wal_round(self, feed: WalFeed) -> int:
        """Apply the next records (at most about ``ROUND``); how many were read."""
        with writer_lock(self.run_dir):
            read, touched = feed.advance(limit=ROUND)
            if not read:
                return 0
            if touched:
                upserts, deletes = feed.outcome(touched)
                version = self.dual.apply_in_spaces(upserts, deletes)
                fault_point("wal-applied")
                self.report.changes_applied += len(touched)
                self.report.catch_up_rounds += 1
                self._save(online_applied=feed.position, online_version=version)
                self.progress.advance(len(touched))
            else:
                self._save(online_applied=feed.position)
        return read

    def _catch_up(self) -> None:
        """Apply the WAL's new records until a round reads at most ``cutover_lag`` of them
        (and, with ``postpone_cutover``, until a cut-over is requested)."""
        self._restore()
        feed = self._feed()
        self.progress.phase("catch-up", None)
        last_note = 0.0
        while True:
            self._between_batches("while catching up")
            read = self._wal_round(feed)
            if time.monotonic() - last_note > 5:
                self.progress.message(f"catch-up: {self.report.changes_applied:,} ids applied, "
                                      f"{read:,} WAL records in the last round")
                last_note = time.monotonic()
            if self._caught_up(read, idle=not read):
                return

    def _cutover(self) -> None:
        """Prove the dual store equal to the WAL's replay at the applied position; record it."""
        self.progress.phase("verify", None)
        with writer_lock(self.run_dir):
            position = wal_position(self.journal.values["online_applied"])
            pinned = compare_wal(self.config.store, self.dual, position, self.progress)
            self.report.verified = pinned.same
            self.report.rows, self.report.digest = pinned.stored.rows, pinned.stored.hex
            if not pinned.same:
                raise VerificationFailed(f"{pinned.describe(self.config.store, self.config.target)}"
                                         "; not cut over")
            version = self.dual.index()
            feed = WalFeed(self.config.store)
            feed.position = position
            issues = sorted([*pinned.report.issues, *feed.tail_issues()],
                            key=lambda i: (i.space, i.file, i.offset))
            self.report.notes = [i.describe() for i in issues]
            self.report.phase, self.report.status = "cut-over", "done"
            self.journal.set_state(
                "done", "cut over: the dual store equals the WAL replay at the applied position",
                phase="cut-over", cutover_at=time.time(), cutover_position=position,
                online_version=version, report=self.report.as_dict())
        self.progress.message(f"cut over: {pinned.stored.rows:,} nodes equal the WAL replay; "
                              "switch the service's reads to the dual store")

