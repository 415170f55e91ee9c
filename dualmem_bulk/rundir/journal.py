"""The run's durable state: a SQLite journal in WAL mode, and the lock that keeps one migrator
per run directory.

Every state change and every committed batch is one SQLite transaction with
``synchronous=FULL``: once :meth:`Journal.record_batch` returns, the checkpoint survives a crash
or a power loss, and only then is it reported (progress, status). Readers (``status``) never
block the migrator: WAL mode lets them read while it writes.

States::

    planned -> exporting -> converting -> verifying -> done -> finalized
                  any of these -> failed (resumable)       \\-> rolling-back -> rolled-back
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack, cast

from dualmem_bulk._signals import StopRequest, stop_on_signals
from dualmem_bulk._sqlite import write_tx
from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.errors import InputError, RunLocked, SourceError, TargetExists, UsageError
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.files import JOURNAL, LOCK
from dualmem_bulk.rundir.keys import DEFAULTS, RANGE_KEY, JournalValues, Mode, RangeRecord, State

__all__ = ["JOURNAL", "BatchRecord", "Journal", "JournalValues", "Mode", "RunLock", "State",
           "lock_holder", "migrating"]

_DEFAULTS: Mapping[str, object] = DEFAULTS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    unit INTEGER PRIMARY KEY,      -- commit unit, 0-based
    first_group INTEGER NOT NULL,  -- snapshot row groups [first_group, end_group)
    end_group INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    digest TEXT NOT NULL,          -- table digest of the unit's checksums
    version INTEGER,               -- Lance version after the commit (Lance targets)
    part TEXT,                     -- part file name (Parquet targets)
    seconds REAL NOT NULL,
    committed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (at REAL NOT NULL, state TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS exported (
    unit INTEGER PRIMARY KEY,      -- source partition = commit unit (a row of batches)
    stats TEXT NOT NULL            -- JSON: rows read, quarantined, reasons, snapshot part
);
"""


@dataclass(frozen=True)
class BatchRecord:
    """One committed unit of the conversion."""

    unit: int
    first_group: int
    end_group: int
    rows: int
    digest: str
    version: int | None
    part: str | None
    seconds: float
    committed_at: float


class Journal:
    """The run directory's journal; open it with :meth:`open` (``create=True`` to start one)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        """Whether ``run_dir`` holds a journal."""
        return (run_dir / JOURNAL).is_file()

    @classmethod
    def open(cls, run_dir: Path, create: bool = False) -> Journal:
        """Open the journal of ``run_dir``; :class:`SourceError` if there is none and not
        ``create``."""
        path = run_dir / JOURNAL
        if not create and not path.is_file():
            raise SourceError(run_dir, "not a run directory (no journal.sqlite)")
        if not create and path.stat().st_size == 0 and not _being_created(run_dir):
            raise SourceError(path, "the journal is empty (truncated); the run's state is lost")
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            if not create:  # a damaged journal is refused before anything acts on it
                check = conn.execute("PRAGMA quick_check").fetchone()
                if check is None or check[0] != "ok":
                    raise sqlite3.DatabaseError(check[0] if check else "no answer")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)  # idempotent; a reader may open a journal being created
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise SourceError(path, f"the journal is damaged ({exc}); the run's state cannot "
                                    "be read") from exc
        return cls(conn, path)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return write_tx(self._conn)

    @property
    def values(self) -> JournalValues:
        """The ``meta`` table, read a key at a time: ``journal.values["phase"]`` is the stored
        value, or the key's default (:data:`~dualmem_bulk.rundir.keys.DEFAULTS`) before it is
        written. Typed as :class:`~dualmem_bulk.rundir.keys.JournalValues` so that mypy checks
        each key and its type; only reading by key is supported (write with :meth:`set`)."""
        return cast(JournalValues, _Meta(self._conn))

    def set(self, *, copied_range: RangeRecord | None = None,
            **values: Unpack[JournalValues]) -> None:
        """Store JSON values (and an online copy's committed range), in one durable
        transaction."""
        with self._tx() as tx:
            _write(tx, values, copied_range)

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the journal: a cheap
        way for a long-lived reader (the compatibility adapter) to notice a switch."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @property
    def mode(self) -> Mode:
        """The run's mode (what :mod:`dualmem_bulk.run.modes` dispatches on)."""
        return self.values["mode"]

    @property
    def config(self) -> dict[str, Any]:
        """The run's configuration as recorded when it started (empty before)."""
        return self.values["config"]

    @property
    def target(self) -> Path:
        """The run's target, resolved when the run started."""
        target = self.values["target"]
        if target is None:
            raise SourceError(self.path, "the journal records no target")
        return Path(target)

    @property
    def state(self) -> State:
        """The run's state."""
        return self.values["state"]

    def set_state(self, state: State, detail: str = "", /,
                  **values: Unpack[JournalValues]) -> None:
        """Move to ``state`` (with extra values), logging an event, in one transaction."""
        with self._tx() as tx:
            _write(tx, {"state": state, **values}, None)
            tx.execute("INSERT INTO events (at, state, detail) VALUES (?, ?, ?)",
                       (time.time(), state, detail))

    def record_batch(self, record: BatchRecord) -> None:
        """Make one committed unit durable (the checkpoint)."""
        with self._tx() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.unit, record.first_group, record.end_group, record.rows, record.digest,
                 record.version, record.part, record.seconds, record.committed_at),
            )

    def record_partition(self, record: BatchRecord, stats: dict[str, Any]) -> None:
        """Make one exported and committed partition durable (the checkpoint): its unit and
        what its export found, in one transaction."""
        with self._tx() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.unit, record.first_group, record.end_group, record.rows, record.digest,
                 record.version, record.part, record.seconds, record.committed_at),
            )
            tx.execute("INSERT OR REPLACE INTO exported (unit, stats) VALUES (?, ?)",
                       (record.unit, json.dumps(stats, sort_keys=True)))

    def exported(self) -> list[dict[str, Any]]:
        """What each recorded partition's export found, in partition order."""
        rows = self._conn.execute("SELECT stats FROM exported ORDER BY unit").fetchall()
        return [json.loads(row[0]) for row in rows]

    def batches(self) -> list[BatchRecord]:
        """Every committed unit, in order."""
        rows = self._conn.execute("SELECT * FROM batches ORDER BY unit").fetchall()
        return [BatchRecord(*row) for row in rows]

    def committed(self) -> TableDigest:
        """Digest of every committed unit, merged."""
        total = TableDigest()
        for record in self.batches():
            total += TableDigest.from_hex(record.rows, record.digest)
        return total

    def events(self) -> list[tuple[float, str, str]]:
        """The state changes, oldest first."""
        rows = self._conn.execute("SELECT at, state, detail FROM events ORDER BY rowid")
        return [(float(a), str(s), str(d or "")) for a, s, d in rows.fetchall()]


