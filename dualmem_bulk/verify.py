"""Prove a run's target holds exactly the snapshot's nodes, every field unchanged.

What is re-read and why that suffices: every target row is read in full; its legacy fields are
re-encoded and hashed and compared with the row's stored checksum (catches any changed carried
field), its derived fields are checked against the conversion rules (UUID from the id,
``strength`` = ``activation`` bit for bit, ``consolidation_score`` = 0.0, Episode type, Concept
fields null); the snapshot's ``space``, ``id``, ``checksum`` and ``episode`` columns are compared
with the target's row at the same position (the join of all keys runs only when they do not line
up, to name what is missing, extra, duplicated or different); and the three table digests
(recorded at export, stored in the target, recomputed from its fields) must be equal.

The target is checked piece by piece (Lance fragment, Parquet part file), each piece against the
snapshot rows from the position it should start at, so pieces are independent tasks for worker
processes. A conversion verifies each partition in the task that wrote it, reading its data
files and its snapshot part back from disk before the driver commits them; the run's
verification then re-reads only the pieces whose committed files are not the ones verified
(none, unless something went wrong).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk._pool import WorkerPool
from dualmem_bulk._threads import prefetched
from dualmem_bulk.checksum import TableDigest, episode_checksums, row_checksums
from dualmem_bulk.convert import node_uuids, to_legacy
from dualmem_bulk.engines import TaskPool
from dualmem_bulk.errors import SourceError, UsageError
from dualmem_bulk.journal import Journal
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.schema import SNAPSHOT_SCHEMA
from dualmem_bulk.stores import TargetStore
from dualmem_bulk.stores.snapshot import SNAPSHOT, Snapshot

if TYPE_CHECKING:
    import polars as pl

    from dualmem_bulk.online_cutover import Pinned
    from dualmem_bulk.online_wal import WalPinned

__all__ = ["SNAPSHOT_KEYS", "PieceTask", "PieceVerdict", "Problem", "VerifyReport",
           "keyed_problems", "snapshot_keys", "verify_batches", "verify_piece", "verify_run"]

_SNAP_SCHEMA = pa.schema([SNAPSHOT_SCHEMA.field(n) for n in ("space", "id", "checksum", "episode")])
MAX_LISTED = 20
_READ_BATCH = 4096
"""Rows per batch when re-reading the target: the Lance reader's buffers grow with the batch;
at 4,096 rows verifying 200K nodes peaks at 934 MiB RSS, at 16,384 rows at 1,328 MiB."""
_CONCEPT_FIELDS = ("centroid", "coherence", "instance_count", "formation_time")


@dataclass
class VerifyReport:
    """The verdict: ``ok`` only if every check passed; the first differing ids are listed."""

    ok: bool
    run_dir: str
    target: str
    snapshot_rows: int = 0
    target_rows: int = 0
    recorded_digest: str = ""
    snapshot_digest: str = ""
    target_digest: str = ""
    recomputed_digest: str = ""
    mismatched: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    read_back: int = 0
    """Target rows this verification read back and compared row by row (pieces the conversion
    already verified from disk are not read again)."""
    elapsed_s: float = 0.0
    not_checked: list[str] = field(default_factory=list)
    """What could not be checked (a dropped snapshot); empty when everything was."""

    def summary(self) -> str:
        """One line for an operator."""
        if self.ok and self.not_checked:
            return (f"verified what remains: {self.target_rows} nodes, every checksum and the "
                    "digest recorded at export match; the snapshot was dropped, so some checks "
                    "were not possible")
        if self.ok:
            return f"verified: {self.target_rows} nodes identical to the snapshot"
        ids = ", ".join(repr(m["id"]) for m in self.mismatches[:5])
        return (f"verification failed: {self.mismatched} node(s) differ "
                f"(snapshot {self.snapshot_rows} rows, target {self.target_rows}); first: {ids}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _bits(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.fill_null(np.nan).to_numpy(zero_copy_only=False)).view(np.uint32)


def _structural(batch: pa.RecordBatch) -> list[tuple[int, str]]:
    """Rows that break a conversion rule, with the rule (vectorized, Python only per failure)."""
    problems: list[tuple[int, str]] = []
    kinds = batch.column("node_type").cast(pa.utf8())
    not_episode = np.asarray(pc.not_equal(kinds, "Episode").fill_null(True))
    problems += [(int(i), f"node_type is {kinds[int(i)]}") for i in np.flatnonzero(not_episode)]
    episodes = ~not_episode
    ids = batch.column("episode_id")
    expected = node_uuids(ids.fill_null(""))
    bad_uuid = ~np.asarray(pc.equal(batch.column("id"), expected).fill_null(False))
    problems += [(int(i), "id is not the node UUID of episode_id")
                 for i in np.flatnonzero(bad_uuid & episodes)]
    strength = _bits(batch.column("strength")) != _bits(batch.column("activation"))
    problems += [(int(i), "strength differs from activation")
                 for i in np.flatnonzero(strength & episodes)]
    zero = _bits(batch.column("consolidation_score")) != 0
    problems += [(int(i), "consolidation_score is not 0.0")
                 for i in np.flatnonzero(zero & episodes)]
    for name in _CONCEPT_FIELDS:
        filled = np.asarray(batch.column(name).is_valid())
        problems += [(int(i), f"{name} is set on an Episode")
                     for i in np.flatnonzero(filled & episodes)]
    return problems


def _checksum_problems(batch: pa.RecordBatch) -> tuple[list[tuple[int, str]], TableDigest]:
    kinds = batch.column("node_type").cast(pa.utf8())
    episodes = pc.equal(kinds, "Episode").fill_null(False)
    sub = batch if pc.all(episodes).as_py() else batch.filter(episodes)
    recomputed = row_checksums(to_legacy(sub))
    same = np.asarray(pc.equal(recomputed, sub.column("checksum")).fill_null(False))
    where = np.flatnonzero(np.asarray(episodes))
    return ([(int(where[i]), "fields differ from the stored checksum")
             for i in np.flatnonzero(~same)], TableDigest.of(recomputed))


Problem = tuple[str, str, str]
"""(space, id, what is wrong); space is "" for sources without spaces."""


def _row_problems(batch: pa.RecordBatch) -> tuple[list[Problem], TableDigest]:
    """The target rows that differ from their stored checksum or break a conversion rule, and
    the digest of the checksums recomputed from their fields."""
    rows, digest = _checksum_problems(batch)
    rows += _structural(batch)
    ids, spaces = batch.column("episode_id"), batch.column("space")
    return [(spaces[i].as_py() or "", str(ids[i].as_py()), why)
            for i, why in sorted(set(rows))], digest


def keyed_problems(source: Iterator[pa.RecordBatch],
                   target: Iterator[pa.RecordBatch]) -> list[Problem]:
    """Name the nodes behind a failed comparison of digests: target rows (DualMemoryNode) that
    differ from their stored checksum or break a conversion rule, then the (space, id) keys
    missing, extra, duplicated or different (row or ``space``/``episode`` checksum) against the
    ``source`` rows (legacy schema with a ``checksum`` column)."""
    src, tgt = _Keys(), _Keys()
    problems: list[Problem] = []
    for batch in source:
        src.add(batch, "id")
    for batch in target:
        problems += _row_problems(batch)[0]
        tgt.add(batch, "episode_id")
    return problems + _join_problems(src.frame("s"), tgt.frame("t"))


_KEY = ["space", "id"]


def _join_problems(snapshot: pl.DataFrame, target: pl.DataFrame) -> list[Problem]:
    import polars as pl  # here, not at the top: a run's driver never needs Polars (26 MiB)

    problems: list[Problem] = []
    dup = target.filter(pl.struct(_KEY).is_duplicated()).unique(_KEY).sort(_KEY)
    problems += [(sp, i, "appears more than once in the target")
                 for sp, i in dup.select(_KEY).iter_rows()]
    joined = snapshot.unique(_KEY).join(target.unique(_KEY), on=_KEY, how="full", coalesce=True)
    for row in joined.filter(
        pl.col("t").is_null() | pl.col("s").is_null() | (pl.col("s") != pl.col("t"))
        | (pl.col("es") != pl.col("et"))
    ).sort(_KEY).iter_rows(named=True):
        if row["t"] is None:
            why = "missing from the target"
        elif row["s"] is None:
            why = "in the target but not in the snapshot"
        elif row["s"] != row["t"]:
            why = "checksum differs from the snapshot's"
        else:
            why = "episode fields differ from the snapshot's"
        problems.append((row["space"], row["id"], why))
    return problems


class _Keys:
    """(space, id, row checksum, episode checksum) gathered batch by batch, for the join."""

    def __init__(self) -> None:
        self.spaces: list[pa.Array] = []
        self.ids: list[pa.Array] = []
        self.sums: list[pa.Array] = []
        self.extras: list[pa.Array] = []

    def add(self, batch: pa.RecordBatch, id_column: str) -> None:
        """Keep copies: a slice of a batch read by Lance keeps the whole batch's memory alive."""
        every = pa.array(np.arange(batch.num_rows))
        self.spaces.append(batch.column("space").cast(pa.large_utf8()).take(every))
        self.ids.append(batch.column(id_column).cast(pa.large_utf8()).take(every))
        self.sums.append(batch.column("checksum").cast(pa.large_binary()).take(every))
        self.extras.append(episode_checksums(batch).cast(pa.large_binary()))

    def frame(self, name: str) -> pl.DataFrame:
        import polars as pl

        schema = {"space": pl.String, "id": pl.String, name: pl.Binary, "e" + name: pl.Binary}
        if not self.ids:
            return pl.DataFrame(schema=schema)
        table = pa.table({
            "space": pa.chunked_array(self.spaces, pa.large_utf8()),
            "id": pa.chunked_array(self.ids, pa.large_utf8()),
            name: pa.chunked_array(self.sums, pa.large_binary()),
            "e" + name: pa.chunked_array(self.extras, pa.large_binary()),
        })
        out = pl.from_arrow(table)
        assert isinstance(out, pl.DataFrame)
        return out.with_columns(pl.col("space").fill_null(""))


