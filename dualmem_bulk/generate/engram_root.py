"""Synthetic Engram data roots: the generated rows as Episodes, as Engram's WAL holds them.

Each row becomes the Episode that ``Memory::from_episode`` turns back into it
(:func:`generate_wal_batches` gives those memories), bincode-encoded for a whole block at once
(:func:`~dualmem_bulk.sources.engram_wal_codec.episode_payloads`), written file by file through
:func:`~dualmem_bulk.sources.engram_wal_writer.write_wal`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk._fs import atomic_path
from dualmem_bulk.errors import TargetExists
from dualmem_bulk.generate.memories import (
    BLOCK,
    Context,
    check_arguments,
    list_offsets,
    memory_block,
    sliced,
    string_maps,
)
from dualmem_bulk.schema import DECAY_FUNCTION_TYPE, EPISODE_TYPE, LEGACY_SCHEMA
from dualmem_bulk.sources.engram_wal_codec import (
    DECAY_VARIANTS,
    EntryType,
    episode_payloads,
    memory_payloads,
)
from dualmem_bulk.sources.engram_wal_writer import WalEntry, wal_file_name, write_wal

__all__ = ["generate_wal_batches", "write_engram_root"]

_SPACE_NAMES = ("team_alpha", "research", "user_42", "ops-notes", "project_x")
_FILE_EPISODES = 16_384
"""Episodes per WAL file at most (~54 MB; Engram starts a new file as its log grows)."""
_CHECKPOINT_EVERY = 4_096
"""Records between two Checkpoint records in a file."""
_PLACES = ("home", "office, 3rd floor", "Berlin", "東京駅", "São Paulo", "Café de Flore",
           "kitchen 🍳", "Москва", "lab/room 101", "")
_PEOPLE = ("Alice", "Bob", "Chen Wei", "李雷", "Ана", "محمد", "Priya", "Zoë", "O'Brien", "🤖 bot",
           "Dr. \"Q\"", "")
_MEMORY_DECAY_RATE = np.float32(0.1)


def _decay_functions(rng: np.random.Generator, n: int) -> pa.StructArray:
    """~25% none, then Exponential, PowerLaw, TwoComponent and Hybrid, each with its fields."""
    kind = rng.choice(5, n, p=[0.25, 0.3, 0.2, 0.1, 0.15]) - 1  # -1: no decay function

    def f32(low: float, high: float, variant: int) -> pa.Array:
        return pa.array(rng.uniform(low, high, n).astype(np.float32), mask=kind != variant)

    def u64(low: int, high: int, variant: int) -> pa.Array:
        return pa.array(rng.integers(low, high, n).astype(np.uint64), mask=kind != variant)

    children = [
        pa.array(np.array(["", *DECAY_VARIANTS])[kind + 1]),
        f32(1.0, 720.0, 0),
        f32(0.1, 1.0, 1),
        u64(1, 50, 2),
        f32(0.5, 48.0, 3),
        f32(0.1, 0.9, 3),
        u64(3_600, 30 * 86_400, 3),
    ]
    return pa.StructArray.from_arrays(children, fields=list(DECAY_FUNCTION_TYPE),
                                      mask=pa.array(kind < 0))


def _episodes(rng: np.random.Generator, n: int, decay_rate: pa.Array) -> pa.StructArray:
    """The Episode-only fields: place, people, confidences, decay function, metadata."""
    who_present = rng.random(n) < 0.35
    count = np.where(who_present, rng.integers(0, 4, n), 0)  # Some([]) too
    names = np.argsort(rng.random((n, len(_PEOPLE))), axis=1)[:, :3]
    names = names[np.arange(3)[None, :] < count[:, None]]
    who = pa.ListArray.from_arrays(list_offsets(count), pa.array(_PEOPLE).take(pa.array(names)),
                                   type=EPISODE_TYPE.field("who").type,
                                   mask=pa.array(~who_present))
    unit = rng.beta(2.0, 2.0, (2, n)).astype(np.float32)
    unit[:, rng.random(n) < 0.02] = 1.0
    children = [
        pa.array(np.array(_PLACES, dtype=object)[rng.integers(0, len(_PLACES), n)], pa.utf8(),
                 mask=rng.random(n) >= 0.4),
        who,
        pa.array(unit[0]),
        pa.array(unit[1]),
        decay_rate,
        _decay_functions(rng, n),
        string_maps(rng, np.where(rng.random(n) < 0.5, rng.integers(0, 4, n), 0)),
    ]
    return pa.StructArray.from_arrays(children, fields=list(EPISODE_TYPE))


def _wal_block(ctx: Context, seed: int, block: int) -> pa.RecordBatch:
    """A block's rows as ``Memory::from_episode`` makes them from the Episodes written for them.

    From the legacy row: id, embedding, ``encoding_confidence`` (= activation = confidence),
    ``when``, ``last_recall``, ``what`` (a null content becomes ``""``: ``what`` is a String),
    ``recall_count`` (the access count modulo 2^32: a u32), provenance, and the Episode's own
    decay rate; the Memory's ``decay_rate`` is 0.1. ``space`` is set by the caller.
    """
    base = memory_block(ctx, seed, block)
    rng = np.random.default_rng([seed, 2, block])
    n = base.num_rows
    confidence = base.column("confidence")
    recall = np.asarray(base.column("access_count").to_numpy()) % np.uint64(1 << 32)
    columns = [
        base.column("id"),
        base.column("embedding"),
        confidence,
        confidence,
        base.column("last_access"),
        pa.array(recall, pa.uint64()),
        base.column("created_at"),
        pa.array(np.full(n, _MEMORY_DECAY_RATE)),
        base.column("content").fill_null(""),
        base.column("embedding_provenance"),
        pa.nulls(n, pa.utf8()),
        _episodes(rng, n, base.column("decay_rate")),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=LEGACY_SCHEMA)


def _layout(nodes: int, seed: int) -> list[tuple[str, int, int]]:
    """(space, first row, end row): ``default`` (~60% of rows) and one or two other spaces,
    contiguous ranges in space-name order, the order a replay yields them."""
    rng = np.random.default_rng([seed, 3])
    picked = rng.choice(len(_SPACE_NAMES), 1 + int(rng.integers(0, 2)), replace=False)
    others = [_SPACE_NAMES[i] for i in picked.tolist()]
    counts = {name: nodes * 2 // 5 // len(others) for name in others}
    counts["default"] = nodes - sum(counts.values())
    out, start = [], 0
    for name in sorted(counts):
        out.append((name, start, start + counts[name]))
        start += counts[name]
    return out


def generate_wal_batches(nodes: int, seed: int,
                         batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The memories a replay of ``write_generated(root, nodes, seed, fmt="engram-wal")`` yields,
    in the order the WAL reader yields them, as LEGACY_SCHEMA batches (``space`` and ``episode``
    set). The same rows as :func:`generate_batches`, in the form an Engram WAL can hold.

    Example:
        >>> [b.column("space")[0].as_py() for b in generate_wal_batches(3, seed=7)]
        ['default']
    """
    check_arguments(nodes, seed, batch_size)
    ctx = Context(seed)
    layout = _layout(nodes, seed)
    names = pa.array([name for name, _, _ in layout])
    ends = np.array([end for _, _, end in layout])
    space = LEGACY_SCHEMA.get_field_index("space")
    for start, batch in sliced(lambda block: _wal_block(ctx, seed, block), nodes, batch_size):
        rows = np.arange(start, start + batch.num_rows)
        yield batch.set_column(space, "space",
                               names.take(pa.array(np.searchsorted(ends, rows, side="right"))))


