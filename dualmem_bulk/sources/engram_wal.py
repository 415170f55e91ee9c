"""Read an Engram data root (``<root>/<space>/wal/wal-<16 hex>.log``) as legacy Memory batches.

Replays the write-ahead log as Engram does, in bounded memory and in two passes:

1. *Index*: walk every record of every ``wal-*.log`` file (file-name order), check header and
   payload CRCs, decode and check each EpisodeStore (so a record Engram would refuse never
   wins), parse its two timestamps, and keep only a small index entry per record (file,
   offset, sequence, id, times). Damage is reported, not fatal: a bad header ends its file, a
   bad payload CRC skips the record, a torn tail is reported and what is whole before it kept.
   Each file is scanned on its own (:mod:`._wal_scan`), as a task of the run's pool when one is
   given, so this pass scales with the workers; the caller merges the per-file indexes.
2. *Replay*: stable-sort the index by sequence (ties keep file order); the first EpisodeStore
   per id wins, a MemoryDelete removes, a later store re-adds (:mod:`._wal_index`). The winners
   are then decoded again, file by file in offset order, into batches of at most
   ``batch_size`` rows (or read as :class:`WalFilePart` partitions, one task each).

``_row`` is the record's 0-based index in its WAL file (every whole record with a valid header
counts), so ``(source, _row)`` locates a record exactly, for memories and rejects alike.
Undecodable records go to the quarantine as :class:`Rejected` with the payload as hex.

Example:
    >>> src = read_engram_wal(Path("data/fixtures/engram-wal/engram-data"), batch_size=1000)
    >>> src.memories, sum(b.batch.num_rows for b in src)
    (296, 296)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
from crc32c import crc32c

from dualmem_bulk.errors import SourceError, UsageError
from dualmem_bulk.sources import Rejected, SourceBatch
from dualmem_bulk.sources._wal_columns import BATCH_SCHEMA, episode_batch
from dualmem_bulk.sources._wal_index import Reject, SpaceIndex, index_spaces, is_wal_name
from dualmem_bulk.sources._wal_report import SpaceReport, WalFileReport, WalIssue, WalReport
from dualmem_bulk.sources.engram_wal_codec import (
    HEADER_SIZE,
    DecodeError,
    decode_episode,
    header_problem,
    unpack_header,
)

if TYPE_CHECKING:
    from dualmem_bulk.engines import TaskPool

__all__ = [
    "SPACE_ID",
    "EngramWalSource",
    "SpaceReport",
    "WalFilePart",
    "WalFileReport",
    "WalIssue",
    "WalRecordRef",
    "WalReport",
    "engram_spaces",
    "episode_batch",
    "is_engram_root",
    "is_wal_name",
    "read_engram_wal",
]

SPACE_ID = re.compile(r"[a-z0-9_-]{3,64}")
"""A valid Engram memory space id."""


def engram_spaces(root: Path) -> list[str]:
    """Names of the valid space ids under ``root`` that have a ``wal/`` folder, in name order."""
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        raise SourceError(root, f"cannot list the data root ({exc.strerror})") from exc
    return sorted(
        p.name for p in entries if SPACE_ID.fullmatch(p.name) and (p / "wal").is_dir()
    )


def is_engram_root(path: Path) -> bool:
    """True if ``path`` is a directory holding some ``<space>/wal/wal-*.log`` file."""
    try:
        return path.is_dir() and any(
            is_wal_name(f.name) and f.is_file()
            for space in engram_spaces(path)
            for f in (path / space / "wal").iterdir()
        )
    except (OSError, SourceError):
        return False


class WalRecordRef(NamedTuple):
    """Where a yielded memory came from: its winning EpisodeStore record."""

    space: str
    file: str
    """Path of the WAL file."""
    offset: int
    sequence: int
    row: int
    """The record's index in its file (the batch's ``_row``)."""
    id: str


def _read_payload(fh: BinaryIO, path: Path, offset: int, size: int) -> bytes:
    """Re-read a record pass 1 accepted; anything different means the file changed meanwhile."""
    fh.seek(offset)
    data = fh.read(HEADER_SIZE + size)
    header, payload = data[:HEADER_SIZE], data[HEADER_SIZE:]
    if len(payload) == size:
        h = unpack_header(header)
        if (header_problem(header, h.magic, h.header_crc) is None and h.payload_size == size
                and crc32c(payload) == h.payload_crc):
            return payload
    raise SourceError(path, f"the record at offset {offset} changed after the WAL was indexed; "
                            "stop the writer (or copy the data root) and read it again")


@dataclass(frozen=True, eq=False)
class WalFilePart:
    """Winning records of one WAL file of one space, in offset order (and the file's
    undecodable records): a partition of an Engram WAL source. The replay (pass 1, which needs
    the whole space) chose them; reading them back needs only this file."""

    space: str
    path: Path
    offsets: np.ndarray
    sizes: np.ndarray
    when: np.ndarray
    recall: np.ndarray
    records: np.ndarray
    """Each winner's 0-based record index in the file (its ``_row``)."""
    rejects: tuple[Reject, ...]

    @property
    def rows(self) -> int:
        """Memories and undecodable records."""
        return len(self.offsets) + len(self.rejects)

    @property
    def needs(self) -> tuple[Path, ...]:
        """The WAL file."""
        return (self.path,)

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """Batches of at most ``batch_size`` memories; the rejects come with the first one (an
        empty one if no memory won here)."""
        try:
            with self.path.open("rb") as fh:
                yield from self._batches(fh, batch_size)
        except OSError as exc:
            raise SourceError(self.path, f"cannot read ({exc.strerror})") from exc

    def _batches(self, fh: BinaryIO, batch_size: int) -> Iterator[SourceBatch]:
        rejected = tuple(
            Rejected(str(self.path), r.row, r.id, r.reason,
                     _read_payload(fh, self.path, r.offset, r.size).hex())
            for r in self.rejects
        )
        if not len(self.offsets):
            yield SourceBatch(str(self.path), _empty_batch(), rejected)
            return
        for start in range(0, len(self.offsets), batch_size):
            end = start + batch_size
            payloads = [_read_payload(fh, self.path, offset, size) for offset, size in
                        zip(self.offsets[start:end].tolist(), self.sizes[start:end].tolist(),
                            strict=True)]
            try:
                episodes = [decode_episode(p) for p in payloads]
            except DecodeError as exc:
                raise SourceError(self.path, f"a record changed after the WAL was indexed "
                                             f"({exc})") from exc
            batch = episode_batch(self.space, episodes, payloads, self.when[start:end],
                                  self.recall[start:end], self.records[start:end])
            yield SourceBatch(str(self.path), batch, rejected if start == 0 else ())

    def describe(self) -> str:
        """File, space and records."""
        first = int(self.records[0]) if len(self.records) else None
        return (f"{self.path} ({self.space}): {len(self.offsets)} memories from record "
                f"{first}, {len(self.rejects)} undecodable")