SNAPSHOT_KEYS = ["space", "id", "checksum", "episode"]
"""The snapshot columns each target row is compared with."""
_SNAP_COLUMNS = SNAPSHOT_KEYS


class _InOrder:
    """The snapshot's rows, handed out in the order the target was written from them."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches, self._pending = batches, pa.Table.from_batches([], _SNAP_SCHEMA)

    def take(self, n: int) -> pa.Table | None:
        """The next ``n`` rows, or ``None`` if the snapshot has fewer left."""
        while self._pending.num_rows < n:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._pending = pa.concat_tables([self._pending, pa.Table.from_batches([batch])])
        rows, self._pending = self._pending.slice(0, n), self._pending.slice(n)
        return rows


def _same_rows(expected: pa.Table | None, batch: pa.RecordBatch, episodes: pa.Array) -> bool:
    """Whether the target rows are the snapshot rows at the same positions, all columns that
    the join would compare (space, id, row checksum, episode checksum) being equal."""
    if expected is None:
        return False
    snap = expected.combine_chunks().to_batches()[0] if expected.num_rows else None
    if snap is None:
        return bool(batch.num_rows == 0)
    pairs = [
        (snap.column("space").fill_null(""), batch.column("space").fill_null("")),
        (snap.column("id"), batch.column("episode_id")),
        (snap.column("checksum"), batch.column("checksum")),
        (episode_checksums(snap), episodes),
    ]
    return all(pc.all(pc.equal(a.cast(b.type), b)).as_py() is True for a, b in pairs)


def _keys(snapshot: Path, target: TargetStore, batch_size: int
          ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Both sides' join keys; only needed when the target is not the snapshot row for row."""
    snap, tgt = _Keys(), _Keys()
    for batch in Snapshot(snapshot).batches(batch_size, _SNAP_COLUMNS):
        snap.add(batch, "id")
    for batch in target.batches(min(batch_size, _READ_BATCH)):
        tgt.add(batch, "episode_id")
    return snap.frame("s"), tgt.frame("t")


