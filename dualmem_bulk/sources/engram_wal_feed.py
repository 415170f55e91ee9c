"""The change feed of a live Engram data root: the whole WAL records after a position.

A *position* maps each space to each of its WAL files and the byte offset just after the last
whole record read there (a record still being written at the tail is not whole yet, so the
position stays before it; a bad header ends its file, as in Engram's replay, so the position
stays there for good). :class:`WalFeed` reads forward from its position and keeps, per memory
space and id, the small index entries of all its records, so the replay outcome of an id
(Engram's rules: records by sequence, the first EpisodeStore wins, a MemoryDelete removes, a
later store re-adds) can be recomputed exactly for the ids a batch of new records touches,
whatever their sequence numbers. Records are checked as the offline reader checks them (header
and payload CRC, full decode, both timestamps): a record skipped or quarantined there never wins
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
from crc32c import crc32c

from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources.engram_wal import WalIssue, engram_spaces, episode_batch, is_wal_name
from dualmem_bulk.sources.engram_wal_codec import (
    HEADER_SIZE,
    DecodeError,
    decode_episode,
    entry_type_name,
    header_problem,
    unpack_header,
)
from dualmem_bulk.timefmt import parse_rfc3339_lenient

__all__ = ["Position", "Record", "WalFeed", "legacy_columns"]

Position = dict[str, dict[str, int]]
"""Space -> WAL file name -> byte offset after the last whole record read."""


class Record(NamedTuple):
    """The index entry of one valid EpisodeStore (``store``) or MemoryDelete."""

    sequence: int
    file: str
    offset: int
    size: int
    store: bool
    space: str


def legacy_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The legacy schema's columns of a WAL batch (without its ``_row``)."""
    return pa.RecordBatch.from_arrays([batch.column(n) for n in LEGACY_SCHEMA.names],
                                      schema=LEGACY_SCHEMA)


def _winner(records: list[Record]) -> Record | None:
    """Engram's replay of one id's records: by sequence (ties in file and offset order)."""
    present: Record | None = None
    for r in sorted(records, key=lambda r: (r.sequence, r.file, r.offset)):
        if not r.store:
            present = None
        elif present is None:
            present = r
    return present


