"""Write Engram WAL files: Episodes as bincode 1.3 EpisodeStore records behind 64-byte headers.

The inverse of :mod:`dualmem_bulk.sources.engram_wal`, byte for byte what Engram writes, for
tests and for generating trial data roots (``<root>/<space>/wal/wal-<16 hex>.log``). The bytes
come from :mod:`dualmem_bulk.sources.engram_wal_codec`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from dualmem_bulk._fs import atomic_path
from dualmem_bulk.sources.engram_wal_codec import EntryType, Episode, encode_episode, pack_header
from dualmem_bulk.timefmt import format_rfc3339

__all__ = ["WalEntry", "wal_file_name", "write_wal"]


class WalEntry(NamedTuple):
    """A raw record: any entry type and payload (MemoryDelete, Checkpoint, damaged bytes...)."""

    entry_type: int
    payload: bytes
    sequence: int | None = None
    """``None``: one more than the previous record's."""


def wal_file_name(unix_seconds: int) -> str:
    """Engram's WAL file name: ``wal-<unix seconds as 16 hex digits>.log``."""
    return f"wal-{unix_seconds:016x}.log"


def _times_as_text(entries: Iterable[Episode | WalEntry]) -> Iterator[Episode | WalEntry]:
    """Format the int timestamps of Episodes in vectorised chunks (one call per value is slow)."""
    it = iter(entries)
    while chunk := list(islice(it, 1024)):
        ints = {t for e in chunk if isinstance(e, Episode) for t in (e.when, e.last_recall)
                if isinstance(t, int)}
        if not ints:
            yield from chunk
            continue
        keys = list(ints)
        text: dict[int, str] = dict(zip(keys, format_rfc3339(pa.array(keys, pa.int64()))
                                         .to_pylist(), strict=True))
        for e in chunk:
            if isinstance(e, Episode):
                when = text[e.when] if isinstance(e.when, int) else e.when
                recall = text[e.last_recall] if isinstance(e.last_recall, int) else e.last_recall
                e = replace(e, when=when, last_recall=recall)
            yield e


def write_wal(
    path: Path,
    entries: Iterable[Episode | WalEntry],
    *,
    first_sequence: int = 0,
    timestamp_ns: int | None = None,
) -> int:
    """Write a WAL file atomically (temporary name, fsync, rename); return the record count.

    Missing parent folders are created.

    Episodes become EpisodeStore records; sequences count up from ``first_sequence`` unless a
    :class:`WalEntry` pins its own. Header timestamps are ``timestamp_ns`` or the clock.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_wal(Path(d) / wal_file_name(0), [WalEntry(EntryType.Checkpoint, bytes(8))])
        1
    """
    sequence = first_sequence - 1
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        for entry in _times_as_text(entries):
            entry_type: int
            if isinstance(entry, Episode):
                entry_type, payload, pinned = EntryType.EpisodeStore, encode_episode(entry), None
            else:
                entry_type, payload, pinned = entry
            sequence = sequence + 1 if pinned is None else pinned
            stamp = time.time_ns() if timestamp_ns is None else timestamp_ns
            fh.write(pack_header(sequence, stamp, entry_type, payload))
            fh.write(payload)
            count += 1
    return count
