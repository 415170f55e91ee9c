"""The write-ahead store of a finalized online run: ``RUN_DIR/pending.sqlite``, where the
compatibility adapter acknowledges a write once it is durable, until an applier has written it
to the Lance store (which alone holds the memories now).

One SQLite table in WAL mode with ``synchronous=FULL``: each write appends the memory's whole
row (the legacy store's encoding, bit for bit) or a tombstone, under an increasing ``seq``. It
offers the change-feed calls the applier and the read overlay use on the legacy store
(:mod:`dualmem_bulk.stores.pending`): ``changes``, ``rows``, ``retrieve``, ``contains``,
``snapshot``, ``change_position``. An id's state is its last entry; entries up to the
journalled applied position are trimmed after each batch.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from dualmem_bulk._sqlite import changes_after, connect, read_tx, write_tx
from dualmem_bulk.rundir.files import PENDING
from dualmem_bulk.stores.memory_rows import COLUMNS, batch_of, float_bits, rows_of
from dualmem_bulk.stores.memory_store import Memory, batch_to_memories, memories_to_batch

__all__ = ["PENDING", "PendingStore"]


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deleted INTEGER NOT NULL,           -- 1: a tombstone (the memory was removed)
    {COLUMNS.replace("id,", "id TEXT NOT NULL,")}
);
CREATE INDEX IF NOT EXISTS pending_id ON pending (id, seq);
"""
_LAST = (f"SELECT deleted, {COLUMNS} FROM pending WHERE seq = "
         "(SELECT max(seq) FROM pending WHERE id = ?)")
_INSERT = (f"INSERT INTO pending (deleted, {COLUMNS}) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_CHUNK = 500

Fallback = Callable[[str], Memory | None]
"""Where an id without an entry lives: the Lance store, read inside the write transaction."""


class PendingStore:
    """The write-ahead store of a finalized online run (see the module docstring)."""

    def __init__(self, run_dir: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = run_dir / PENDING
        self._lock = threading.RLock()
        self._conn = connect(self.path, busy_timeout_ms)
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, write_tx(self._conn) as conn:
            yield conn

    def _last(self, memory_id: str, fallback: Fallback) -> Memory | None:
        row = self._conn.execute(_LAST, (memory_id,)).fetchone()
        if row is None:
            return fallback(memory_id)
        if row[0]:
            return None
        return batch_to_memories(batch_of([row[1:]], str(self.path)))[0]

    # --- writes ----------------------------------------------------------------------------------

    def store(self, memory: Memory) -> None:
        """Append ``memory``'s row (insert or replace)."""
        with self._write() as conn:
            conn.execute(_INSERT, (0, *rows_of(memories_to_batch([memory]))[0]))

    def remove(self, memory_id: str, fallback: Fallback) -> bool:
        """Append a tombstone if the memory exists; whether it existed."""
        with self._write() as conn:
            existed = self._last(memory_id, fallback) is not None
            if existed:
                conn.execute(_INSERT, (1, memory_id, *[None] * 9))
            return existed

    def update_activation(self, memory_id: str, activation: float, fallback: Fallback) -> bool:
        """Append the memory with its activation set; whether it exists."""
        with self._write() as conn:
            current = self._last(memory_id, fallback)
            if current is not None:
                row: list[Any] = list(rows_of(memories_to_batch([current]))[0])
                row[2] = float_bits(pa.array([activation], pa.float32()))[0]
                conn.execute(_INSERT, (0, *row))
            return current is not None

    # --- the change feed -------------------------------------------------------------------------

    def retrieve(self, memory_id: str) -> Memory | None:
        """The memory as its last entry has it (``None``: removed, or no entry)."""
        with self._lock:
            return self._last(memory_id, lambda _: None)

    def contains(self, memory_id: str) -> bool:
        """Whether the last entry of ``memory_id`` holds a memory."""
        return self.retrieve(memory_id) is not None

    def rows(self, ids: Sequence[str]) -> pa.RecordBatch:
        """The last rows of those ids whose last entry is not a tombstone (LEGACY_SCHEMA)."""
        found: list[tuple[Any, ...]] = []
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start:start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                found += [r[1:] for r in self._conn.execute(
                    f"SELECT deleted, {COLUMNS} FROM pending WHERE seq IN (SELECT max(seq) "
                    f"FROM pending WHERE id IN ({marks}) GROUP BY id)", chunk) if not r[0]]
        return batch_of(found, str(self.path))

    def changes(self, after: int, limit: int, upto: int | None = None) -> tuple[list[str], int]:
        """Ids of the next ``limit`` entries after ``after`` (up to ``upto``), each once, and the
        last entry's ``seq`` (``after`` if none)."""
        with self._lock:
            return changes_after(self._conn, "pending", after, limit, upto)

    def change_position(self) -> int:
        """The ``seq`` of the last entry ever appended (0 if none)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'pending'").fetchone()
            return int(row[0]) if row else 0

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees one state; writers are not blocked."""
        with self._lock, read_tx(self._conn, "pending"):
            yield

    def trim(self, upto: int) -> None:
        """Drop the entries up to ``upto`` (applied to the Lance store and journalled)."""
        with self._write() as conn:
            conn.execute("DELETE FROM pending WHERE seq <= ?", (upto,))
