"""``CompatibilityAdapter``: Engram's ``MemoryBackend`` API for a service during and after an
online migration, switching stores without a restart.

Which store serves is read from the run's journal (key ``serving``), re-read only when the
journal changed (``PRAGMA data_version``), so every process switches on its next call:

- ``legacy`` (before the cut-over, and after a rollback): everything goes to the legacy
  :class:`~dualmem_bulk.stores.memory_store.MemoryStore`; its triggers log each write for the
  migrator.
- ``dual`` (after the cut-over): a write is acknowledged once it is durable in the legacy
  store (whose change log is the dual store's write-ahead log, and which a rollback before
  ``finalize`` needs whole); an :class:`~dualmem_bulk.stores.pending.Applier` thread applies
  the pending writes to the Lance store in batches (by size or age), one applier at a time
  across processes under the run's writer lock (``RUN_DIR/dual.lock``, an ``flock``). Reads
  serve the Lance store plus the writes not applied yet (each Memory rebuilt exactly as
  stored), so every reader sees every acknowledged write. A process that dies before its
  writes were applied loses nothing: any applier applies them later, and readers see them
  meanwhile.
- ``lance`` (after ``finalize``): the Lance store alone holds the memories; writes are
  acknowledged once durable in the run's
  :class:`~dualmem_bulk.stores.pending_store.PendingStore` (``RUN_DIR/pending.sqlite``) and
  applied and served the same way. The legacy store is not opened (it may be gone).

The mode a write follows is decided inside the legacy write transaction, once the write lock
is held: the migrator records the cut-over, and ``finalize`` the end of the dual writing,
before releasing that lock, so no write lands in the legacy store alone after the cut-over,
nor in it at all after ``finalize`` (the write is rolled back and goes to the pending store).

One adapter per thread: it keeps SQLite connections, which are not shared across threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import change_number
from dualmem_bulk.stores.dual import DualStore
from dualmem_bulk.stores.memory_store import Memory, MemoryStore
from dualmem_bulk.stores.pending import (
    APPLIED,
    DEFAULT_POLICY,
    Applier,
    ApplyPolicy,
    Feed,
    Overlay,
    apply_pending,
    is_pending,
)
from dualmem_bulk.stores.pending_store import PendingStore

__all__ = ["CompatibilityAdapter"]

T = TypeVar("T")


class _Finalized(Exception):
    """Raised inside a legacy write transaction once the run is finalized: roll it back."""


class CompatibilityAdapter:
    """The ``MemoryBackend`` API over the legacy store and, after the cut-over, the dual store.

    ``store`` is the legacy SQLite file; ``run_dir`` the online migration's run directory (it
    may not exist yet: the adapter serves the legacy store until a run records a cut-over).
    ``busy_timeout_ms`` must exceed the migrator's cut-over pause. ``apply`` is when this
    adapter's applier commits pending writes to Lance after the cut-over (``None``: this adapter
    never applies; another one, or :meth:`flush`, must).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> backend = CompatibilityAdapter(root / "memories.sqlite", root / "nodes.lance.run")
        >>> backend.legacy_mode, backend.count()
        (True, 0)
    """

    def __init__(self, store: Path, run_dir: Path, *, busy_timeout_ms: int = 10_000,
                 apply: ApplyPolicy | None = DEFAULT_POLICY) -> None:
        self.store_path, self.run_dir = store, run_dir
        self._timeout_ms = busy_timeout_ms
        self._policy = apply
        self._applier: Applier | None = None
        self._legacy_store: MemoryStore | None = None
        self._pending: PendingStore | None = None
        self._journal: Journal | None = None
        self._seen: int | None = None
        self._serving = "legacy"
        self._dual: DualStore | None = None
        self._write_mode = "legacy"

    def close(self) -> None:
        """Apply this adapter's pending writes (if it applies) and close the connections."""
        if self._applier is not None:
            self._applier.close()
            self._applier = None
        for conn in (self._legacy_store, self._pending, self._journal):
            if conn is not None:
                conn.close()

    def __enter__(self) -> CompatibilityAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- which store serves --------------------------------------------------------------------

    def _mode(self) -> str:
        if self._journal is None:
            if not Journal.exists(self.run_dir):
                return "legacy"
            self._journal = Journal.open(self.run_dir)
        seen = self._journal.data_version()
        if seen != self._seen:
            self._seen = seen
            self._serving = self._journal.values["serving"]
            target = self._journal.values["target"]
            if target is None:
                self._dual = None
            elif self._dual is None or self._dual.path != Path(target):
                self._dual = DualStore(Path(target))  # kept: its open dataset caches indices
        return self._serving

    @property
    def legacy_mode(self) -> bool:
        """Whether the legacy store serves (before the cut-over, or after a rollback)."""
        return self._mode() == "legacy"

    @property
    def _legacy(self) -> MemoryStore:
        if self._legacy_store is None:
            self._legacy_store = MemoryStore(self.store_path, busy_timeout_ms=self._timeout_ms,
                                             write_guard=self._note_write_mode)
        return self._legacy_store

    def _feed(self, mode: str) -> Feed:
        if mode == "dual":
            return self._legacy
        if self._pending is None:
            self._pending = PendingStore(self.run_dir, busy_timeout_ms=self._timeout_ms)
        return self._pending

    def _note_write_mode(self) -> None:
        """Called by the legacy store inside each write transaction, under its write lock."""
        self._write_mode = self._mode()
        if self._write_mode == "lance":
            raise _Finalized

    def _dual_store(self) -> DualStore:
        assert self._dual is not None, "a run serving the dual store records its target"
        return self._dual

    def _applied(self, mode: str) -> int:
        """The last feed entry the Lance store holds (read before the pending writes)."""
        assert self._journal is not None
        return change_number(self._journal.values[APPLIED[mode]])

    def _write(self, legacy: Callable[[MemoryStore], T], pending: Callable[[PendingStore], T]) -> T:
        """Write to the legacy store, or after ``finalize`` to the pending store; then let an
        applier know (started on the first write after the cut-over)."""
        result: T
        if self._mode() == "lance":
            self._write_mode = "lance"
        else:
            with contextlib.suppress(_Finalized):  # finalized meanwhile: not written
                result = legacy(self._legacy)
        if self._write_mode == "lance":
            store = self._feed("lance")
            assert isinstance(store, PendingStore)
            result = pending(store)
        if self._write_mode in APPLIED and self._policy is not None:
            if self._applier is None or self._applier.mode != self._write_mode:
                if self._applier is not None:
                    self._applier.close()
                self._applier = Applier(self.store_path, self.run_dir, self._policy,
                                        self._write_mode)
            self._applier.notify()
        return result

    def flush(self) -> None:
        """Apply every pending write to the Lance store now (waits for the writer lock)."""
        mode = self._mode()
        if mode in APPLIED:
            assert self._journal is not None
            apply_pending(self.run_dir, self._feed(mode), self._journal, self._dual_store(), mode)

    def _in_lance(self, memory_id: str) -> Memory | None:
        return self._dual_store().memory(memory_id)

    # --- Engram's MemoryBackend API --------------------------------------------------------------

    def store(self, memory: Memory) -> None:
        """Insert or replace ``memory`` (acknowledged once durable; see the module docstring)."""
        self._write(lambda legacy: legacy.store(memory), lambda pending: pending.store(memory))

    def remove(self, memory_id: str) -> bool:
        """Delete a memory; whether it existed."""
        return self._write(lambda legacy: legacy.remove(memory_id),
                           lambda pending: pending.remove(memory_id, self._in_lance))

    def update_activation(self, memory_id: str, activation: float) -> bool:
        """Set a memory's activation; whether it exists."""
        return self._write(lambda legacy: legacy.update_activation(memory_id, activation),
                           lambda pending: pending.update_activation(memory_id, activation,
                                                                     self._in_lance))

    def _serve(self, dual: Callable[[Feed, int], T], legacy: Callable[[], T]) -> T:
        """Read from the store that serves: the Lance store plus the pending writes of the
        mode's feed. A Lance read that fails is retried once on the latest version (its version
        may have been cleaned up meanwhile), or served by the legacy store if a rollback
        switched back meanwhile."""
        mode = self._mode()
        if mode not in APPLIED:
            return legacy()
        try:
            return dual(self._feed(mode), self._applied(mode))
        except Exception:
            mode = self._mode()
            if mode not in APPLIED:
                return legacy()
            return dual(self._feed(mode), self._applied(mode))

    def retrieve(self, memory_id: str) -> Memory | None:
        """The memory with this id, or ``None``."""
        def from_dual(feed: Feed, applied: int) -> Memory | None:
            if is_pending(feed, applied, memory_id):
                return feed.retrieve(memory_id)
            return self._in_lance(memory_id)

        return self._serve(from_dual, lambda: self._legacy.retrieve(memory_id))

    def contains(self, memory_id: str) -> bool:
        """Whether a memory with this id exists."""
        def from_dual(feed: Feed, applied: int) -> bool:
            if is_pending(feed, applied, memory_id):
                return feed.contains(memory_id)
            return self._dual_store().contains(memory_id)

        return self._serve(from_dual, lambda: self._legacy.contains(memory_id))

    def count(self) -> int:
        """Number of memories."""
        return self._serve(lambda feed, applied: self._overlay(feed, applied).count(),
                           lambda: self._legacy.count())

    def all_ids(self) -> list[str]:
        """Every memory id, in id order."""
        return self._serve(lambda feed, applied: self._overlay(feed, applied).all_ids(),
                           lambda: self._legacy.all_ids())

    def search(self, embedding: Sequence[float] | np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` memories most similar to ``embedding`` (cosine), best first."""
        return self._serve(lambda feed, applied: self._overlay(feed, applied).search(embedding, k),
                           lambda: self._legacy.search(embedding, k))

    def _overlay(self, feed: Feed, applied: int) -> Overlay:
        return Overlay(feed, self._dual_store(), applied)
