"""Pass 1 of the Engram WAL reader for one file: walk, check and index its records.

:func:`scan_wal_file` is a task: it needs only its file, so the files of a data root are
scanned in parallel (worker processes or Dask workers) and the driver merely merges the small
per-file indexes (:mod:`._wal_index`). Every record is read once: header magic and CRC (a bad
header ends the file), payload CRC (a mismatch skips the record), torn tails (reported; what is
whole before them is kept). Each valid EpisodeStore (or unknown entry type) is fully decoded and
checked, its timestamps parsed in vectorised chunks, and only a small index entry is kept
(offset, size, record index, sequence, kind, id, times): the payloads are dropped, so memory
stays bounded.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
from crc32c import crc32c

from dualmem_bulk.errors import SourceError
from dualmem_bulk.sources._wal_report import IssueKind, WalFileReport, WalIssue
from dualmem_bulk.sources.engram_wal_codec import (
    HEADER_SIZE,
    DecodeError,
    EntryType,
    decode_episode,
    entry_type_name,
    header_problem,
    read_id,
    unpack_header,
)
from dualmem_bulk.timefmt import parse_rfc3339_lenient

__all__ = ["DELETE", "INVALID", "STORE", "FileIndex", "Reject", "WalFileScan", "scan_wal_file"]

STORE, DELETE, INVALID = 0, 1, 2
"""Index entry kinds: a valid EpisodeStore, a MemoryDelete, an EpisodeStore rejected for its
timestamps (kept in the index, ignored by the replay)."""
_TIME_CHUNK = 4096  # timestamps parsed per vectorised call


class Reject(NamedTuple):
    """An undecodable record, to re-read and quarantine in pass 2."""

    file: int
    """The file's index among its space's WAL files."""
    offset: int
    size: int
    row: int
    id: str | None
    reason: str


@dataclass(frozen=True)
class WalFileScan:
    """One WAL file to scan (a picklable task spec)."""

    space: str
    path: Path
    file: int
    """The file's index among its space's WAL files (file-name order)."""
    limit: int | None = None
    """Read only up to this byte offset (a pinned position of the live WAL)."""

    @property
    def needs(self) -> tuple[Path, ...]:
        """The file."""
        return (self.path,)


@dataclass
class FileIndex:
    """What pass 1 found in one file: its report, its issues and rejects, and one index entry
    per valid EpisodeStore or MemoryDelete, in offset order; or why the file could not be read
    (:attr:`failure`)."""

    report: WalFileReport
    failure: tuple[str, str] | None = None
    """Path and problem of a file that could not be read: the caller raises the
    :class:`SourceError` (which does not survive the trip back from a worker process)."""
    issues: list[WalIssue] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    records_valid: int = 0
    records_by_type: Counter[str] = field(default_factory=Counter)
    episode_store_records: int = 0
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sequence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    when: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    recall: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ids: pa.Array = field(default_factory=lambda: pa.array([], pa.large_utf8()))


class _Scan:
    """The entries of one file as they are found (growable arrays), then a :class:`FileIndex`."""

    def __init__(self, spec: WalFileScan, report: WalFileReport) -> None:
        self.spec = spec
        self.out = FileIndex(report)
        self.offset, self.size, self.row = array("q"), array("q"), array("q")
        self.when, self.recall = array("q"), array("q")
        self.sequence = array("Q")
        self.kind = bytearray()
        self.ids: list[str] = []
        self._times: list[tuple[int, str, str]] = []

    def issue(self, kind: IssueKind, offset: int, seq: int | None, size: int,
              problem: str) -> None:
        """Note a damaged, skipped or unusual record for the report."""
        self.out.issues.append(WalIssue(kind, self.spec.space, self.spec.path.name, offset, seq,
                                        size, problem))

    def add(self, kind: int, offset: int, size: int, seq: int, row: int, id_: str) -> int:
        """Index a valid EpisodeStore or MemoryDelete; return its entry number."""
        self.offset.append(offset)
        self.size.append(size)
        self.row.append(row)
        self.when.append(0)
        self.recall.append(0)
        self.sequence.append(seq)
        self.kind.append(kind)
        self.ids.append(id_)
        return len(self.ids) - 1

    def reject(self, offset: int, size: int, seq: int, row: int, id_: str | None,
               problem: str) -> None:
        """Note an undecodable record: reported, and quarantined in pass 2."""
        where = f"{self.spec.path}: record at offset {offset} (sequence {seq})"
        self.out.rejects.append(Reject(self.spec.file, offset, size, row, id_,
                                       f"{where}: {problem}"))
        self.issue("undecodable", offset, seq, size, problem)

    def times(self, entry: int, when: str, last_recall: str) -> None:
        """Queue an entry's timestamps for the next vectorised parse."""
        self._times.append((entry, when, last_recall))
        if len(self._times) >= _TIME_CHUNK:
            self.flush_times()

    def flush_times(self) -> None:
        """Parse the pending timestamps; an entry with an unparsable one becomes a reject."""
        pending, self._times = self._times, []
        if not pending:
            return
        parsed = [parse_rfc3339_lenient([p[k] for p in pending]) for k in (1, 2)]
        (when, when_bad), (recall, recall_bad) = parsed
        for i in np.flatnonzero(when_bad | recall_bad).tolist():
            entry, when_text, recall_text = pending[i]
            field_, text = ("when", when_text) if when_bad[i] else ("last_recall", recall_text)
            self.kind[entry] = INVALID
            self.reject(self.offset[entry], self.size[entry], self.sequence[entry],
                        self.row[entry], self.ids[entry],
                        f"{field_} {text!r} is not an RFC 3339 timestamp")
        for (entry, _, _), when_ns, recall_ns in zip(
            pending, _ns(when), _ns(recall), strict=True
        ):
            self.when[entry], self.recall[entry] = when_ns, recall_ns

    def finish(self) -> FileIndex:
        """The file's index; rejects in offset order (the order pass 2 reads them in)."""
        self.flush_times()
        out = self.out
        out.rejects.sort(key=lambda r: r.offset)
        out.offset, out.size, out.row, out.when, out.recall = (
            _numpy(a, np.int64) for a in (self.offset, self.size, self.row, self.when,
                                          self.recall))
        out.sequence = _numpy(self.sequence, np.uint64)
        out.kind = _numpy(self.kind, np.uint8)
        out.ids = pa.array(self.ids, pa.large_utf8())
        return out


