"""The live legacy store: ``MemoryStore``, a SQLite database in WAL mode with Engram's
``MemoryBackend`` API, and the ``Memory`` value it stores.

Every legacy field round-trips bit for bit: the embedding is a 3,072-byte BLOB of little-endian
float32; ``activation``, ``confidence`` and ``decay_rate`` are stored as their float32 bit
patterns (SQLite turns a NaN REAL into NULL); timestamps are int64 nanoseconds; ``access_count``
(u64) is stored as its int64 two's complement; the provenance is JSON text (``quality_score``
as float32 bits, metadata entries as an ordered list of pairs); the layout is
:mod:`.memory_rows`.

Triggers append every insert, update and delete to ``memory_changes`` in the same transaction
as the write: the change feed of an online migration (:mod:`dualmem_bulk.online.run`). WAL mode
lets readers (the migrator's scans) run while the service writes; writers wait up to the
busy timeout for the write lock, which is how the migrator's cut-over pause holds them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dualmem_bulk._sqlite import changes_after, connect, read_tx, write_tx
from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import DIM, EPISODE_TYPE, LEGACY_SCHEMA, PROVENANCE_TYPE
from dualmem_bulk.stores.memory_rows import (
    COLUMNS,
    EMBEDDING_BYTES,
    batch_of,
    embedding_bytes,
    float_bits,
    rows_of,
)
from dualmem_bulk.stores.search import top_k

__all__ = [
    "EmbeddingProvenance",
    "Memory",
    "MemoryStore",
    "batch_to_memories",
    "memories_to_batch",
    "read_range",
]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS memories (
    id TEXT PRIMARY KEY NOT NULL,
    embedding BLOB NOT NULL,            -- {EMBEDDING_BYTES} bytes: 768 little-endian float32
    activation INTEGER NOT NULL,        -- float32 bit pattern
    confidence INTEGER NOT NULL,        -- float32 bit pattern
    last_access INTEGER NOT NULL,       -- ns since the Unix epoch
    access_count INTEGER NOT NULL,      -- u64 as its int64 two's complement
    created_at INTEGER NOT NULL,        -- ns since the Unix epoch
    decay_rate INTEGER NOT NULL,        -- float32 bit pattern
    content TEXT,
    embedding_provenance TEXT           -- JSON, see the module docstring
);
CREATE TABLE IF NOT EXISTS memory_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    op TEXT NOT NULL                    -- insert, update or delete
);
CREATE TRIGGER IF NOT EXISTS memories_log_insert AFTER INSERT ON memories
BEGIN INSERT INTO memory_changes (id, op) VALUES (NEW.id, 'insert'); END;
CREATE TRIGGER IF NOT EXISTS memories_log_update AFTER UPDATE ON memories
BEGIN
    INSERT INTO memory_changes (id, op) VALUES (OLD.id, 'update');
    INSERT INTO memory_changes (id, op) SELECT NEW.id, 'update' WHERE NEW.id IS NOT OLD.id;
END;
CREATE TRIGGER IF NOT EXISTS memories_log_delete AFTER DELETE ON memories
BEGIN INSERT INTO memory_changes (id, op) VALUES (OLD.id, 'delete'); END;
"""

_UPSERT = (f"INSERT INTO memories ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT(id) DO UPDATE SET embedding = excluded.embedding, "
           "activation = excluded.activation, confidence = excluded.confidence, "
           "last_access = excluded.last_access, access_count = excluded.access_count, "
           "created_at = excluded.created_at, decay_rate = excluded.decay_rate, "
           "content = excluded.content, embedding_provenance = excluded.embedding_provenance")

_CHUNK = 500
"""Ids per ``IN (...)`` query."""


@dataclass(frozen=True, kw_only=True)
class EmbeddingProvenance:
    """Engram's ``EmbeddingProvenance``; ``created_at`` is unix seconds, ``metadata`` ordered
    (key, value) pairs."""

    model_name: str
    model_version: str
    dimension: int
    language: str | None = None
    created_at: int = 0
    quality_score: float | None = None
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Memory:
    """One legacy Engram ``Memory``.

    ``embedding`` is the raw 3,072 bytes of 768 little-endian float32 (so NaN payloads and -0.0
    survive); timestamps are int64 nanoseconds since the Unix epoch. The float32 scalars are
    Python floats: a quiet NaN keeps its payload, a signalling one comes back quiet.
    """

    id: str
    embedding: bytes
    activation: float
    confidence: float
    last_access: int
    access_count: int
    created_at: int
    decay_rate: float = 0.1
    content: str | None = None
    embedding_provenance: EmbeddingProvenance | None = None

    def __post_init__(self) -> None:
        if len(self.embedding) != EMBEDDING_BYTES:
            raise ValueError(f"memory {self.id!r}: embedding must be {EMBEDDING_BYTES} bytes "
                             f"(768 float32), got {len(self.embedding)}")

    @classmethod
    def with_vector(cls, vector: Sequence[float] | np.ndarray, **fields: Any) -> Memory:
        """A Memory whose embedding is ``vector`` as 768 little-endian float32."""
        return cls(embedding=np.asarray(vector, dtype="<f4").tobytes(), **fields)