def snapshot_keys(snapshot: Path, start: int, batch_size: int) -> Iterator[pa.RecordBatch]:
    """The snapshot's :data:`SNAPSHOT_KEYS` columns from row ``start`` on."""
    yield from Snapshot(snapshot).batches(batch_size, _SNAP_COLUMNS, start)


@dataclass(frozen=True)
class PieceTask:
    """One piece of the target (Lance fragment, Parquet part) to verify, for a worker."""

    target: Path
    piece: int
    snapshot: Path
    start: int
    """The snapshot row the piece's first row was written from, if nothing was lost."""
    batch_size: int

    @property
    def needs(self) -> tuple[Path, ...]:
        """What a worker must see: the snapshot and the target."""
        return (self.snapshot, self.target)


@dataclass
class PieceVerdict:
    """What one piece showed: rows breaking a rule, its digests, whether it lines up with the
    snapshot at ``start``."""

    rows: int
    problems: list[Problem]
    stored: TableDigest
    recomputed: TableDigest
    aligned: bool
    files: tuple[str, ...] = ()
    """The data files read (when verified before the commit, to match against the store)."""


def verify_piece(task: PieceTask) -> PieceVerdict:
    """Re-read one piece in full: checksums recomputed from its fields, conversion rules, and
    the snapshot's rows at the same positions."""
    target = TargetStore(task.target)
    return verify_batches(target.piece_batches(task.piece, min(task.batch_size, _READ_BATCH)),
                          snapshot_keys(task.snapshot, task.start, task.batch_size))