class _Meta:
    """The ``meta`` table by key (what :attr:`Journal.values` returns)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __getitem__(self, key: str) -> Any:
        _declared(key)
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else copy.deepcopy(_DEFAULTS[key])


def _declared(key: str) -> None:
    """Refuse a key :class:`~dualmem_bulk.rundir.keys.JournalValues` does not declare."""
    if key not in _DEFAULTS:
        raise KeyError(f"{key!r} is not a journal key (dualmem_bulk/rundir/keys.py)")


def _write(tx: sqlite3.Connection, values: Mapping[str, object],
           copied_range: RangeRecord | None) -> None:
    """Store ``values`` (and ``copied_range`` under its own key) as sorted JSON in ``tx``."""
    for key in values:
        _declared(key)
    rows = [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()]
    if copied_range is not None:
        rows.append((RANGE_KEY.format(copied_range["unit"]),
                     json.dumps(copied_range, sort_keys=True)))
    tx.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run's lock now (pid, host, started), or ``None`` if nobody does."""
    path = run_dir / LOCK
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return _read_holder(path) or {"pid": None, "host": None, "started": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _being_created(run_dir: Path) -> bool:
    """Whether another process holds the run's lock: an empty journal is then one it is
    creating, not one that was truncated."""
    holder = lock_holder(run_dir)
    return holder is not None and holder.get("pid") != os.getpid()


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_REFUSALS = (InputError, TargetExists, UsageError)
"""Errors that refuse a run before it changes anything."""


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/lock``: one migrator per run directory.

    The kernel drops a ``flock`` when its holder dies, so a lock left by a dead process is
    free; the holder details it left behind are reported in :attr:`took_over`.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.took_over: str | None = None
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        path = self.run_dir / LOCK
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileExistsError as exc:
            raise UsageError(f"{self.run_dir}: the run directory is a file, not a directory; "
                             "pass another run_dir", "run_dir") from exc
        except OSError as exc:
            raise UsageError(f"{exc.filename or self.run_dir}: cannot create the run "
                             f"directory: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise RunLocked(self.run_dir, _read_holder(path)) from exc
        previous = _read_holder(path)
        if previous and previous.get("pid"):
            state = "dead" if previous.get("host") == socket.gethostname() and not _alive(
                int(previous["pid"])) else "gone"
            self.took_over = (f"took over the lock of a {state} migrator (pid {previous['pid']} "
                              f"on {previous.get('host')}, started {previous.get('started')})")
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if self._fd is not None:
            if self._created and kind is not None and issubclass(kind, _REFUSALS):
                (self.run_dir / LOCK).unlink()  # a refused run leaves no lock file behind
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def migrating(run_dir: Path, progress: Progress) -> Iterator[StopRequest]:
    """One migrator invocation: hold the run's lock (saying so when a dead migrator's lock is
    taken over) and turn SIGINT/SIGTERM into a stop request checked between commits."""
    with RunLock(run_dir) as lock, stop_on_signals() as stop:
        if lock.took_over:
            progress.message(lock.took_over)
        yield stop