def memories_to_batch(memories: Sequence[Memory]) -> pa.RecordBatch:
    """A LEGACY_SCHEMA batch of ``memories`` (``space`` and ``episode`` null)."""
    n = len(memories)
    emb = np.frombuffer(b"".join(m.embedding for m in memories), dtype="<f4")
    provs = [m.embedding_provenance for m in memories]
    columns = {
        "id": pa.array([m.id for m in memories], pa.utf8()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb, pa.float32()), DIM),
        "activation": pa.array([m.activation for m in memories], pa.float32()),
        "confidence": pa.array([m.confidence for m in memories], pa.float32()),
        "last_access": pa.array([m.last_access for m in memories], pa.int64()),
        "access_count": pa.array([m.access_count for m in memories], pa.uint64()),
        "created_at": pa.array([m.created_at for m in memories], pa.int64()),
        "decay_rate": pa.array([m.decay_rate for m in memories], pa.float32()),
        "content": pa.array([m.content for m in memories], pa.utf8()),
        "embedding_provenance": pa.array(
            [None if p is None else {**p.__dict__, "metadata": list(p.metadata)} for p in provs],
            PROVENANCE_TYPE),
        "space": pa.nulls(n, pa.utf8()),
        "episode": pa.nulls(n, EPISODE_TYPE),
    }
    return pa.RecordBatch.from_arrays([columns[f.name].cast(f.type) for f in LEGACY_SCHEMA],
                                      schema=LEGACY_SCHEMA)


def batch_to_memories(batch: pa.RecordBatch) -> list[Memory]:
    """The Memory of each row of a LEGACY_SCHEMA batch (``space``/``episode`` are not kept)."""
    emb = embedding_bytes(batch.column("embedding"))
    plain = batch.select([n for n in LEGACY_SCHEMA.names if n != "embedding"])
    rows = pa.table([c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c
                     for c in plain.columns], names=plain.schema.names).to_pylist()
    out = []
    for i, row in enumerate(rows):
        prov = row["embedding_provenance"]
        out.append(Memory(
            id=row["id"], embedding=emb[i * EMBEDDING_BYTES:(i + 1) * EMBEDDING_BYTES],
            activation=row["activation"], confidence=row["confidence"],
            last_access=row["last_access"], access_count=row["access_count"],
            created_at=row["created_at"], decay_rate=row["decay_rate"],
            content=row["content"],
            embedding_provenance=None if prov is None else EmbeddingProvenance(
                **{**prov, "metadata": tuple(prov["metadata"] or ())})))
    return out