def verify_batches(batches: Iterator[pa.RecordBatch], expected_keys: Iterator[pa.RecordBatch],
                   files: tuple[str, ...] = ()) -> PieceVerdict:
    """Check target rows read back from disk against the snapshot rows they were written from
    (:data:`SNAPSHOT_KEYS` columns, in order; see :func:`verify_piece`). ``files`` names what
    was read."""
    expected = _InOrder(expected_keys)
    verdict = PieceVerdict(0, [], TableDigest(), TableDigest(), True, files)
    for batch in prefetched(batches):
        problems, digest = _row_problems(batch)
        verdict.problems += problems
        verdict.recomputed += digest
        verdict.stored += TableDigest.of(batch.column("checksum"))
        episodes = episode_checksums(batch)
        verdict.aligned = verdict.aligned and _same_rows(expected.take(batch.num_rows), batch,
                                                         episodes)
        verdict.rows += batch.num_rows
    return verdict


def _snapshot_digest(snapshot: Path, batch_size: int) -> TableDigest:
    """The snapshot's checksum digest."""
    digest = TableDigest()
    for batch in Snapshot(snapshot).batches(batch_size, ["checksum"]):
        digest += TableDigest.of(batch.column("checksum"))
    return digest


def verify_run(run_dir: Path, progress: Progress = NULL_PROGRESS,
               batch_size: int = 16_384, pool: TaskPool | None = None,
               checked: Iterable[PieceVerdict] = ()) -> VerifyReport:
    """Verify a run directory's target against its snapshot; see the module docstring.

    The target's pieces are checked by ``pool``'s workers (default: in this process), except
    those whose committed files are the ones a conversion verified (``checked``)."""
    started = time.perf_counter()
    journal = Journal.open(run_dir)
    try:
        if journal.get("mode") == "online":
            return _verify_online(run_dir, journal, progress, started)
        target_path, snapshot = journal.get("target"), journal.get("snapshot")
    finally:
        journal.close()
    if snapshot is None:
        raise SourceError(run_dir, "the run has not finished its export yet; nothing to verify")
    if not (run_dir / SNAPSHOT).exists():  # dropped at finalize
        from dualmem_bulk.verify_dropped import verify_without_snapshot

        with contextlib.ExitStack() as stack:
            alone = pool or stack.enter_context(WorkerPool(0))
            return verify_without_snapshot(run_dir, progress, batch_size, alone, started)
    target = TargetStore(Path(target_path))
    report = VerifyReport(ok=False, run_dir=str(run_dir), target=target_path,
                          recorded_digest=snapshot["digest"])

    snapshot_file = run_dir / SNAPSHOT
    pieces = target.pieces()
    progress.phase("verify", sum(pieces))
    starts = np.concatenate([[0], np.cumsum(pieces)[:-1]]).astype(int).tolist() if pieces else []
    by_files = {verdict.files: verdict for verdict in checked}
    verified = {i: by_files[files] for i in range(len(pieces))
                if (files := target.piece_files(i)) in by_files}
    tasks = [PieceTask(target.path.resolve(), i, snapshot_file.resolve(), start, batch_size)
             for i, start in enumerate(starts) if i not in verified]
    problems: list[Problem] = []
    stored, recomputed = TableDigest(), TableDigest()
    aligned = True
    with contextlib.ExitStack() as stack:
        workers: TaskPool = pool or stack.enter_context(WorkerPool(0))
        def fresh() -> Iterator[PieceVerdict]:
            for _task, verdict in workers.ordered(verify_piece, tasks):
                report.read_back += verdict.rows
                yield verdict

        verdicts = itertools.chain(
            (verified[i] for i in range(len(pieces)) if i in verified), fresh())
        for verdict in verdicts:
            problems += verdict.problems
            stored += verdict.stored
            recomputed += verdict.recomputed
            aligned = aligned and verdict.aligned
            progress.advance(verdict.rows)
    snap_digest = _snapshot_digest(snapshot_file, batch_size)
    if not (aligned and snap_digest.rows == stored.rows):
        problems += _join_problems(*_keys(snapshot_file, target, batch_size))
    report.snapshot_rows, report.target_rows = snap_digest.rows, stored.rows
    report.snapshot_digest, report.target_digest = snap_digest.hex, stored.hex
    report.recomputed_digest = recomputed.hex
    digests = {report.recorded_digest, report.snapshot_digest, report.target_digest,
               report.recomputed_digest}
    if len(digests) != 1 and not problems:
        problems.append(("", "", "table digests differ"))
    report.mismatched = len({(sp, i) for sp, i, _ in problems})
    report.mismatches = [{"id": i, "problem": p, **({"space": sp} if sp else {})}
                         for sp, i, p in problems[:MAX_LISTED]]
    report.ok = not problems and snap_digest.rows == stored.rows
    report.elapsed_s = round(time.perf_counter() - started, 3)
    progress.done()
    return report


