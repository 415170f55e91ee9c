"""``CompatibilityAdapter``: Engram's ``MemoryBackend`` API for a service during and after an
online migration, switching stores without a restart.

Which store serves is read from the run's journal (key ``serving``), re-read only when the
journal changed (``PRAGMA data_version``), so every process switches on its next call:

- ``legacy`` (before the cut-over, and after a rollback): everything goes to the legacy
  :class:`~dualmem_bulk.stores.memory_store.MemoryStore`; its triggers log each write for the
  migrator.
- ``dual`` (after the cut-over): reads come from the DualMemoryNode Lance store, each Memory
  rebuilt exactly as stored (``to_legacy``). Writes go to the legacy store first (so a rollback
  before ``finalize`` finds every write there), then the change log is applied to the dual
  store before the call returns.

The mode a write follows is decided inside the legacy write transaction, once the write lock
is held: the migrator records the cut-over before it releases that lock, so no write can land
in the legacy store alone after the cut-over. Dual-store commits are serialized across
processes by the run's writer lock (``RUN_DIR/dual.lock``, an ``flock``): two processes
merging into one Lance table can duplicate keys. Because each commit applies the change log
from the last applied position, a process that dies between its legacy write and its dual
commit loses nothing: the next dual write (from any process) applies it.

One adapter per thread: it keeps SQLite connections, which are not shared across threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from dualmem_bulk.journal import Journal
from dualmem_bulk.stores.dual import ROUND, DualStore, apply_changes, writer_lock
from dualmem_bulk.stores.memory_store import Memory, MemoryStore, batch_to_memories, top_k

__all__ = ["CompatibilityAdapter"]

T = TypeVar("T")


class CompatibilityAdapter:
    """The ``MemoryBackend`` API over the legacy store and, after the cut-over, the dual store.

    ``store`` is the legacy SQLite file; ``run_dir`` the online migration's run directory (it
    may not exist yet: the adapter serves the legacy store until a run records a cut-over).
    ``busy_timeout_ms`` must exceed the migrator's cut-over pause.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> backend = CompatibilityAdapter(root / "memories.sqlite", root / "nodes.lance.run")
        >>> backend.legacy_mode, backend.count()
        (True, 0)
    """

    def __init__(self, store: Path, run_dir: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.run_dir = run_dir
        self._legacy = MemoryStore(store, busy_timeout_ms=busy_timeout_ms,
                                   write_guard=self._note_write_mode)
        self._journal: Journal | None = None
        self._seen: int | None = None
        self._serving = "legacy"
        self._dual: DualStore | None = None
        self._write_mode = "legacy"

    def close(self) -> None:
        """Close the connections."""
        self._legacy.close()
        if self._journal is not None:
            self._journal.close()

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
            self._serving = self._journal.get("serving", "legacy")
            target = self._journal.get("target")
            self._dual = DualStore(Path(target)) if target else None
        return self._serving

    @property
    def legacy_mode(self) -> bool:
        """Whether the legacy store serves (before the cut-over, or after a rollback)."""
        return self._mode() != "dual"

    def _note_write_mode(self) -> None:
        """Called by the legacy store inside each write transaction, under its write lock."""
        self._write_mode = self._mode()

    def _dual_store(self) -> DualStore:
        assert self._dual is not None, "a run serving the dual store records its target"
        return self._dual

    def _sync(self) -> None:
        """Apply the legacy change log to the dual store, under the writer lock."""
        if self._write_mode != "dual":
            return
        with writer_lock(self.run_dir):
            if self._mode() != "dual":  # rolled back meanwhile: the legacy store has it all
                return
            assert self._journal is not None
            after = int(self._journal.get("online_applied"))
            while True:
                with self._legacy.snapshot():
                    applied = apply_changes(self._legacy, self._dual_store(), after,
                                            limit=ROUND, maintain=True)
                if applied.position == after:
                    return
                after = applied.position
                self._journal.set(online_applied=after, online_version=applied.version)

    # --- Engram's MemoryBackend API --------------------------------------------------------------

    def store(self, memory: Memory) -> None:
        """Insert or replace ``memory`` (in both stores after the cut-over)."""
        self._legacy.store(memory)
        self._sync()

    def remove(self, memory_id: str) -> bool:
        """Delete a memory; whether it existed."""
        existed = self._legacy.remove(memory_id)
        self._sync()
        return existed

    def update_activation(self, memory_id: str, activation: float) -> bool:
        """Set a memory's activation; whether it exists."""
        found = self._legacy.update_activation(memory_id, activation)
        self._sync()
        return found

    def _serve(self, dual: Callable[[DualStore], T], legacy: Callable[[], T]) -> T:
        """Read from the store that serves. A dual read that fails is retried once on the
        latest version (its version may have been cleaned up meanwhile), or served by the
        legacy store if a rollback switched back meanwhile."""
        if self._mode() != "dual":
            return legacy()
        try:
            return dual(self._dual_store())
        except Exception:
            if self._mode() != "dual":
                return legacy()
            return dual(self._dual_store())

    def retrieve(self, memory_id: str) -> Memory | None:
        """The memory with this id, or ``None``."""
        def from_dual(store: DualStore) -> Memory | None:
            rows = store.legacy_rows([memory_id])
            return batch_to_memories(rows)[0] if rows.num_rows else None

        return self._serve(from_dual, lambda: self._legacy.retrieve(memory_id))

    def contains(self, memory_id: str) -> bool:
        """Whether a memory with this id exists."""
        return self._serve(lambda store: bool(store.read([memory_id], ["episode_id"]).num_rows),
                           lambda: self._legacy.contains(memory_id))

    def count(self) -> int:
        """Number of memories."""
        return self._serve(lambda store: int(store.dataset().count_rows()), self._legacy.count)

    def all_ids(self) -> list[str]:
        """Every memory id, in id order."""
        def from_dual(store: DualStore) -> list[str]:
            ids = store.dataset().to_table(columns=["episode_id"]).column(0).to_pylist()
            return sorted(ids, key=lambda i: i.encode())

        return self._serve(from_dual, self._legacy.all_ids)

    def search(self, embedding: Sequence[float] | np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` memories most similar to ``embedding`` (cosine), best first."""
        return self._serve(
            lambda store: top_k(embedding, k, store.dataset().to_batches(
                columns=["episode_id", "embedding"])),
            lambda: self._legacy.search(embedding, k))
