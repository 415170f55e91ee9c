"""The replay index of an Engram data root: pass 1's per-file indexes merged space by space,
and Engram's replay rules applied to them.

Scanning a file (:func:`~._wal_scan.scan_wal_file`) needs only that file, so the scans are
tasks on the run's pool (worker processes, Dask workers, or this process alone); the caller
only lists the ``wal/`` folders, merges the small per-file indexes (numpy) and replays them
(:func:`replay`, vectorised): stable order by sequence, ties in file and offset order; per id,
the first EpisodeStore wins, a MemoryDelete removes, a later store re-adds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.errors import SourceError
from dualmem_bulk.sources._wal_report import SpaceReport
from dualmem_bulk.sources._wal_scan import (
    DELETE,
    INVALID,
    FileIndex,
    Reject,
    WalFileScan,
    scan_wal_file,
)

if TYPE_CHECKING:
    from dualmem_bulk.engines import TaskPool

__all__ = ["Reject", "SpaceIndex", "index_spaces", "is_wal_name", "replay"]


def is_wal_name(name: str) -> bool:
    """``wal-*`` with the extension exactly ``.log`` (so ``.log.tmp`` leftovers are not)."""
    return name.startswith("wal-") and name.endswith(".log")


def replay(kind: np.ndarray, ids: np.ndarray, sequence: np.ndarray) -> tuple[np.ndarray, int]:
    """The winning entries (ascending) and the count of duplicate stores skipped, for index
    entries of ``kind`` (STORE, DELETE or INVALID: ignored), id codes ``ids`` (equal codes,
    equal ids) and ``sequence``, listed in file and offset order.

    Per id, in order of sequence then entry: a delete starts a new *segment*; the first store
    of a segment is stored, the others are duplicates; the id's winner is the first store of
    its last segment unless a delete ends it.

    Example:
        >>> kind, ids = np.array([0, 0, 1, 0, 0]), np.array([7, 7, 7, 7, 8])
        >>> winners, dups = replay(kind, ids, np.array([3, 1, 2, 4, 0], np.uint64))
        >>> winners.tolist(), dups
        ([0, 4], 1)
    """
    live = np.flatnonzero(kind != INVALID)
    order = live[np.lexsort((live, sequence[live], ids[live]))]
    if not len(order):
        return np.zeros(0, np.int64), 0
    code, deletes = ids[order], kind[order] == DELETE
    new_id = np.ones(len(order), dtype=bool)
    new_id[1:] = code[1:] != code[:-1]
    segment = np.cumsum(new_id | deletes)
    stores = np.flatnonzero(~deletes)
    first = np.ones(len(stores), dtype=bool)
    first[1:] = segment[stores[1:]] != segment[stores[:-1]]
    last_of_id = np.ones(len(order), dtype=bool)
    last_of_id[:-1] = new_id[1:]
    stored = stores[first]
    won = stored[np.isin(segment[stored], segment[last_of_id & ~deletes])]
    return np.sort(order[won]).astype(np.int64), len(stores) - len(stored)


def _joined(parts: Sequence[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    return np.concatenate([np.zeros(0, dtype), *parts]).astype(dtype, copy=False)


class SpaceIndex:
    """One space's merged index: its report, the index entries (file and offset order), the
    rejects and the winning entries."""

    def __init__(self, name: str, files: list[Path], ignored: list[str],
                 scans: Sequence[FileIndex]) -> None:
        self.name = name
        self.files = files
        """The space's ``wal-*.log`` files read, in name order."""
        report = SpaceReport(name, files=[s.report for s in scans], ignored_files=ignored)
        for scan in scans:
            report.records_valid += scan.records_valid
            report.records_by_type.update(scan.records_by_type)
            report.episode_store_records += scan.episode_store_records
        self.report = report
        self.issues = [issue for scan in scans for issue in scan.issues]
        self.rejects: list[Reject] = [r for scan in scans for r in scan.rejects]
        self.file = np.repeat(np.arange(len(scans), dtype=np.int64),
                              [len(scan.offset) for scan in scans])
        """Each entry's file (its index in :attr:`files`)."""
        self.offset, self.size, self.row, self.when, self.recall = (
            _joined([getattr(scan, column) for scan in scans], np.int64)
            for column in ("offset", "size", "row", "when", "recall"))
        self.sequence = _joined([scan.sequence for scan in scans], np.uint64)
        kind = _joined([scan.kind for scan in scans], np.uint8)
        self.ids = pa.chunked_array([scan.ids for scan in scans], pa.large_utf8()
                                    ).combine_chunks()
        codes = pc.dictionary_encode(self.ids).indices.to_numpy(zero_copy_only=False)
        self.winners, report.duplicates_skipped = replay(kind, codes, self.sequence)
        """The winning entries, in file and offset order."""
        report.memories_yielded = len(self.winners)


def _wal_files(wal_dir: Path, upto: Mapping[str, int] | None) -> tuple[list[Path], list[str]]:
    """The ``wal-*.log`` files to read (only those of ``upto``) and the names ignored."""
    names = sorted(p.name for p in wal_dir.iterdir())
    wal = [wal_dir / n for n in names if is_wal_name(n) and (wal_dir / n).is_file()]
    return ([f for f in wal if upto is None or f.name in upto],
            [n for n in names if wal_dir / n not in wal])


def index_spaces(root: Path, names: Sequence[str],
                 upto: Mapping[str, Mapping[str, int]] | None = None,
                 pool: TaskPool | None = None) -> list[SpaceIndex]:
    """Pass 1 and replay for the spaces ``names`` of ``root`` (only the files of ``upto``, each
    up to its offset): every file scanned as a task on ``pool`` (here, one by one, without)."""
    listed: list[tuple[str, list[Path], list[str]]] = []
    for name in names:
        wal_dir = root / name / "wal"
        try:
            listed.append((name, *_wal_files(wal_dir, None if upto is None else upto[name])))
        except OSError as exc:
            raise SourceError(exc.filename or wal_dir, f"cannot read ({exc.strerror})") from exc
    specs = [WalFileScan(name, path, i, None if upto is None else upto[name][path.name])
             for name, files, _ in listed for i, path in enumerate(files)]
    scans = ([scan_wal_file(spec) for spec in specs] if pool is None
             else [scan for _, scan in pool.ordered(scan_wal_file, specs)])
    for scan in scans:
        if scan.failure is not None:
            raise SourceError(*scan.failure)
    spaces, start = [], 0
    for name, files, ignored in listed:
        spaces.append(SpaceIndex(name, files, ignored, scans[start : start + len(files)]))
        start += len(files)
    return spaces