def _verify_online(run_dir: Path, journal: Journal, progress: Progress,
                   started: float) -> VerifyReport:
    """An online run has no snapshot: both stores are compared at one pinned change-log
    position (the cut-over's proof), every dual-store checksum recomputed from its fields."""
    from dualmem_bulk.online_cutover import compare_at_pin
    from dualmem_bulk.stores.dual import DualStore, writer_lock
    from dualmem_bulk.stores.memory_store import MemoryStore

    if journal.get("phase") == "copying":
        raise UsageError(f"{run_dir}: the online copy is still under way; verify once "
                         "`dualmem-bulk status` shows it catching up or cut over")
    config = journal.get("config")
    if config.get("kind") == "engram-wal":
        return _verify_online_wal(run_dir, journal, progress, started)
    if journal.get("serving") == "lance":
        raise UsageError(f"{run_dir}: the run is finalized and the new store alone takes the "
                         "writes: there is no legacy store to compare it with any more")
    store, target = Path(config["source"]), Path(config["target"])
    legacy = MemoryStore(store, create=False)
    try:
        progress.phase("verify", legacy.count())
        with writer_lock(run_dir):
            pinned = compare_at_pin(legacy, DualStore(target), journal, progress=progress)
    finally:
        legacy.close()
    progress.done()
    return _pinned_report(run_dir, store, target, pinned, started)


def _verify_online_wal(run_dir: Path, journal: Journal, progress: Progress,
                       started: float) -> VerifyReport:
    """An online run from an Engram data root: the WAL's replay at the applied position against
    the dual store, every checksum recomputed from the fields."""
    from dualmem_bulk.online_wal import verify_wal_run

    progress.phase("verify", None)
    pinned, root, target, problems = verify_wal_run(run_dir, journal, progress)
    progress.done()
    return _pinned_report(run_dir, root, target, pinned, started, problems)


def _pinned_report(run_dir: Path, source: Path, target: Path, pinned: Pinned | WalPinned,
                   started: float, problems: list[Problem] | None = None) -> VerifyReport:
    """The verdict of an online run's comparison at a pinned position."""
    report = VerifyReport(
        ok=pinned.same, run_dir=str(run_dir), target=str(target),
        snapshot_rows=pinned.source.rows, target_rows=pinned.stored.rows,
        recorded_digest=pinned.source.hex, snapshot_digest=pinned.source.hex,
        target_digest=pinned.stored.hex, recomputed_digest=pinned.recomputed.hex,
        elapsed_s=round(time.perf_counter() - started, 3))
    if not pinned.same:
        named = problems or []
        report.mismatched = len({(sp, i) for sp, i, _ in named}) or 1
        report.mismatches = [{"id": i, "problem": p, **({"space": sp} if sp else {})}
                             for sp, i, p in named[:MAX_LISTED - 1]]
        report.mismatches.append({"id": "", "problem": pinned.describe(source, target)})
    return report
