"""Pass 1 of the Engram WAL reader: walk, check and index every record, then replay the index.

Per space, every record of every ``wal-*.log`` file (file-name order) is read once: header
magic and CRC (a bad header ends the file), payload CRC (a mismatch skips the record), torn
tails (reported; what is whole before them is kept). Each valid EpisodeStore (or unknown entry
type) is fully decoded and checked, its timestamps parsed in vectorised chunks, and only a small
index entry is kept (file, offset, size, record index, sequence, id, times): the payloads are
dropped, so memory stays bounded. :meth:`SpaceIndex.replay` then applies Engram's rules.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from crc32c import crc32c

from dualmem_bulk.errors import SourceError
from dualmem_bulk.sources._wal_report import IssueKind, SpaceReport, WalFileReport, WalIssue
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

__all__ = ["Reject", "SpaceIndex", "index_space", "is_wal_name"]

_STORE, _DELETE, _INVALID = 0, 1, 2
_TIME_CHUNK = 4096  # timestamps parsed per vectorised call


def is_wal_name(name: str) -> bool:
    """``wal-*`` with the extension exactly ``.log`` (so ``.log.tmp`` leftovers are not)."""
    return name.startswith("wal-") and name.endswith(".log")


class Reject(NamedTuple):
    """An undecodable record, to re-read and quarantine in pass 2."""

    file: int
    offset: int
    size: int
    row: int
    id: str | None
    reason: str


class SpaceIndex:
    """Pass 1 state of one space: its report, the replay index and the rejects."""

    def __init__(self, name: str, wal_dir: Path, upto: Mapping[str, int] | None = None) -> None:
        self.name = name
        self.upto = upto
        """Read only these files, each up to this byte offset (a position of the live WAL)."""
        names = sorted(p.name for p in wal_dir.iterdir())
        wal = [wal_dir / n for n in names if is_wal_name(n) and (wal_dir / n).is_file()]
        self.files = [f for f in wal if upto is None or f.name in upto]
        self.report = SpaceReport(name, ignored_files=[n for n in names if wal_dir / n not in wal])
        self.issues: list[WalIssue] = []
        self.rejects: list[Reject] = []
        # The index, one entry per valid EpisodeStore or MemoryDelete, in file and offset order.
        self.file, self.offset, self.size, self.row = (array("q") for _ in range(4))
        self.when, self.recall = array("q"), array("q")
        self.sequence = array("Q")
        self.kind = bytearray()
        self.ids: list[str] = []
        self._times: list[tuple[int, str, str]] = []
        self.winners = np.empty(0, dtype=np.int64)

    def issue(self, kind: IssueKind, file: int, offset: int, seq: int | None, size: int,
              problem: str) -> None:
        """Note a damaged, skipped or unusual record for the report."""
        self.issues.append(WalIssue(kind, self.name, self.files[file].name, offset, seq, size,
                                    problem))

    def add(self, kind: int, file: int, offset: int, size: int, seq: int, row: int,
            id_: str) -> int:
        """Index a valid EpisodeStore or MemoryDelete; return its entry number."""
        self.file.append(file)
        self.offset.append(offset)
        self.size.append(size)
        self.row.append(row)
        self.when.append(0)
        self.recall.append(0)
        self.sequence.append(seq)
        self.kind.append(kind)
        self.ids.append(id_)
        return len(self.ids) - 1

    def reject(self, file: int, offset: int, size: int, seq: int, row: int, id_: str | None,
               problem: str) -> None:
        """Note an undecodable record: reported, and quarantined in pass 2."""
        where = f"{self.files[file]}: record at offset {offset} (sequence {seq})"
        self.rejects.append(Reject(file, offset, size, row, id_, f"{where}: {problem}"))
        self.issue("undecodable", file, offset, seq, size, problem)

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
            field, text = ("when", when_text) if when_bad[i] else ("last_recall", recall_text)
            self.kind[entry] = _INVALID
            self.reject(self.file[entry], self.offset[entry], self.size[entry],
                        self.sequence[entry], self.row[entry], self.ids[entry],
                        f"{field} {text!r} is not an RFC 3339 timestamp")
        for (entry, _, _), when_ns, recall_ns in zip(
            pending, _ns(when), _ns(recall), strict=True
        ):
            self.when[entry], self.recall[entry] = when_ns, recall_ns

    def replay(self) -> None:
        """Apply the index in sequence order; keep the winners in file and offset order."""
        order = np.argsort(np.frombuffer(self.sequence, dtype=np.uint64), kind="stable")
        present: dict[str, int] = {}
        for entry in order.tolist():
            kind, id_ = self.kind[entry], self.ids[entry]
            if kind == _STORE:
                if id_ in present:
                    self.report.duplicates_skipped += 1
                else:
                    present[id_] = entry
            elif kind == _DELETE:
                present.pop(id_, None)
        self.winners = np.sort(np.fromiter(present.values(), dtype=np.int64, count=len(present)))
        self.report.memories_yielded = len(self.winners)


def _ns(times: pa.TimestampArray) -> list[int]:
    """int64 ns of a timestamp array, 0 for nulls (rows already rejected)."""
    return times.cast(pa.int64()).fill_null(0).to_pylist()  # type: ignore[no-any-return]


def _scan_file(space: SpaceIndex, file: int) -> None:
    """Pass 1 over one WAL file: count, check and index its records."""
    path = space.files[file]
    size = path.stat().st_size
    if space.upto is not None:
        size = min(size, space.upto[path.name])
    report = WalFileReport(path.name, size)
    space.report.files.append(report)
    offset = 0
    with path.open("rb", buffering=1 << 20) as fh:
        while offset < size:
            header = fh.read(HEADER_SIZE)
            if len(header) < HEADER_SIZE:
                report.torn_tail_at, report.torn_tail_bytes = offset, size - offset
                space.issue("torn_tail", file, offset, None, size - offset,
                            f"partial header: {len(header)} of {HEADER_SIZE} bytes")
                return
            h = unpack_header(header)
            problem = header_problem(header, h.magic, h.header_crc)
            if problem:
                report.bad_header_at = offset
                report.bytes_skipped_after_bad_header = size - offset
                space.issue("bad_header", file, offset, None, size - offset, problem)
                return
            present = size - offset - HEADER_SIZE  # judged on the size at the start, so a
            if h.payload_size > present:  # file Engram is still appending to reads consistently
                report.torn_tail_at, report.torn_tail_bytes = offset, size - offset
                space.issue("torn_tail", file, offset, h.sequence, size - offset,
                            f"payload of {h.payload_size} bytes, {present} present")
                return
            payload = fh.read(h.payload_size)
            if len(payload) < h.payload_size:
                raise SourceError(path, f"shrank while being read (record at offset {offset})")
            row = report.records_read
            report.records_read += 1
            _index_record(space, file, offset, row, h.sequence, h.entry_type, h.payload_crc,
                          payload)
            offset += HEADER_SIZE + h.payload_size


def _index_record(space: SpaceIndex, file: int, offset: int, row: int, seq: int, entry_type: int,
                  payload_crc: int, payload: bytes) -> None:
    """Count one whole record and index it if replay needs it."""
    size = len(payload)
    computed = crc32c(payload)
    if computed != payload_crc:
        space.report.files[-1].bad_crc_offsets.append(offset)
        space.issue("bad_crc", file, offset, seq, size,
                    f"payload CRC {computed:#010x}, header says {payload_crc:#010x}")
        return
    name = entry_type_name(entry_type)
    space.report.records_valid += 1
    space.report.records_by_type[name] += 1
    if name == "EpisodeStore":
        space.report.episode_store_records += 1
        if entry_type != EntryType.EpisodeStore:
            space.issue("unknown_entry_type", file, offset, seq, size,
                        f"entry type {entry_type} is unknown; replayed as an EpisodeStore")
        try:
            ep = decode_episode(payload)
        except DecodeError as exc:
            space.reject(file, offset, size, seq, row, _id_or_none(payload), f"EpisodeStore {exc}")
            return
        entry = space.add(_STORE, file, offset, size, seq, row, ep.id)
        space.times(entry, ep.when, ep.last_recall)
    elif name == "MemoryDelete":
        try:
            space.add(_DELETE, file, offset, size, seq, row, payload.decode("utf-8"))
        except UnicodeDecodeError as exc:
            space.reject(file, offset, size, seq, row, None,
                         f"MemoryDelete payload byte {exc.start}: id is not valid UTF-8")


def _id_or_none(payload: bytes) -> str | None:
    try:
        return read_id(payload)
    except DecodeError:
        return None


def index_space(root: Path, name: str, upto: Mapping[str, int] | None = None) -> SpaceIndex:
    """Pass 1 and replay for one space (only the files of ``upto``, each up to its offset)."""
    wal_dir = root / name / "wal"
    try:
        space = SpaceIndex(name, wal_dir, upto)
        for file in range(len(space.files)):
            _scan_file(space, file)
    except OSError as exc:
        raise SourceError(exc.filename or wal_dir, f"cannot read ({exc.strerror})") from exc
    space.flush_times()
    space.replay()
    return space