class EngramWalSource:
    """An indexed Engram data root (see :func:`read_engram_wal`); iterating it yields
    :class:`SourceBatch` objects. :attr:`report` and :attr:`memories` are known up front."""

    kind = "engram-wal"

    def __init__(self, root: Path, batch_size: int, spaces: list[SpaceIndex]) -> None:
        self.root = root
        self.batch_size = batch_size
        self._spaces = spaces
        self.files: list[Path] = [f for s in spaces for f in s.files]
        """Every ``wal-*.log`` file read, space by space in name order."""
        issues = sorted((i for s in spaces for i in s.issues),
                        key=lambda i: (i.space, i.file, i.offset))
        self.report = WalReport(str(root), {s.name: s.report for s in spaces}, issues)
        """Counts per file, space and in total, and every damaged or skipped record."""

    @property
    def memories(self) -> int:
        """Memories the batches will hold in total (for a progress bar)."""
        return sum(len(s.winners) for s in self._spaces)

    @property
    def total_rows(self) -> int:
        """Rows the batches will carry: memories plus rejected (undecodable) records."""
        return self.memories + sum(len(s.rejects) for s in self._spaces)

    def __iter__(self) -> Iterator[SourceBatch]:
        return self.batches(self.batch_size)

    def describe(self) -> dict[str, Any]:
        """The replay report: spaces, files, record counts and every damaged spot."""
        return self.report.as_dict()

    def damage(self) -> list[str]:
        """One line per damaged or skipped record, naming file and offset."""
        return [issue.describe() for issue in self.report.issues]

    def partitions(self, rows: int) -> list[WalFilePart]:
        """Runs of at most ``rows`` winning records of one file each, space by space and file
        by file; a file's undecodable records go with its first run."""
        parts: list[WalFilePart] = []
        for space in self._spaces:
            files = space.file[space.winners]
            offset, size, when, recall, record = (
                space.offset, space.size, space.when, space.recall, space.row)
            for file, path in enumerate(space.files):
                picks = space.winners[files == file]
                rejects = tuple(r for r in space.rejects if r.file == file)
                if not len(picks) and not rejects:
                    continue
                for start in range(0, max(len(picks), 1), rows):
                    run = picks[start : start + rows]
                    parts.append(WalFilePart(space.name, path, offset[run], size[run], when[run],
                                             recall[run], record[run],
                                             rejects if start == 0 else ()))
        return parts

    def winners(self) -> Iterator[WalRecordRef]:
        """The winning record of every memory, in the order the batches yield them."""
        for s in self._spaces:
            picked = (s.file[s.winners].tolist(), s.offset[s.winners].tolist(),
                      s.sequence[s.winners].tolist(), s.row[s.winners].tolist(),
                      s.ids.take(pa.array(s.winners)).to_pylist())
            for file, offset, sequence, row, id_ in zip(*picked, strict=True):
                yield WalRecordRef(s.name, str(s.files[file]), offset, sequence, row, id_)

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """Batches of at most ``batch_size`` memories, one WAL file per batch; a file's rejects
        come with its first batch (an empty one if no memory won in that file)."""
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        for part in self.partitions(1 << 62):
            yield from part.batches(batch_size)