def _numpy(values: array[int] | bytearray, dtype: type[np.generic]) -> np.ndarray:
    """A copy of a growable buffer as a numpy array (an empty buffer has no memory to view)."""
    return np.frombuffer(values, dtype).copy() if len(values) else np.zeros(0, dtype)


def _ns(times: pa.TimestampArray) -> list[int]:
    """int64 ns of a timestamp array, 0 for nulls (rows already rejected)."""
    return times.cast(pa.int64()).fill_null(0).to_pylist()  # type: ignore[no-any-return]


def scan_wal_file(spec: WalFileScan) -> FileIndex:
    """Pass 1 over one WAL file: count, check and index its records (a task for any worker)."""
    path = spec.path
    try:
        size = path.stat().st_size
        if spec.limit is not None:
            size = min(size, spec.limit)
        scan = _Scan(spec, WalFileReport(path.name, size))
        with path.open("rb", buffering=1 << 20) as fh:
            _walk(scan, fh, size)
    except OSError as exc:
        failure = (str(exc.filename or path), f"cannot read ({exc.strerror})")
        return FileIndex(WalFileReport(path.name, 0), failure)
    except SourceError as exc:
        return FileIndex(WalFileReport(path.name, 0), (exc.path, exc.problem))
    return scan.finish()


def _walk(scan: _Scan, fh: BinaryIO, size: int) -> None:
    """Read the records of an open file up to ``size`` bytes, indexing each."""
    report = scan.out.report
    read = fh.read
    offset = 0
    while offset < size:
        header = read(HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            report.torn_tail_at, report.torn_tail_bytes = offset, size - offset
            scan.issue("torn_tail", offset, None, size - offset,
                       f"partial header: {len(header)} of {HEADER_SIZE} bytes")
            return
        h = unpack_header(header)
        problem = header_problem(header, h.magic, h.header_crc)
        if problem:
            report.bad_header_at = offset
            report.bytes_skipped_after_bad_header = size - offset
            scan.issue("bad_header", offset, None, size - offset, problem)
            return
        present = size - offset - HEADER_SIZE  # judged on the size at the start, so a
        if h.payload_size > present:  # file Engram is still appending to reads consistently
            report.torn_tail_at, report.torn_tail_bytes = offset, size - offset
            scan.issue("torn_tail", offset, h.sequence, size - offset,
                       f"payload of {h.payload_size} bytes, {present} present")
            return
        payload = read(h.payload_size)
        if len(payload) < h.payload_size:
            raise SourceError(scan.spec.path, f"shrank while being read (record at offset "
                                              f"{offset})")
        row = report.records_read
        report.records_read += 1
        _index_record(scan, offset, row, h.sequence, h.entry_type, h.payload_crc, payload)
        offset += HEADER_SIZE + h.payload_size


def _index_record(scan: _Scan, offset: int, row: int, seq: int, entry_type: int,
                  payload_crc: int, payload: bytes) -> None:
    """Count one whole record and index it if replay needs it."""
    size = len(payload)
    out = scan.out
    computed = crc32c(payload)
    if computed != payload_crc:
        out.report.bad_crc_offsets.append(offset)
        scan.issue("bad_crc", offset, seq, size,
                   f"payload CRC {computed:#010x}, header says {payload_crc:#010x}")
        return
    name = entry_type_name(entry_type)
    out.records_valid += 1
    out.records_by_type[name] += 1
    if name == "EpisodeStore":
        out.episode_store_records += 1
        if entry_type != EntryType.EpisodeStore:
            scan.issue("unknown_entry_type", offset, seq, size,
                       f"entry type {entry_type} is unknown; replayed as an EpisodeStore")
        try:
            ep = decode_episode(payload)
        except DecodeError as exc:
            scan.reject(offset, size, seq, row, _id_or_none(payload), f"EpisodeStore {exc}")
            return
        entry = scan.add(STORE, offset, size, seq, row, ep.id)
        scan.times(entry, ep.when, ep.last_recall)
    elif name == "MemoryDelete":
        try:
            scan.add(DELETE, offset, size, seq, row, payload.decode("utf-8"))
        except UnicodeDecodeError as exc:
            scan.reject(offset, size, seq, row, None,
                        f"MemoryDelete payload byte {exc.start}: id is not valid UTF-8")


def _id_or_none(payload: bytes) -> str | None:
    try:
        return read_id(payload)
    except DecodeError:
        return None
