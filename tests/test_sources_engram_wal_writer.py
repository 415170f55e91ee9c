"""The Engram WAL writer (``dualmem_bulk.sources.engram_wal_writer``): records behind their
headers, sequences counted or pinned, timestamps as chrono writes them, files written atomically."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from dualmem_bulk.schema import DIM
from dualmem_bulk.sources.engram_wal_codec import (
    HEADER_SIZE,
    EntryType,
    Episode,
    encode_episode,
    unpack_header,
)
from dualmem_bulk.sources.engram_wal_writer import WalEntry, wal_file_name, write_wal

HEADER = HEADER_SIZE


def _episode(id_: str, when: str | int = "2024-01-02T03:04:05.123Z", **fields: Any) -> Episode:
    return Episode(id=id_, when=when, what=id_, embedding=np.full(DIM, 0.25, np.float32), **fields)


def _write(root: Path, name: str, entries: list[Episode | WalEntry]) -> Path:
    path = root / "space_a" / "wal" / name
    write_wal(path, entries, timestamp_ns=1_700_000_000_000_000_000)
    return path


def test_writer_is_atomic_and_formats_like_chrono(tmp_path: Path) -> None:
    path = _write(tmp_path, wal_file_name(0x690FDD40), [
        _episode("a", when=-1, last_recall=1_000_001_000)])
    assert path.name == "wal-00000000690fdd40.log"
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    payload = path.read_bytes()[HEADER:]
    assert b"\x1e\x00\x00\x00\x00\x00\x00\x001969-12-31T23:59:59.999999999Z" in payload
    assert b"\x1b\x00\x00\x00\x00\x00\x00\x001970-01-01T00:00:01.000001Z" in payload


def test_records_follow_each_other_with_counted_or_pinned_sequences(tmp_path: Path) -> None:
    first, last = _episode("first"), _episode("last")
    entries: list[Episode | WalEntry] = [
        first, WalEntry(EntryType.Checkpoint, struct.pack("<Q", 5)),
        WalEntry(EntryType.MemoryDelete, b"first", sequence=99), last]
    path = tmp_path / "new" / wal_file_name(1)
    assert write_wal(path, entries, first_sequence=5, timestamp_ns=42) == 4
    data, at, seen = path.read_bytes(), 0, []
    while at < len(data):
        h = unpack_header(data[at : at + HEADER])
        seen.append((h.sequence, h.entry_type, h.timestamp_ns,
                     data[at + HEADER : at + HEADER + h.payload_size]))
        at += HEADER + h.payload_size
    assert at == len(data)
    assert seen == [
        (5, EntryType.EpisodeStore, 42, encode_episode(first)),
        (6, EntryType.Checkpoint, 42, struct.pack("<Q", 5)),
        (99, EntryType.MemoryDelete, 42, b"first"),
        (100, EntryType.EpisodeStore, 42, encode_episode(last)),
    ]
