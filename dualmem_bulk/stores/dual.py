"""The live DualMemoryNode store of an online migration (a Lance dataset), and the application
of the legacy store's change log to it.

ONE writer per Lance table: two processes merging into one Lance table can insert the same key
twice, so every commit to a live dual store (the migrator's, the compatibility adapters' and a
rollback's removal) happens while holding :func:`writer_lock`, an exclusive ``flock`` on
``RUN_DIR/dual.lock``. Nodes are keyed by ``episode_id`` (the legacy id), which carries a
scalar (BTREE) index so reads of many ids do not scan; a service's read of one id goes by row
offset instead (:mod:`dualmem_bulk.stores.locator`). Each commit's files are fsynced before it
is reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import lance
import pyarrow as pa

from dualmem_bulk.checksum import TableDigest, episode_checksums, identity_digest, row_checksums
from dualmem_bulk.convert import to_dual, to_legacy
from dualmem_bulk.rundir.files import DUAL_LOCK
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import JournalValues, change_number
from dualmem_bulk.schema import DUAL_SCHEMA
from dualmem_bulk.stores.locator import MEMORY_COLUMNS, RowLocator, table_to_memories
from dualmem_bulk.stores.memory_store import Memory
from dualmem_bulk.stores.staging import fsync_newer, unsliced

__all__ = [
    "DUAL_LOCK",
    "ROUND",
    "Applied",
    "ChangeFeed",
    "DualStore",
    "apply_changes",
    "apply_through",
    "minus",
    "writer_lock",
]

ROUND = 5_000
"""Change-log entries applied per round (bounds each round's memory and commit size)."""
KEY = "episode_id"
_INDEX = f"{KEY}_idx"
_CHUNK = 500
_REINDEX_AFTER = 4
"""Bring the id index up to date once this many fragments (commits) are not in it: a read or
merge by id scans every unindexed fragment (measured: 25 ms a read with 50 of them, 2 ms
after ``optimize_indices``, which itself takes ~16 ms)."""
_MAINTAIN_AFTER = 8
"""Small fragments (one per applied batch) that make :meth:`DualStore.maintain` run after the
cut-over: a read by id pays for every fragment (measured: ~10 ms with 50 of them while a writer
commits, ~3 ms with 10)."""
_SMALL_FRAGMENT = 1_024
_KEEP_VERSIONS_FOR = timedelta(seconds=10)
_MOD = 1 << 256


def minus(a: TableDigest, b: TableDigest) -> TableDigest:
    """``a`` without the rows of ``b`` (the inverse of ``+``)."""
    return TableDigest(a.rows - b.rows, (a.total - b.total) % _MOD)


@contextlib.contextmanager
def writer_lock(run_dir: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold the run's dual-store writer lock: one Lance committer at a time, across processes.
    The kernel drops it if the holder dies. Yields whether it is held (without ``blocking``,
    ``False`` when another holder has it)."""
    fd = os.open(run_dir / DUAL_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class DualStore:
    """A DualMemoryNode Lance dataset keyed by ``episode_id``; always reads its latest version."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open: lance.LanceDataset | None = None
        self._locator = RowLocator()

    def dataset(self) -> lance.LanceDataset:
        """The latest version."""
        return lance.dataset(str(self.path))

    def latest(self) -> lance.LanceDataset:
        """The latest version, from one dataset object kept between calls: its index and
        metadata caches survive, so a read by id takes ~4 ms instead of ~8 (measured)."""
        if self._open is None:
            self._open = self.dataset()
        elif self._open.latest_version != self._open.version:
            self._open.checkout_latest()  # type: ignore[no-untyped-call]
        return self._open

    def read(self, ids: Sequence[str], columns: list[str] | None = None) -> pa.Table:
        """The nodes with these legacy ids (through the scalar index)."""
        ds = self.latest()
        parts = [ds.to_table(columns=columns, filter=f"{KEY} IN ("
                             + ",".join(_literal(i) for i in ids[s:s + _CHUNK]) + ")")
                 for s in range(0, len(ids), _CHUNK)]
        if not parts:
            return DUAL_SCHEMA.empty_table().select(columns or DUAL_SCHEMA.names)
        return pa.concat_tables(parts)

    def memory(self, memory_id: str) -> Memory | None:
        """The Memory with this legacy id in the latest version, read by row offset
        (:class:`~dualmem_bulk.stores.locator.RowLocator`), or ``None``."""
        rows = self._locator.take(self.latest(), memory_id, MEMORY_COLUMNS)
        return table_to_memories(rows)[0] if rows.num_rows else None

    def contains(self, memory_id: str) -> bool:
        """Whether the latest version holds this legacy id (read by row offset)."""
        return bool(self._locator.take(self.latest(), memory_id, [KEY]).num_rows)

    def legacy_rows(self, ids: Sequence[str]) -> pa.RecordBatch:
        """The legacy Memory rows of these ids, rebuilt bit for bit (``to_legacy``)."""
        table = self.read(ids).combine_chunks()
        batches = table.to_batches()
        if not batches:
            return to_legacy(pa.RecordBatch.from_pylist([], schema=DUAL_SCHEMA))
        return to_legacy(unsliced(batches[0]))

    def _committed(self, since_ns: int) -> int:
        fsync_newer(self.path, since_ns)
        return int(self.dataset().version)

    def append(self, legacy: pa.RecordBatch) -> int:
        """Append converted rows (creating the dataset on first use); the new version."""
        since = time.time_ns()
        mode = "append" if (self.path / "_versions").is_dir() else "create"
        lance.write_dataset(unsliced(to_dual(legacy)), str(self.path), schema=DUAL_SCHEMA,
                            mode=mode)
        return self._committed(since)

    def apply(self, upserts: pa.RecordBatch, deletes: Sequence[str], *,
              maintain: bool = False) -> int:
        """Delete ``deletes`` and upsert ``upserts`` (legacy rows) by id; the new version.
        With ``maintain``, :meth:`maintain` runs too once ``_MAINTAIN_AFTER`` small fragments
        have piled up."""
        since = time.time_ns()
        ds = self.dataset()
        for s in range(0, len(deletes), _CHUNK):
            ds.delete(f"{KEY} IN (" + ",".join(_literal(i) for i in deletes[s:s + _CHUNK]) + ")")
        if upserts.num_rows:
            (ds.merge_insert(KEY).when_matched_update_all().when_not_matched_insert_all()
             .execute(unsliced(to_dual(upserts))))
            ds = self.dataset()
            if (_INDEX in {i.name for i in ds.describe_indices()} and ds.stats.index_stats(
                    _INDEX)["num_unindexed_fragments"] >= _REINDEX_AFTER):
                ds.optimize.optimize_indices()
        if maintain and sum(f.metadata.physical_rows < _SMALL_FRAGMENT
                            for f in self.dataset().get_fragments()) >= _MAINTAIN_AFTER:
            self.maintain()
        return self._committed(since)

    def apply_in_spaces(self, upserts: pa.RecordBatch, deletes: Sequence[tuple[str, str]]) -> int:
        """Like :meth:`apply`, keyed by (``space``, ``episode_id``): an Engram data root's ids
        are unique only within a memory space. The new version."""
        since = time.time_ns()
        ds = self.dataset()
        by_space: dict[str, list[str]] = {}
        for space, id_ in deletes:
            by_space.setdefault(space, []).append(id_)
        for space, ids in sorted(by_space.items()):
            for s in range(0, len(ids), _CHUNK):
                ds.delete(f"space = {_literal(space)} AND {KEY} IN ("
                          + ",".join(_literal(i) for i in ids[s:s + _CHUNK]) + ")")
        if upserts.num_rows:
            (ds.merge_insert(["space", KEY]).when_matched_update_all()
             .when_not_matched_insert_all().execute(unsliced(to_dual(upserts))))
        return self._committed(since)

    def maintain(self) -> None:
        """Merge the one-commit fragments of single writes (the copy's large fragments are left
        alone), bring the index up to date, and delete versions older than
        ``_KEEP_VERSIONS_FOR``: every write is a commit, and each commit costs more the more
        versions there are (measured: 29 ms with 26 versions, 87 ms with 812). Readers open
        the latest version per call, and the adapter retries a read whose version was just
        cleaned up (the latest version's files are never deleted)."""
        ds = self.dataset()
        ds.optimize.compact_files(target_rows_per_fragment=_SMALL_FRAGMENT)
        ds = self.dataset()
        ds.optimize.optimize_indices()
        ds.cleanup_old_versions(older_than=_KEEP_VERSIONS_FOR)

    def restore(self, version: int) -> None:
        """Make ``version`` the latest again (drops later, unrecorded commits' effect)."""
        ds = self.dataset()
        if int(ds.version) != version:
            since = time.time_ns()
            ds.checkout_version(version).restore()  # type: ignore[no-untyped-call]
            self._committed(since)

    def index(self) -> int:
        """Create (or bring up to date) the scalar index on the id; the new version."""
        since = time.time_ns()
        ds = self.dataset()
        if _INDEX in {i.name for i in ds.describe_indices()}:
            ds.optimize.optimize_indices()
        else:
            ds.create_scalar_index(KEY, "BTREE", name=_INDEX)
        return self._committed(since)

    def digests(self, batch_size: int) -> tuple[TableDigest, TableDigest, TableDigest]:
        """Digests of the checksums recomputed from every node's fields, of the stored checksum
        column, and the identity digest (recomputed row checksums with the ``space``/``episode``
        checksums, :func:`~dualmem_bulk.checksum.identity_digest`)."""
        recomputed, stored, identity = TableDigest(), TableDigest(), TableDigest()
        for fragment in self.dataset().get_fragments():
            for batch in fragment.to_batches(batch_size=batch_size):
                rows, ident = _digests(to_legacy(batch))
                recomputed += rows
                stored += TableDigest.of(batch.column("checksum"))
                identity += ident
        return recomputed, stored, identity


@dataclass
class Applied:
    """What one application of change-log entries did."""

    position: int
    """The last change-log sequence number applied."""
    upserts: int = 0
    deletes: int = 0
    version: int | None = None
    """The Lance version after the commit (``None``: nothing to commit)."""
    removed: TableDigest = field(default_factory=TableDigest)
    """Stored checksums of the target rows replaced or deleted (with ``track``)."""
    source_added: TableDigest = field(default_factory=TableDigest)
    """Checksums of the source rows written (with ``track``)."""
    target_added: TableDigest = field(default_factory=TableDigest)
    """Checksums recomputed from the target rows read back after the commit (with ``track``)."""
    removed_identity: TableDigest = field(default_factory=TableDigest)
    source_identity: TableDigest = field(default_factory=TableDigest)
    target_identity: TableDigest = field(default_factory=TableDigest)
    """The same three as identity digests (with the ``space``/``episode`` checksums)."""

    def journalled(self) -> JournalValues:
        """What a run's journal records of this round: the position it reached and the Lance
        version it made, if any."""
        values: JournalValues = {"online_applied": self.position}
        if self.version is not None:
            values["online_version"] = self.version
        return values


class ChangeFeed(Protocol):
    """Where changes come from: the legacy
    :class:`~dualmem_bulk.stores.memory_store.MemoryStore`'s change log, or a finalized
    run's :class:`~dualmem_bulk.stores.pending_store.PendingStore`."""

    def changes(self, after: int, limit: int,
                upto: int | None = None) -> tuple[list[str], int]: ...  # pragma: no cover

    def rows(self, ids: Sequence[str]) -> pa.RecordBatch: ...  # pragma: no cover


def apply_through(store: ChangeFeed, dual: DualStore, journal: Journal, position: int,
                  on_apply: Callable[[Applied], None] = lambda _: None) -> None:
    """Apply the change log from the journal's applied position up to ``position`` in rounds of
    :data:`ROUND`, journalling each round before the next (the caller holds the locks
    :func:`apply_changes` asks for)."""
    while (after := change_number(journal.values["online_applied"])) < position:
        applied = apply_changes(store, dual, after, limit=ROUND, upto=position)
        journal.set(**applied.journalled())
        on_apply(applied)


def apply_changes(store: ChangeFeed, dual: DualStore, after: int, *, limit: int,
                  upto: int | None = None, track: bool = False,
                  maintain: bool = False) -> Applied:
    """Apply the next ``limit`` change-log entries after ``after`` (up to ``upto``) to ``dual``.

    Changes of one id collapse into its current state: the row as it is now is upserted, an id
    with no row is deleted, so applying is idempotent and a deleted node never comes back. Call
    it inside ``store.snapshot()`` (or ``write_lock()``) so the log and the rows agree, and
    under :func:`writer_lock`. With ``track``, the digests of what was replaced and written are
    returned, so a verified digest can be carried forward without a rescan. ``maintain``
    (the adapters after the cut-over; never the migrator, whose resume restores recorded
    versions and whose pause must stay short) lets the store compact itself now and then.
    """
    ids, position = store.changes(after, limit, upto)
    if not ids:
        return Applied(after)
    rows = store.rows(ids)
    present = set(rows.column("id").to_pylist())
    deletes = [i for i in ids if i not in present]
    applied = Applied(position, rows.num_rows, len(deletes))
    if track:
        old = dual.read(ids, ["checksum", "space", "episode"]).combine_chunks()
        applied.removed = TableDigest.of(old.column("checksum"))
        applied.removed_identity = sum((_identity(b, b.column("checksum"))
                                        for b in old.to_batches()), TableDigest())
        applied.source_added, applied.source_identity = _digests(rows)
    applied.version = dual.apply(rows, deletes, maintain=maintain)
    if track:
        applied.target_added, applied.target_identity = _digests(dual.legacy_rows(list(present)))
    return applied


def _identity(batch: pa.RecordBatch, checksums: pa.Array) -> TableDigest:
    return identity_digest(checksums, episode_checksums(batch))


def _digests(legacy: pa.RecordBatch) -> tuple[TableDigest, TableDigest]:
    """Digest and identity digest of legacy rows, their checksums recomputed."""
    sums = row_checksums(legacy)
    return TableDigest.of(sums), _identity(legacy, sums)
