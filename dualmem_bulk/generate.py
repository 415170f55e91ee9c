"""Synthetic legacy Memory data for trials and benchmarks, deterministic and streaming.

Rows are made in fixed blocks of :data:`_BLOCK` rows, each from its own RNG stream seeded by
``(seed, block)``, so row ``i`` depends only on the seed and ``i``: output is identical for any
``batch_size``, and a smaller ``nodes`` gives a prefix of a larger one. Ids are built from the
row index through bijections on 32 bits, so they are unique for any ``nodes`` below 2^32 (and
never equal case-insensitively: each id form has its own shape).

``fmt="engram-wal"`` writes the same rows as an Engram data root: each row becomes the Episode
that ``Memory::from_episode`` turns back into it (:func:`generate_wal_batches` gives those
memories), bincode-encoded for a whole block at once with Arrow kernels, written file by file
through :func:`~dualmem_bulk.sources.engram_wal_writer.write_wal`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dualmem_bulk._fs import atomic_path
from dualmem_bulk.errors import TargetExists, UsageError
from dualmem_bulk.schema import (
    DECAY_FUNCTION_TYPE,
    DIM,
    EPISODE_TYPE,
    LEGACY_SCHEMA,
    PROVENANCE_TYPE,
)
from dualmem_bulk.sources._bincode import DECAY_VARIANTS
from dualmem_bulk.sources.engram_wal_writer import EntryType, WalEntry, wal_file_name, write_wal
from dualmem_bulk.sources.jsonl import write_jsonl
from dualmem_bulk.timefmt import format_rfc3339

__all__ = ["generate_batches", "generate_wal_batches", "write_generated"]

_BLOCK = 4096
_CENTRES = 48
_M32 = np.uint64(0xFFFFFFFF)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_T_LO = 1_546_300_800 * 10**9  # 2019-01-01
_T_HI = 1_748_736_000 * 10**9  # 2025-06-01
_FREE = (
    "note", "user/42/session", "  padded id  ", "日記", "📌 pinned/memo", "Заметка",
    "ملاحظة", "projects/alpha/tasks", "réunion du lundi", "idea 💡", 'a\\b "quoted"',
)
"""Free-form id texts (no ``#``); a free-form id is ``f"{text} #{n}"`` or ``ep_`` + 8 hex."""
_SENTENCES = (  # several scripts, emoji (ZWJ too), combining marks, JSON escapes, U+2028
    "Bought coffee beans, forgot the milk again.", "Meeting moved to Thursday at 10:30.",
    "今天天气很好，我们去公园散步了。", "明日は東京で会議があります。",  # noqa: RUF001
    "기억 통합 실험을 다시 했다.", "Встреча перенесена на следующую неделю.",
    "Привет, мир! Это заметка о памяти.",  # noqa: RUF001
    "مرحبا بالعالم، هذه ملاحظة قصيرة.", "اجتماع الفريق يوم الأحد.",
    "नमस्ते दुनिया, आज की बैठक अच्छी रही।",
    "Καλημέρα κόσμε, σημείωση για αύριο.",  # noqa: RUF001
    "Ideas 💡🚀 for the launch 👩‍👩‍👧‍👦 party 🎉.",
    'She said "ship it" and left; path C:\\temp\\notes.', "Line one.\nLine two.\tTabbed.",
    "Combining marks: e\u0301 a\u0308 n\u0303; separator\u2028here.", "Control \x01 char.",
    "The quick brown fox jumps over the lazy dog.", "Remember to water the plants 🌱.",
)
_MODELS = ("intfloat/multilingual-e5-base", "sentence-transformers/all-mpnet-base-v2",
           "BAAI/bge-base-en-v1.5", "nomic-ai/nomic-embed-text-v1.5")
_VERSIONS = ("1.0.0", "9f2c1e7", "v2", "2024-03-01")
_LANGS = ("en", "de", "fr", "zh", "ja", "ar", "ru", "hi", "es", "ko")
_META_KEYS = ("source", "pipeline", "chunk", "tokenizer", "batch", "ключ", "来源", "emoji 😀", "")
_META_VALUES = ("http", "import", "v1", "42", "", "ok ✅", "chunk-7/12", 'say "hi"')


def _perm32(i: np.ndarray, key: int) -> np.ndarray:
    """A keyed bijection on 32-bit values (add a key, then the lowbias32 mixer)."""
    x = (i + np.uint64(key)) & _M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & _M32
    return x ^ (x >> np.uint64(16))


def _hex(values: np.ndarray, digits: int) -> np.ndarray:
    """Lower-case hex digits of uint64 values as a ``(len, digits)`` uint8 matrix."""
    shifts = np.arange(digits - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    return _HEX[(values[:, None] >> shifts) & np.uint64(15)]  # type: ignore[no-any-return]


def _text(matrix: np.ndarray) -> np.ndarray:
    """Rows of an ASCII uint8 matrix as a numpy unicode array."""
    return np.ascontiguousarray(matrix).view(f"S{matrix.shape[1]}").ravel().astype(str)


class _Context:
    """What every block shares: keys, cluster centres and the content corpus (from the seed)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])
        self.keys = [int(k) for k in rng.integers(0, 1 << 32, 4)]
        centres = rng.standard_normal((_CENTRES, DIM), dtype=np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        order = rng.integers(0, len(_SENTENCES), 4000)
        corpus = " ".join(_SENTENCES[k] for k in order)
        self.corpus = corpus.encode("utf-8")
        lead = (np.frombuffer(self.corpus, dtype=np.uint8) & 0xC0) != 0x80  # starts a character
        self.char_at = np.append(np.flatnonzero(lead), len(self.corpus))


def _ids(ctx: _Context, rng: np.random.Generator, start: int, n: int) -> pa.Array:
    """~70% ``mem_`` + hex, ~15% UUIDv4 (a third upper-case), ~15% free-form. The part that
    makes each id unique is a keyed bijection of the row index: ``mem_``'s hex, the UUID's last
    8 hex digits, the free-form ``#n`` or ``ep_`` hex; the forms cannot collide with each other.
    """
    i = np.arange(start, start + n, dtype=np.uint64)
    kind = _perm32(i, ctx.keys[0]) % np.uint64(100)
    mem = _text(np.hstack([np.tile(np.frombuffer(b"mem_", np.uint8), (n, 1)),
                           _hex(_perm32(i, ctx.keys[1]), 8)]))
    random = rng.integers(0, np.iinfo(np.uint64).max, (2, n), np.uint64, endpoint=True)
    parts = np.hstack([_hex(random[0], 16), _hex(random[1], 16)])
    tail = _hex(_perm32(i, ctx.keys[2]), 8)
    dash = np.full((n, 1), ord("-"), np.uint8)
    variant = _HEX[8 + rng.integers(0, 4, (n, 1))]
    four = np.full((n, 1), ord("4"), np.uint8)
    uuid = _text(np.hstack([parts[:, :8], dash, parts[:, 8:12], dash, four, parts[:, 12:15],
                            dash, variant, parts[:, 16:19], dash, parts[:, 19:23], tail]))
    upper = (kind % np.uint64(3)) == 0
    uuid = np.where(upper, np.char.upper(uuid), uuid)
    out = np.where(kind < 70, mem, uuid).astype(object)
    free = np.flatnonzero(kind >= 85)
    token = _perm32(i[free], ctx.keys[3])
    template = rng.integers(0, len(_FREE) + 1, len(free))
    out[free] = [f"ep_{t:08x}" if k == len(_FREE) else f"{_FREE[k]} #{t}"
                 for k, t in zip(template.tolist(), token.tolist(), strict=True)]
    return pa.array(out, pa.utf8())


def _embeddings(ctx: _Context, rng: np.random.Generator, n: int) -> pa.Array:
    """Unit vectors near one of the seed's cluster centres (cosine to it ~0.7-0.95)."""
    centre = rng.integers(0, _CENTRES, n)
    sigma = rng.uniform(0.012, 0.036, (n, 1)).astype(np.float32)
    vectors = rng.random((n, DIM), dtype=np.float32)  # uniform noise: 5x cheaper than normal
    vectors -= np.float32(0.5)
    vectors *= sigma * np.float32(12**0.5)  # unit variance times sigma
    vectors += ctx.centres[centre]
    vectors /= np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)


def _content(ctx: _Context, rng: np.random.Generator, n: int) -> pa.Array:
    """Slices of the mixed-script corpus: ~5% null, ~3% empty, mostly short, rarely ~20 KB."""
    kind = rng.random(n)
    chars = np.select(
        [kind < 0.08, kind < 0.75, kind < 0.985],
        [0, rng.integers(10, 200, n), rng.integers(200, 1500, n)],
        default=rng.integers(1500, 12_000, n),
    )
    first = rng.integers(0, len(ctx.char_at) - 1 - chars)
    begin, end = ctx.char_at[first], ctx.char_at[first + chars]
    present = kind >= 0.05
    end = np.where(present, end, begin)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(end - begin, out=offsets[1:])
    corpus = ctx.corpus
    data = b"".join([corpus[b:e] for b, e in zip(begin.tolist(), end.tolist(), strict=True)])
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.Array.from_buffers(pa.large_utf8(), n, [
        validity, pa.py_buffer(offsets), pa.py_buffer(data)]).cast(pa.utf8())


def _offsets(counts: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.array(offsets)


def _string_maps(rng: np.random.Generator, count: np.ndarray) -> pa.MapArray:
    """``count[i]`` (at most 3) entries per row, distinct keys of :data:`_META_KEYS`."""
    keys = np.argsort(rng.random((len(count), len(_META_KEYS))), axis=1)[:, :3]
    keys = keys[np.arange(3)[None, :] < count[:, None]]
    values = rng.integers(0, len(_META_VALUES), len(keys))
    return pa.MapArray.from_arrays(_offsets(count), pa.array(_META_KEYS).take(pa.array(keys)),
                                   pa.array(_META_VALUES).take(pa.array(values)))


def _provenance(rng: np.random.Generator, n: int) -> pa.Array:
    """~30% present; language and quality_score sometimes null; 0-3 distinct metadata keys."""
    present = rng.random(n) < 0.3
    absent = ~present
    metadata = _string_maps(rng, np.where(present, rng.integers(0, 4, n), 0))
    quality = rng.uniform(0.5, 1.0, n).astype(np.float32)
    children = [
        pa.array(_MODELS).take(pa.array(rng.integers(0, len(_MODELS), n))),
        pa.array(_VERSIONS).take(pa.array(rng.integers(0, len(_VERSIONS), n))),
        pa.array(np.full(n, DIM, dtype=np.uint64)),
        pa.array(np.array(_LANGS)[rng.integers(0, len(_LANGS), n)],
                 mask=absent | (rng.random(n) < 0.3)),
        pa.array(rng.integers(1_672_531_200, 1_748_736_000, n).astype(np.uint64)),
        pa.array(quality, mask=absent | (rng.random(n) < 0.3)),
        metadata,
    ]
    return pa.StructArray.from_arrays(children, fields=list(PROVENANCE_TYPE),
                                      mask=pa.array(absent))


def _block(ctx: _Context, seed: int, block: int) -> pa.RecordBatch:
    """Rows ``[block * _BLOCK, (block + 1) * _BLOCK)``, from their own RNG stream."""
    rng = np.random.default_rng([seed, 0, block])
    n = _BLOCK
    unit = rng.beta(2.0, 2.0, (2, n)).astype(np.float32)
    unit[:, rng.random(n) < 0.01] = 1.0
    unit[0, rng.random(n) < 0.01] = 0.0
    created = rng.integers(_T_LO, _T_HI, n)
    precision = np.array([1, 1, 1, 1, 1, 1, 1, 10**3, 10**6, 10**9])[rng.integers(0, 10, n)]
    created -= created % precision
    gap = (rng.exponential(30 * 86_400, n) * 1e9).astype(np.int64) + rng.integers(0, 10**9, n)
    last = created + np.where(rng.random(n) < 0.1, 0, gap)
    tier = rng.random(n)
    access = np.select(
        [tier < 0.2, tier < 0.8, tier < 0.95, tier < 0.99],
        [np.zeros(n, np.uint64), rng.geometric(0.05, n).astype(np.uint64),
         rng.integers(0, 10**6, n).astype(np.uint64), rng.integers(0, 1 << 32, n, np.uint64)],
        default=rng.integers(0, np.iinfo(np.uint64).max, n, np.uint64, endpoint=True),
    )
    decay = np.where(rng.random(n) < 0.85, np.float32(0.1),
                     (10.0 ** rng.uniform(-3.0, 0.0, n)).astype(np.float32))
    columns = [
        _ids(ctx, rng, block * _BLOCK, n),
        _embeddings(ctx, rng, n),
        pa.array(unit[0]),
        pa.array(unit[1]),
        pa.array(last, pa.int64()).cast(LEGACY_SCHEMA.field("last_access").type),
        pa.array(access, pa.uint64()),
        pa.array(created, pa.int64()).cast(LEGACY_SCHEMA.field("created_at").type),
        pa.array(decay.astype(np.float32)),
        _content(ctx, rng, n),
        _provenance(rng, n),
        pa.nulls(n, pa.utf8()),
        pa.nulls(n, EPISODE_TYPE),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=LEGACY_SCHEMA)


def _check(nodes: int, seed: int, batch_size: int) -> None:
    if not 0 <= nodes < 1 << 32:
        raise ValueError(f"nodes must be in [0, 2^32), got {nodes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def _sliced(make: Callable[[int], pa.RecordBatch], nodes: int,
            batch_size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row, batch) of ``nodes`` rows in batches of ``batch_size``, cut from blocks."""
    cached: tuple[int, pa.RecordBatch] | None = None
    for start in range(0, nodes, batch_size):
        end = min(start + batch_size, nodes)
        pieces = []
        for block in range(start // _BLOCK, (end - 1) // _BLOCK + 1):
            if cached is None or cached[0] != block:
                cached = (block, make(block))
            lo, hi = max(start, block * _BLOCK), min(end, (block + 1) * _BLOCK)
            pieces.append(cached[1].slice(lo - block * _BLOCK, hi - lo))
        yield start, pa.concat_batches(pieces) if len(pieces) > 1 else pieces[0]


def generate_batches(nodes: int, seed: int, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Yield ``nodes`` synthetic legacy Memory rows as LEGACY_SCHEMA batches of ``batch_size``.

    Example:
        >>> [b.num_rows for b in generate_batches(5, seed=7, batch_size=2)]
        [2, 2, 1]
    """
    _check(nodes, seed, batch_size)
    ctx = _Context(seed)
    for _start, batch in _sliced(lambda block: _block(ctx, seed, block), nodes, batch_size):
        yield batch


# ---------------------------------------------------------------------------------------------
# Engram data roots: the same rows as Episodes, as Engram's WAL holds them

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
_EMPTY = pa.scalar(b"", pa.large_binary())


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
    who = pa.ListArray.from_arrays(_offsets(count), pa.array(_PEOPLE).take(pa.array(names)),
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
        _string_maps(rng, np.where(rng.random(n) < 0.5, rng.integers(0, 4, n), 0)),
    ]
    return pa.StructArray.from_arrays(children, fields=list(EPISODE_TYPE))


def _wal_block(ctx: _Context, seed: int, block: int) -> pa.RecordBatch:
    """A block's rows as ``Memory::from_episode`` makes them from the Episodes written for them.

    From the legacy row: id, embedding, ``encoding_confidence`` (= activation = confidence),
    ``when``, ``last_recall``, ``what`` (a null content becomes ``""``: ``what`` is a String),
    ``recall_count`` (the access count modulo 2^32: a u32), provenance, and the Episode's own
    decay rate; the Memory's ``decay_rate`` is 0.1. ``space`` is set by the caller.
    """
    base = _block(ctx, seed, block)
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
    _check(nodes, seed, batch_size)
    ctx = _Context(seed)
    layout = _layout(nodes, seed)
    names = pa.array([name for name, _, _ in layout])
    ends = np.array([end for _, _, end in layout])
    space = LEGACY_SCHEMA.get_field_index("space")
    for start, batch in _sliced(lambda block: _wal_block(ctx, seed, block), nodes, batch_size):
        rows = np.arange(start, start + batch.num_rows)
        yield batch.set_column(space, "space",
                               names.take(pa.array(np.searchsorted(ends, rows, side="right"))))


# The bincode encoder: each field of every row at once, as large_binary columns joined per row.


def _binary(matrix: np.ndarray, lengths: np.ndarray | None = None) -> pa.Array:
    """Rows of a uint8 matrix as large_binary values, each cut to ``lengths[i]`` bytes."""
    n, width = matrix.shape
    if lengths is None:
        data = np.ascontiguousarray(matrix)
        offsets = np.arange(n + 1, dtype=np.int64) * width
    else:
        data = matrix[np.arange(width)[None, :] < lengths[:, None]]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), n,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _le(values: pa.Array | np.ndarray, dtype: str) -> np.ndarray:
    """Little-endian bytes of each value (nulls as 0) as an ``(n, size)`` uint8 matrix."""
    if isinstance(values, pa.Array):
        values = values.fill_null(0).to_numpy(zero_copy_only=False)
    raw = np.ascontiguousarray(values, dtype=dtype)
    return raw.view(np.uint8).reshape(len(raw), raw.itemsize)


def _only(valid: np.ndarray, values: pa.Array) -> pa.Array:
    """``values`` with the rows that are not ``valid`` made null (left out of the join)."""
    return values if valid.all() else pc.if_else(pa.array(valid), values,
                                                 pa.scalar(None, values.type))


def _valid(values: pa.Array) -> np.ndarray:
    return np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _str(values: pa.Array) -> pa.Array:
    """bincode ``String``: u64 byte length, then the UTF-8 bytes; nulls stay null."""
    raw = values.cast(pa.large_binary())
    return pc.binary_join_element_wise(_binary(_le(pc.binary_length(raw), "<u8")), raw, _EMPTY)


def _option(valid: np.ndarray, body: list[pa.Array]) -> list[pa.Array]:
    """bincode ``Option``: tag byte 0, or 1 and the value (the body's parts)."""
    return [_binary(valid.astype(np.uint8)[:, None]), *(_only(valid, p) for p in body)]


def _seq(offsets: pa.Array, items: pa.Array, valid: np.ndarray) -> pa.Array:
    """bincode ``Vec``/``HashMap``: u64 count, then the items (encoded), per row."""
    bounds = np.asarray(offsets.to_numpy(), dtype=np.int64)
    lists = pa.LargeListArray.from_arrays(pa.array(bounds), items)
    body = pc.binary_join(lists, _EMPTY)
    return _only(valid, pc.binary_join_element_wise(_binary(_le(np.diff(bounds), "<u8")), body,
                                                    _EMPTY))


def _map(maps: pa.MapArray) -> pa.Array:
    items = pc.binary_join_element_wise(_str(maps.keys), _str(maps.items), _EMPTY)
    return _seq(maps.offsets, items, _valid(maps))


def _time(values: pa.Array) -> pa.Array:
    """chrono's serde form of a ``DateTime<Utc>``: its RFC 3339 text, as a bincode String."""
    return _str(format_rfc3339(values))


def _embedding(batch: pa.RecordBatch) -> pa.Array:
    """Engram's ``[f32; 768]`` serde helper: u64 768, then the floats."""
    floats = np.asarray(batch.column("embedding").flatten().to_numpy(), dtype="<f4")
    matrix = np.empty((batch.num_rows, 8 + DIM * 4), dtype=np.uint8)
    matrix[:, :8] = np.frombuffer(np.uint64(DIM).astype("<u8").tobytes(), dtype=np.uint8)
    matrix[:, 8:] = floats.view(np.uint8).reshape(batch.num_rows, DIM * 4)
    return _binary(matrix)


def _provenance_parts(prov: pa.StructArray) -> list[pa.Array]:
    field = prov.field
    language, quality = field("language"), field("quality_score")
    return _option(_valid(prov), [
        _str(field("model_name")),
        _str(field("model_version")),
        _binary(_le(field("dimension"), "<u8")),
        *_option(_valid(language), [_str(language)]),
        _binary(_le(field("created_at"), "<u8")),
        *_option(_valid(quality), [_binary(_le(quality, "<f4"))]),
        _map(field("metadata")),
    ])


def _decay_function(decay: pa.StructArray) -> pa.Array:
    """``Option<DecayFunction>``: tag, then the u32 variant index and that variant's fields."""
    n = len(decay)
    variant = decay.field("variant").to_numpy(zero_copy_only=False)
    index = np.full(n, -1)
    for i, name in enumerate(DECAY_VARIANTS):
        index[variant == name] = i
    index[~_valid(decay)] = -1
    out = np.zeros((n, 21), dtype=np.uint8)
    out[:, 0] = index >= 0
    out[:, 1:5] = _le(np.maximum(index, 0), "<u4")
    fields = {name: decay.field(name) for name in DECAY_FUNCTION_TYPE.names}
    exp, power, two, hybrid = (index == i for i in range(4))
    out[exp, 5:9] = _le(fields["tau_hours"], "<f4")[exp]
    out[power, 5:9] = _le(fields["beta"], "<f4")[power]
    out[two, 5:13] = _le(fields["consolidation_threshold"], "<u8")[two]
    out[hybrid, 5:9] = _le(fields["short_term_tau"], "<f4")[hybrid]
    out[hybrid, 9:13] = _le(fields["long_term_beta"], "<f4")[hybrid]
    out[hybrid, 13:21] = _le(fields["transition_point"], "<u8")[hybrid]
    lengths = np.select([index < 0, index == 2, index == 3], [1, 13, 21], default=9)
    return _binary(out, lengths)


def _join(parts: list[pa.Array]) -> list[bytes]:
    return pc.binary_join_element_wise(*parts, _EMPTY,  # type: ignore[no-any-return]
                                       null_handling="skip").to_pylist()


def _episode_payloads(batch: pa.RecordBatch) -> list[bytes]:
    """bincode 1.3 of the ``Episode`` behind each memory row (see engram_wal_writer)."""
    ep = batch.column("episode")
    where, who = ep.field("where_location"), ep.field("who")
    f32 = [_le(batch.column("confidence"), "<f4"), _le(ep.field("vividness_confidence"), "<f4"),
           _le(ep.field("reliability_confidence"), "<f4")]
    return _join([
        _str(batch.column("id")),
        _time(batch.column("created_at")),
        *_option(_valid(where), [_str(where)]),
        *_option(_valid(who), [_seq(who.offsets, _str(who.values), _valid(who))]),
        _str(batch.column("content")),
        _embedding(batch),
        *_provenance_parts(batch.column("embedding_provenance")),
        _binary(np.hstack(f32)),
        _time(batch.column("last_access")),
        _binary(np.hstack([_le(batch.column("access_count"), "<u4"),
                           _le(ep.field("decay_rate"), "<f4")])),
        _decay_function(ep.field("decay_function")),
        _map(ep.field("metadata")),
    ])


def _memory_payloads(batch: pa.RecordBatch) -> list[bytes]:
    """bincode 1.3 of the ``Memory`` of each row, as a MemoryUpdate record carries it."""
    content = batch.column("content")
    return _join([
        _str(batch.column("id")),
        _embedding(batch),
        _binary(np.hstack([_le(batch.column(n), "<f4") for n in ("activation", "confidence")])),
        _time(batch.column("last_access")),
        _binary(_le(batch.column("access_count"), "<u8")),
        _time(batch.column("created_at")),
        _binary(_le(batch.column("decay_rate"), "<f4")),
        *_option(_valid(content), [_str(content)]),
        *_provenance_parts(batch.column("embedding_provenance")),
    ])


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
        self.ctx, self.seed = _Context(seed), seed
        self.block = -1
        self.records: list[list[WalEntry]] = []

    def _load(self, block: int) -> None:
        batch = _wal_block(self.ctx, self.seed, block)
        self.block = block
        self.records = [[WalEntry(EntryType.EpisodeStore, p)] for p in _episode_payloads(batch)]
        pick = np.random.default_rng([self.seed, 4, block]).random(batch.num_rows)
        updated = np.flatnonzero(pick < 0.004)
        later = batch.take(pa.array(updated))
        later = _replace(later, activation=pa.array(np.zeros(len(updated), np.float32)),
                         last_access=pc.add(later.column("last_access"), _HOUR),
                         access_count=pc.add(later.column("access_count"), _ONE))
        for row, payload in zip(updated.tolist(), _memory_payloads(later), strict=True):
            self.records[row].append(WalEntry(EntryType.MemoryUpdate, payload))
        again = np.flatnonzero((pick >= 0.004) & (pick < 0.006))
        dup = batch.take(pa.array(again))
        dup = _replace(dup, content=pc.binary_join_element_wise(dup.column("content"),
                                                                "(stored again)", " "))
        for row, payload in zip(again.tolist(), _episode_payloads(dup), strict=True):
            self.records[row].append(WalEntry(EntryType.EpisodeStore, payload))

    def entries(self, start: int, end: int) -> Iterator[WalEntry]:
        """The records of rows ``[start, end)`` as one WAL file holds them, with a Checkpoint
        (payload: the previous record's sequence) every :data:`_CHECKPOINT_EVERY` records."""
        written = 0
        for row in range(start, end):
            block, at = divmod(row, _BLOCK)
            if block != self.block:
                self._load(block)
            for entry in self.records[at]:
                if written and written % _CHECKPOINT_EVERY == 0:
                    yield WalEntry(EntryType.Checkpoint, struct.pack("<Q", written - 1))
                    written += 1
                yield entry
                written += 1


def _write_engram_root(path: Path, nodes: int, seed: int) -> int:
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


def write_generated(path: Path, nodes: int, seed: int,
                    fmt: Literal["parquet", "jsonl", "engram-wal"] = "parquet",
                    batch_size: int = 65_536) -> int:
    """Write ``nodes`` generated rows to ``path`` atomically; return the rows written.

    ``parquet``: row groups of ``batch_size``; ``jsonl``: serde JSON lines; ``engram-wal``: an
    Engram data root (``path`` a new or empty directory) holding the rows of
    :func:`generate_wal_batches` as EpisodeStore records, over a few memory spaces and several
    ``wal-<16 hex>.log`` files per space, with some MemoryUpdate, duplicate and Checkpoint
    records that replay ignores. Sequences restart at 0 in every file, as Engram's do.
    """
    if fmt == "engram-wal":
        _check(nodes, seed, batch_size)
        return _write_engram_root(path, nodes, seed)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; --format {fmt} writes one file: give its name")
    batches = generate_batches(nodes, seed, batch_size)
    if fmt == "jsonl":
        return write_jsonl(batches, path)
    if fmt != "parquet":
        raise ValueError(f"fmt must be 'parquet', 'jsonl' or 'engram-wal', got {fmt!r}")
    rows = 0
    # Dictionary encoding is tried and abandoned on every float page: off, writing is ~2.5x faster.
    with atomic_path(path) as tmp, pq.ParquetWriter(
        tmp, LEGACY_SCHEMA, use_dictionary=False
    ) as writer:
        for batch in batches:
            writer.write_batch(batch, row_group_size=batch_size)
            rows += batch.num_rows
    return rows