_HOUR = pa.scalar(3_600 * 10**9, pa.duration("ns"))
_ONE = pa.scalar(1, pa.uint64())


def _replace(batch: pa.RecordBatch, **columns: pa.Array) -> pa.RecordBatch:
    for name, values in columns.items():
        batch = batch.set_column(batch.schema.get_field_index(name), name, values)
    return batch


class _WalRecords:
    """The WAL records of the generated rows, encoded a block at a time (rows only move on).

    Per row: its EpisodeStore; for ~0.4% of rows then a MemoryUpdate (a later recall: one more
    access, last access an hour on, activation 0.0 as Engram serialises it), which replay
    ignores; for ~0.2% a second EpisodeStore of the same id with other content, which replay
    skips as a duplicate.
    """

    def __init__(self, seed: int) -> None:
        self.ctx, self.seed = Context(seed), seed
        self.block = -1
        self.records: list[list[WalEntry]] = []

    def _load(self, block: int) -> None:
        batch = _wal_block(self.ctx, self.seed, block)
        self.block = block
        self.records = [[WalEntry(EntryType.EpisodeStore, p)] for p in episode_payloads(batch)]
        pick = np.random.default_rng([self.seed, 4, block]).random(batch.num_rows)
        updated = np.flatnonzero(pick < 0.004)
        later = batch.take(pa.array(updated))
        later = _replace(later, activation=pa.array(np.zeros(len(updated), np.float32)),
                         last_access=pc.add(later.column("last_access"), _HOUR),
                         access_count=pc.add(later.column("access_count"), _ONE))
        for row, payload in zip(updated.tolist(), memory_payloads(later), strict=True):
            self.records[row].append(WalEntry(EntryType.MemoryUpdate, payload))
        again = np.flatnonzero((pick >= 0.004) & (pick < 0.006))
        dup = batch.take(pa.array(again))
        dup = _replace(dup, content=pc.binary_join_element_wise(dup.column("content"),
                                                                "(stored again)", " "))
        for row, payload in zip(again.tolist(), episode_payloads(dup), strict=True):
            self.records[row].append(WalEntry(EntryType.EpisodeStore, payload))

    def entries(self, start: int, end: int) -> Iterator[WalEntry]:
        """The records of rows ``[start, end)`` as one WAL file holds them, with a Checkpoint
        (payload: the previous record's sequence) every :data:`_CHECKPOINT_EVERY` records."""
        written = 0
        for row in range(start, end):
            block, at = divmod(row, BLOCK)
            if block != self.block:
                self._load(block)
            for entry in self.records[at]:
                if written and written % _CHECKPOINT_EVERY == 0:
                    yield WalEntry(EntryType.Checkpoint, struct.pack("<Q", written - 1))
                    written += 1
                yield entry
                written += 1


def write_engram_root(path: Path, nodes: int, seed: int) -> int:
    """An Engram data root at ``path`` (new, or an empty directory), written atomically."""
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise TargetExists(path)
    records = _WalRecords(seed)
    first = 1_700_000_000 + int(np.random.default_rng([seed, 5]).integers(0, 365 * 86_400))
    with atomic_path(path) as tmp:
        tmp.mkdir()
        for space, start, end in _layout(nodes, seed):
            per_file = max(1, min(_FILE_EPISODES, -(-(end - start) // 3)))  # 3+ files a space
            for k, lo in enumerate(range(start, max(end, start + 1), per_file)):
                seconds = first + k * 21_600  # a new file every 6 hours
                write_wal(tmp / space / "wal" / wal_file_name(seconds),
                          records.entries(lo, min(lo + per_file, end)),
                          timestamp_ns=seconds * 10**9)
    return nodes
