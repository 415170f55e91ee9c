"""SQLite plumbing shared by the stores kept in WAL-mode files: the legacy
:class:`~dualmem_bulk.stores.memory_store.MemoryStore`, a finalized online run's
:class:`~dualmem_bulk.stores.pending_store.PendingStore` and the run's journal (its
transactions)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["changes_after", "connect", "read_tx", "write_tx"]

_ALL = 1 << 62


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode (readers never block the writer) with
    ``synchronous=FULL`` (a committed write survives a power loss), transactions explicit, usable
    from any thread (its owner serializes the calls with a lock)."""
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


@contextlib.contextmanager
def write_tx(conn: sqlite3.Connection,
             guard: Callable[[], None] | None = None) -> Iterator[sqlite3.Connection]:
    """A write transaction (``BEGIN IMMEDIATE``: the write lock is taken first), committed at
    the end, rolled back on any exception; ``guard`` is called once the lock is held."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if guard is not None:
            guard()
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def read_tx(conn: sqlite3.Connection, table: str) -> Iterator[None]:
    """A read transaction: every read inside sees one state (started by a read of ``table``);
    writers are not blocked."""
    conn.execute("BEGIN DEFERRED")
    try:
        conn.execute(f"SELECT count(*) FROM {table} WHERE seq < 0")
        yield
    finally:
        conn.execute("COMMIT")


def changes_after(conn: sqlite3.Connection, table: str, after: int, limit: int,
                  upto: int | None) -> tuple[list[str], int]:
    """Ids of the next ``limit`` entries of a change table (``seq``, ``id``) after ``after``
    (up to ``upto``), each once, and the last entry's ``seq`` (``after`` if none)."""
    rows = conn.execute(f"SELECT seq, id FROM {table} WHERE seq > ? AND seq <= ? "
                        "ORDER BY seq LIMIT ?",
                        (after, _ALL if upto is None else upto, limit)).fetchall()
    if not rows:
        return [], after
    return list(dict.fromkeys(r[1] for r in rows)), int(rows[-1][0])