def read_range(path: Path, first: int, last: int, unchanged_after: int,
               batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of the MemoryStore at ``path`` with a rowid in [``first``, ``last``], in rowid
    order, as LEGACY_SCHEMA batches of at most ``batch_rows``, leaving out every id the change
    log has an entry for after ``unchanged_after``; read through a read-only connection of its
    own in one read transaction (the service's writers are not blocked). A range scan of the
    table's b-tree: no sort, no index."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                           isolation_level=None)
    try:
        conn.execute("BEGIN DEFERRED")
        cursor = conn.execute(
            f"SELECT {COLUMNS} FROM memories WHERE rowid BETWEEN ? AND ? AND id NOT IN "
            "(SELECT id FROM memory_changes WHERE seq > ?) ORDER BY rowid",
            (first, last, unchanged_after))
        while rows := cursor.fetchmany(batch_rows):
            yield batch_of(rows, str(path))
        conn.execute("COMMIT")
    finally:
        conn.close()


class MemoryStore:
    """Engram's ``MemoryBackend`` over a SQLite file in WAL mode, with a change log.

    Safe to share between threads (one connection behind a lock) and between processes (SQLite
    locking). ``busy_timeout_ms`` is how long a write waits for the write lock; it must exceed
    an online migration's cut-over pause. ``write_guard``, if given, is called inside every
    write transaction once the write lock is held (the compatibility adapter checks there
    which store it serves).

    Example:
        >>> import tempfile
        >>> store = MemoryStore(Path(tempfile.mkdtemp()) / "memories.sqlite")
        >>> store.store(Memory(id="mem_1", embedding=bytes(3072), activation=0.5,
        ...                    confidence=0.9, last_access=1, access_count=0, created_at=1))
        >>> store.retrieve("mem_1").confidence  # the float32 nearest to 0.9
        0.8999999761581421
    """

    def __init__(self, path: Path, *, create: bool = True, busy_timeout_ms: int = 10_000,
                 write_guard: Callable[[], None] | None = None) -> None:
        if not create and not path.is_file():
            raise SourceError(path, "no such MemoryStore (SQLite file)")
        self.path = path
        self._guard = write_guard
        self._lock = threading.RLock()
        try:
            self._conn = connect(path, busy_timeout_ms)
            if create:
                self._conn.executescript(_SCHEMA)
            tables = {r[0] for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise SourceError(path, f"not a MemoryStore SQLite database ({exc})") from exc
        if not {"memories", "memory_changes"} <= tables:
            self._conn.close()
            raise SourceError(path, "not a MemoryStore: the memories and memory_changes "
                                    "tables are missing")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, write_tx(self._conn, self._guard) as conn:
            yield conn

    # --- Engram's MemoryBackend API ---------------------------------------------------------

    def store(self, memory: Memory) -> None:
        """Insert or replace ``memory`` (by id)."""
        self.store_batch(memories_to_batch([memory]))

    def retrieve(self, memory_id: str) -> Memory | None:
        """The memory with this id, or ``None``."""
        batch = self.rows([memory_id])
        return batch_to_memories(batch)[0] if batch.num_rows else None

    def remove(self, memory_id: str) -> bool:
        """Delete a memory; whether it existed."""
        with self._write() as conn:
            return conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,)).rowcount > 0

    def update_activation(self, memory_id: str, activation: float) -> bool:
        """Set a memory's activation; whether it exists."""
        bits = float_bits(pa.array([activation], pa.float32()))[0]
        with self._write() as conn:
            return conn.execute("UPDATE memories SET activation = ? WHERE id = ?",
                                (bits, memory_id)).rowcount > 0

    def count(self) -> int:
        """Number of memories."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM memories").fetchone()[0])

    def contains(self, memory_id: str) -> bool:
        """Whether a memory with this id exists."""
        with self._lock:
            return self._conn.execute("SELECT 1 FROM memories WHERE id = ?",
                                      (memory_id,)).fetchone() is not None

    def all_ids(self) -> list[str]:
        """Every memory id, in id order."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM memories ORDER BY id")]

    def search(self, embedding: Sequence[float] | np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` memories most similar to ``embedding`` (cosine), best first; an exact scan
        (NaN similarities rank last)."""
        return top_k(embedding, k, self.scan(4096))

    # --- bulk access, for migrations ------------------------------------------------------------

    def store_batch(self, batch: pa.RecordBatch) -> None:
        """Insert or replace every row of a LEGACY_SCHEMA batch, in one transaction."""
        rows = rows_of(batch)
        with self._write() as conn:
            conn.executemany(_UPSERT, rows)

    def rows(self, ids: Sequence[str]) -> pa.RecordBatch:
        """The current rows of those ids that exist, as a LEGACY_SCHEMA batch."""
        found: list[tuple[Any, ...]] = []
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start:start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                found += self._conn.execute(
                    f"SELECT {COLUMNS} FROM memories WHERE id IN ({marks})", chunk).fetchall()
        return batch_of(found, str(self.path))

    def batch_after(self, after: str | None, limit: int) -> pa.RecordBatch:
        """Up to ``limit`` rows with ids after ``after`` (``None``: from the first), in id
        order: a keyset page for a resumable scan."""
        where = "id >= ''" if after is None else "id > ?"
        args: tuple[Any, ...] = (limit,) if after is None else (after, limit)
        with self._lock:
            found = self._conn.execute(
                f"SELECT {COLUMNS} FROM memories WHERE {where} ORDER BY id LIMIT ?",
                args).fetchall()
        return batch_of(found, str(self.path))

    def rowid_bounds(self) -> tuple[int, int] | None:
        """The smallest and the largest rowid (``None`` when empty): two b-tree look-ups (one
        query with both aggregates would scan the table)."""
        with self._lock:
            first = self._conn.execute("SELECT min(rowid) FROM memories").fetchone()[0]
            last = self._conn.execute("SELECT max(rowid) FROM memories").fetchone()[0]
        return None if first is None or last is None else (int(first), int(last))

    def scan(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Every row in id order, in LEGACY_SCHEMA batches (consistent inside :meth:`snapshot`)."""
        after: str | None = None
        while True:
            batch = self.batch_after(after, batch_size)
            if batch.num_rows == 0:
                return
            yield batch
            after = batch.column("id")[-1].as_py()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees one state; writers are not blocked."""
        with self._lock, read_tx(self._conn, "memory_changes"):
            yield

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the write lock (``BEGIN IMMEDIATE``): every other writer waits, readers don't;
        nothing is written. Used for the cut-over pause."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                self._conn.execute("ROLLBACK")

    def change_position(self) -> int:
        """The sequence number of the last logged change (0 if none)."""
        with self._lock:
            row = self._conn.execute("SELECT max(seq) FROM memory_changes").fetchone()
            return int(row[0] or 0)

    def changes(self, after: int, limit: int, upto: int | None = None) -> tuple[list[str], int]:
        """Ids changed in the next ``limit`` log entries after ``after`` (up to ``upto``), each
        once, and the sequence number of the last entry read (``after`` if none)."""
        with self._lock:
            return changes_after(self._conn, "memory_changes", after, limit, upto)

    def trim_changes(self, upto: int) -> None:
        """Drop the change-log entries up to ``upto`` (applied and checkpointed)."""
        with self._lock:
            self._conn.execute("DELETE FROM memory_changes WHERE seq <= ?", (upto,))
