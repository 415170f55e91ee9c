"""The write path after the cut-over: a write is acknowledged once it is durable in the legacy
store, applied to the Lance store later in batches (group commit), and every read serves the
Lance store plus the writes not applied yet, so a reader sees every acknowledged write.

The write-ahead store is the legacy store itself: a SQLite file in WAL mode with
``synchronous=FULL`` whose triggers log every write (``memory_changes``) in the write's own
transaction. Until ``finalize`` it must hold every write anyway (a rollback relies on it), so a
second durable copy would only double the cost of a write. The journal's ``online_applied`` is
the last log entry the Lance store holds.

After ``finalize`` the legacy store takes no more writes: the run's
:class:`~dualmem_bulk.stores.pending_store.PendingStore` takes their place as the write-ahead
store (journal key ``pending_applied``), and is trimmed after each batch. Both are a
:class:`Feed`.

- **Applying** (:func:`apply_pending`), under the run's writer lock (one Lance committer per
  table): the log after ``online_applied`` in rounds, each id's changes collapsed into its
  current state (upserted, or deleted if it is gone), each round's Lance commit followed by the
  journalled position. A process killed between the two re-applies the round, which writes the
  same states again: nothing is lost or doubled.
- **Group commit** (:class:`Applier`): a thread of the service process applies once
  ``rows`` entries wait or the oldest has waited ``age_s``; writes never wait for it (they do
  not touch Lance), nor for the version clean-up it runs now and then.
- **Reading** (:class:`Overlay`): read the applied position, then, in one legacy read
  transaction, the ids changed after it and their current rows, then the Lance store (at least
  as new as that position, since the position is journalled after the commit). Pending ids are
  served from the legacy rows, every other id from Lance.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk._fs import fault_point
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import JournalValues, change_number
from dualmem_bulk.stores.dual import (
    ROUND,
    ChangeFeed,
    DualStore,
    _literal,
    apply_changes,
    writer_lock,
)
from dualmem_bulk.stores.memory_store import Memory, MemoryStore
from dualmem_bulk.stores.pending_store import PendingStore
from dualmem_bulk.stores.search import has_vector_index, nearest, top_k

__all__ = [
    "APPLIED",
    "DEFAULT_POLICY",
    "Applier",
    "ApplyPolicy",
    "Feed",
    "Overlay",
    "apply_pending",
    "is_pending",
    "pending_ids",
]

_ALL = 1 << 62

APPLIED: dict[str, Literal["online_applied", "pending_applied"]] = {
    "dual": "online_applied", "lance": "pending_applied"}
"""Journal key of the last feed entry the Lance store holds, by the run's ``serving`` mode:
``dual`` (after the cut-over; the feed is the legacy store) or ``lance`` (after finalize; the
feed is the pending store)."""


class Feed(ChangeFeed, Protocol):
    """A write-ahead store the adapter reads pending writes from."""

    def snapshot(self) -> contextlib.AbstractContextManager[None]: ...  # pragma: no cover

    def change_position(self) -> int: ...  # pragma: no cover

    def retrieve(self, memory_id: str) -> Memory | None: ...  # pragma: no cover

    def contains(self, memory_id: str) -> bool: ...  # pragma: no cover

    def close(self) -> None: ...  # pragma: no cover


@dataclass(frozen=True)
class ApplyPolicy:
    """When an :class:`Applier` commits the pending writes to Lance: once ``rows`` change-log
    entries wait, or once the oldest has waited ``age_s`` seconds."""

    rows: int = 500
    age_s: float = 0.2


DEFAULT_POLICY = ApplyPolicy()


def pending_ids(feed: Feed, applied: int) -> list[str]:
    """The ids with a feed entry after ``applied``, each once."""
    return feed.changes(applied, _ALL)[0]


def is_pending(feed: Feed, applied: int, memory_id: str) -> bool:
    """Whether ``memory_id`` has a change not applied yet: then the feed, whose state is at
    least as new as the entries read here, answers for it; otherwise the Lance store does."""
    return memory_id in pending_ids(feed, applied)


def apply_pending(run_dir: Path, feed: Feed, journal: Journal, dual: DualStore, mode: str, *,
                  blocking: bool = True) -> int | None:
    """Apply the feed entries pending when called to ``dual`` while the run serves ``mode``;
    the entries applied, or ``None`` if another process holds the writer lock (it is applying
    them) and not ``blocking``. Entries written meanwhile wait for the next call: a writer
    faster than the applier must not keep the lock from a rollback or ``finalize``."""
    with writer_lock(run_dir, blocking=blocking) as held:
        if not held:
            return None
        if journal.values["serving"] != mode:  # rolled back or finalized meanwhile
            return 0
        start = after = change_number(journal.values[APPLIED[mode]])
        upto = feed.change_position()
        while True:
            with feed.snapshot():
                applied = apply_changes(feed, dual, after, limit=ROUND, upto=upto,
                                        maintain=True)
            if applied.position == after:
                return after - start
            fault_point("pending-applied")  # committed to Lance, not yet journalled
            after = applied.position
            values: JournalValues = {"online_version": applied.version}
            values[APPLIED[mode]] = after
            journal.set(**values)
            if isinstance(feed, PendingStore):
                feed.trim(after)


class Applier:
    """A daemon thread applying a service's pending writes to the dual store in batches.

    It has its own connections. Several appliers (one per adapter, in several processes) may
    run: the writer lock makes one of them apply at a time, the others skip their turn.
    :meth:`close` applies what is still pending before it returns.
    """

    def __init__(self, store: Path, run_dir: Path, policy: ApplyPolicy, mode: str) -> None:
        self._store, self._run_dir, self._policy = store, run_dir, policy
        self.mode = mode
        """The serving mode it applies for; it stops when the run serves another."""
        self._wake, self._stop = threading.Event(), threading.Event()
        self.error: Exception | None = None
        """The last failure of a batch (retried at the next turn; the writes stay pending)."""
        self._thread = threading.Thread(target=self._run, name="dualmem-applier", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A write was acknowledged: count it now rather than at the next poll."""
        self._wake.set()

    def close(self) -> None:
        """Stop after applying what is pending; raise if that failed."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        feed: Feed = (MemoryStore(self._store, create=False) if self.mode == "dual"
                      else PendingStore(self._run_dir))
        journal = Journal.open(self._run_dir)
        try:
            dual = DualStore(journal.target)
            oldest: float | None = None
            while not self._stop.is_set():
                self._wake.wait(self._policy.age_s / 2)
                self._wake.clear()
                if journal.values["serving"] != self.mode:
                    return
                waiting = feed.change_position() - change_number(journal.values[APPLIED[self.mode]])
                now = time.monotonic()
                oldest = None if waiting <= 0 else (oldest or now)
                if oldest is not None and (waiting >= self._policy.rows
                                           or now - oldest >= self._policy.age_s):
                    oldest = self._turn(feed, journal, dual, blocking=False)
            self._turn(feed, journal, dual, blocking=True)
        finally:
            feed.close()
            journal.close()

    def _turn(self, feed: Feed, journal: Journal, dual: DualStore, *,
              blocking: bool) -> float | None:
        """One application; when the next is due from (``None``: nothing known pending)."""
        try:
            if apply_pending(self._run_dir, feed, journal, dual, self.mode,
                             blocking=blocking) is None:
                return time.monotonic()  # another applier has the lock: retry after age_s
            self.error = None
        except Exception as exc:  # a failed batch stays pending, durable in the legacy log
            self.error = exc
            return time.monotonic()
        return None


class Overlay:
    """One read's view of the dual store plus the writes not applied to it yet."""

    def __init__(self, feed: Feed, dual: DualStore, applied: int) -> None:
        self._dual = dual
        with feed.snapshot():
            self.ids = pending_ids(feed, applied)
            self.rows = feed.rows(self.ids)
        self._present = self.rows.column("id").to_pylist()

    def count(self) -> int:
        """Number of memories (both Lance counts from one version)."""
        ds = self._dual.latest()
        chunks = (self.ids[s:s + 500] for s in range(0, len(self.ids), 500))
        in_lance = sum(int(ds.count_rows(filter=f"episode_id IN ({','.join(map(_literal, c))})"))
                       for c in chunks)
        return int(ds.count_rows()) - in_lance + len(self._present)

    def all_ids(self) -> list[str]:
        """Every memory id, in id order (of UTF-8 bytes, as SQLite orders them)."""
        lance_ids = self._dual.latest().to_table(columns=["episode_id"]).column(0)
        if self.ids:
            lance_ids = lance_ids.filter(pc.invert(pc.is_in(lance_ids, pa.array(self.ids))))
        return sorted([*lance_ids.to_pylist(), *self._present], key=lambda i: i.encode())

    def search(self, embedding: Sequence[float] | np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` memories most similar to ``embedding`` (cosine), best first: through the
        ANN index if the store has one, else an exact scan; the pending rows exactly."""
        ds = self._dual.latest()
        if has_vector_index(ds):
            found = nearest(ds, embedding, k, exclude=self.ids) + top_k(embedding, k, [self.rows])
            return sorted(found, key=lambda t: -t[1])[:k]
        skip = pa.array(self.ids, pa.utf8())

        def unapplied(batch: pa.RecordBatch) -> pa.RecordBatch:
            if not self.ids:
                return batch
            return batch.filter(pc.invert(pc.is_in(batch.column("episode_id"), skip)))

        lance_batches = (unapplied(b) for b in ds.to_batches(columns=["episode_id", "embedding"]))
        return top_k(embedding, k, [*lance_batches, self.rows])