def _empty_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in BATCH_SCHEMA],
                                      schema=BATCH_SCHEMA)


def read_engram_wal(root: Path, batch_size: int, spaces: Sequence[str] | None = None,
                    upto: Mapping[str, Mapping[str, int]] | None = None,
                    pool: TaskPool | None = None) -> EngramWalSource:
    """Index (pass 1) every space of an Engram data root, or only ``spaces``, for batch reading.

    ``upto`` (space -> file name -> byte offset) reads the WAL as it was at that position:
    only those spaces and files, each up to its offset (online migrations pin one). With a
    ``pool`` every file is scanned as a task on it (the same function this process runs one
    file after another without one); only the merge and the replay run here.

    Raises :class:`SourceError` if ``root`` holds no space, :class:`UsageError` naming an
    asked-for space that is not there (and listing those that are).
    """
    if not root.is_dir():
        raise SourceError(root, "not a directory (expected an Engram data root)")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    found = engram_spaces(root)
    if spaces is None:
        if not found:
            raise SourceError(root, "no memory space here: expected <root>/<space>/wal/ with "
                                    "space ids of 3 to 64 characters [a-z0-9_-]")
        names = found
    else:
        names = list(dict.fromkeys(spaces))
        for name in names:
            if name not in found:
                what = ("is not a valid space id (3 to 64 characters [a-z0-9_-])"
                        if not SPACE_ID.fullmatch(name) else "has no wal/ folder here")
                raise UsageError(f"{root}: memory space {name!r} {what}; spaces here: "
                                 f"{', '.join(found) or '(none)'}")
    if upto is not None:
        names = [n for n in names if n in upto]
    return EngramWalSource(root, batch_size, index_spaces(root, names, upto, pool))