class WalFeed:
    """Reads an Engram data root forward from a position; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.position: Position = {}
        self._records: dict[tuple[str, str], list[Record]] = {}
        self._pending: list[tuple[str, Record, str, str]] = []

    def advance(self, *, limit: int | None = None,
                upto: Mapping[str, Mapping[str, int]] | None = None
                ) -> tuple[int, set[tuple[str, str]]]:
        """Read the whole records after the position (at most about ``limit``, or up to the
        position ``upto``); return how many were read and the (space, id) keys whose outcome
        may change.

        Raises :class:`SourceError` when a file shrank or vanished (the WAL was rewritten)."""
        read, touched = 0, set[tuple[str, str]]()
        spaces = sorted(upto) if upto is not None else engram_spaces(self.root)
        for space in spaces:
            wal_dir = self.root / space / "wal"
            done = self.position.setdefault(space, {})
            try:
                names = sorted(n for n in (p.name for p in wal_dir.iterdir())
                               if is_wal_name(n) and (wal_dir / n).is_file())
            except OSError as exc:
                raise SourceError(wal_dir, f"cannot list ({exc.strerror})") from exc
            if vanished := sorted(set(done) - set(names)):
                raise SourceError(wal_dir / vanished[0], "vanished from the live WAL; an "
                                  "online migration needs the WAL files to stay (no compaction)")
            for name in names:
                if upto is not None and name not in upto[space]:
                    continue
                if limit is not None and read >= limit:
                    break
                end = None if upto is None else upto[space][name]
                read += self._file(space, name, end, None if limit is None else limit - read,
                                   touched)
        self._settle(touched)
        return read, touched

    def _file(self, space: str, name: str, end: int | None, limit: int | None,
              touched: set[tuple[str, str]]) -> int:
        """Read whole records of one file from its position; return how many."""
        path = self.root / space / "wal" / name
        offset = self.position[space].get(name, 0)
        read = 0
        try:
            size = path.stat().st_size
            if size < offset:
                raise SourceError(path, f"shrank below the migrated position {offset}; an "
                                        "online migration needs the WAL to be append-only")
            size = size if end is None else min(size, end)
            with path.open("rb") as fh:
                fh.seek(offset)
                while offset + HEADER_SIZE <= size and (limit is None or read < limit):
                    step = self._record(space, name, fh, offset, size, touched)
                    if step == 0:
                        break
                    offset += step
                    read += 1
        except OSError as exc:
            raise SourceError(path, f"cannot read ({exc.strerror})") from exc
        self.position[space][name] = offset
        return read

    def tail_issues(self) -> list[WalIssue]:
        """What stops each file at the position, as the offline reader reports it: a torn tail
        (a record cut short, or still being written) or a bad header; nothing for a file read
        to its end or followed by whole records not read yet."""
        issues: list[WalIssue] = []
        for space, files in sorted(self.position.items()):
            for name, offset in sorted(files.items()):
                path = self.root / space / "wal" / name
                try:
                    with path.open("rb") as fh:
                        size = fh.seek(0, 2)
                        fh.seek(offset)
                        header = fh.read(HEADER_SIZE)
                except OSError as exc:
                    raise SourceError(path, f"cannot read ({exc.strerror})") from exc
                rest = size - offset
                if not header:
                    continue
                if len(header) < HEADER_SIZE:
                    issues.append(WalIssue("torn_tail", space, name, offset, None, rest,
                                           f"partial header: {len(header)} of {HEADER_SIZE} "
                                           "bytes"))
                    continue
                h = unpack_header(header)
                if problem := header_problem(header, h.magic, h.header_crc):
                    issues.append(WalIssue("bad_header", space, name, offset, None, rest,
                                           problem))
                elif h.payload_size > rest - HEADER_SIZE:
                    issues.append(WalIssue("torn_tail", space, name, offset, h.sequence, rest,
                                           f"payload of {h.payload_size} bytes, "
                                           f"{rest - HEADER_SIZE} present"))
        return issues

    def _record(self, space: str, name: str, fh: BinaryIO, offset: int, size: int,
                touched: set[tuple[str, str]]) -> int:
        """Index the record at ``offset``; its length, or 0 if it is not whole (or the header
        is bad: Engram stops reading that file there)."""
        header = fh.read(HEADER_SIZE)
        h = unpack_header(header)
        if header_problem(header, h.magic, h.header_crc) or h.payload_size > size - offset \
                - HEADER_SIZE:
            return 0
        payload = fh.read(h.payload_size)
        if crc32c(payload) != h.payload_crc:
            return HEADER_SIZE + h.payload_size
        kind = entry_type_name(h.entry_type)
        record = Record(h.sequence, name, offset, h.payload_size, kind == "EpisodeStore", space)
        if kind == "EpisodeStore":
            try:
                ep = decode_episode(payload)
            except DecodeError:
                return HEADER_SIZE + h.payload_size
            self._pending.append((ep.id, record, ep.when, ep.last_recall))
        elif kind == "MemoryDelete":
            try:
                id_ = payload.decode("utf-8")
            except UnicodeDecodeError:  # quarantined by the offline reader, never applied
                return HEADER_SIZE + h.payload_size
            self._add(id_, record, touched)
        return HEADER_SIZE + h.payload_size

    def _add(self, id_: str, record: Record, touched: set[tuple[str, str]]) -> None:
        key = (record.space, id_)
        self._records.setdefault(key, []).append(record)
        touched.add(key)

    def _settle(self, touched: set[tuple[str, str]]) -> None:
        """Index the pending EpisodeStores whose timestamps both parse (as the offline reader
        does: the others are quarantined there)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        bad = np.zeros(len(pending), dtype=bool)
        for k in (2, 3):
            bad |= parse_rfc3339_lenient([p[k] for p in pending])[1]
        for (id_, record, _, _), skip in zip(pending, bad.tolist(), strict=True):
            if not skip:
                self._add(id_, record, touched)

    def outcome(self, keys: set[tuple[str, str]]
                ) -> tuple[pa.RecordBatch, list[tuple[str, str]]]:
        """The replayed state of the (space, id) ``keys`` at the position: the legacy rows of
        those present (decoded again from their winning records) and the keys that are absent."""
        winners: dict[str, list[Record]] = {}
        deletes: list[tuple[str, str]] = []
        for key in sorted(keys):
            won = _winner(self._records.get(key, []))
            if won is None:
                deletes.append(key)
            else:
                winners.setdefault(won.space, []).append(won)
        batches = [self._rows(space, records) for space, records in sorted(winners.items())]
        if not batches:
            return pa.RecordBatch.from_pylist([], schema=LEGACY_SCHEMA), deletes
        return pa.Table.from_batches(batches).combine_chunks().to_batches()[0], deletes

    def _rows(self, space: str, records: list[Record]) -> pa.RecordBatch:
        """Legacy rows of winning records, re-read and re-checked (the WAL is append-only)."""
        payloads: list[bytes] = []
        for r in records:
            path = self.root / space / "wal" / r.file
            try:
                with path.open("rb") as fh:
                    fh.seek(r.offset)
                    data = fh.read(HEADER_SIZE + r.size)
            except OSError as exc:
                raise SourceError(path, f"cannot read ({exc.strerror})") from exc
            payload = data[HEADER_SIZE:]
            if len(payload) != r.size or crc32c(payload) != unpack_header(
                    data[:HEADER_SIZE]).payload_crc:
                raise SourceError(path, f"the record at offset {r.offset} changed after it was "
                                        "read; an online migration needs an append-only WAL")
            payloads.append(payload)
        episodes = [decode_episode(p) for p in payloads]
        times = [parse_rfc3339_lenient([getattr(e, k) for e in episodes])[0]
                 .cast(pa.int64()).to_numpy(zero_copy_only=False) for k in ("when", "last_recall")]
        batch = episode_batch(space, episodes, payloads, times[0], times[1],
                              np.zeros(len(episodes), dtype=np.int64))
        return legacy_columns(batch)
