"""Synthetic legacy Memory rows for trials and benchmarks, deterministic and streaming.

Rows are made in fixed blocks of :data:`BLOCK` rows, each from its own RNG stream seeded by
``(seed, block)``, so row ``i`` depends only on the seed and ``i``: output is identical for any
``batch_size``, and a smaller ``nodes`` gives a prefix of a larger one. Ids are built from the
row index through bijections on 32 bits, so they are unique for any ``nodes`` below 2^32 (and
never equal case-insensitively: each id form has its own shape).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from dualmem_bulk.schema import DIM, EPISODE_TYPE, LEGACY_SCHEMA, PROVENANCE_TYPE

__all__ = [
    "BLOCK",
    "Context",
    "check_arguments",
    "generate_batches",
    "list_offsets",
    "memory_block",
    "sliced",
    "string_maps",
]

BLOCK = 4096
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


class Context:
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


def _ids(ctx: Context, rng: np.random.Generator, start: int, n: int) -> pa.Array:
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


def _embeddings(ctx: Context, rng: np.random.Generator, n: int) -> pa.Array:
    """Unit vectors near one of the seed's cluster centres (cosine to it ~0.7-0.95)."""
    centre = rng.integers(0, _CENTRES, n)
    sigma = rng.uniform(0.012, 0.036, (n, 1)).astype(np.float32)
    vectors = rng.random((n, DIM), dtype=np.float32)  # uniform noise: 5x cheaper than normal
    vectors -= np.float32(0.5)
    vectors *= sigma * np.float32(12**0.5)  # unit variance times sigma
    vectors += ctx.centres[centre]
    vectors /= np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)


def _content(ctx: Context, rng: np.random.Generator, n: int) -> pa.Array:
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


def list_offsets(counts: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.array(offsets)


def string_maps(rng: np.random.Generator, count: np.ndarray) -> pa.MapArray:
    """``count[i]`` (at most 3) entries per row, distinct keys of :data:`_META_KEYS`."""
    keys = np.argsort(rng.random((len(count), len(_META_KEYS))), axis=1)[:, :3]
    keys = keys[np.arange(3)[None, :] < count[:, None]]
    values = rng.integers(0, len(_META_VALUES), len(keys))
    return pa.MapArray.from_arrays(list_offsets(count), pa.array(_META_KEYS).take(pa.array(keys)),
                                   pa.array(_META_VALUES).take(pa.array(values)))


def _provenance(rng: np.random.Generator, n: int) -> pa.Array:
    """~30% present; language and quality_score sometimes null; 0-3 distinct metadata keys."""
    present = rng.random(n) < 0.3
    absent = ~present
    metadata = string_maps(rng, np.where(present, rng.integers(0, 4, n), 0))
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


def memory_block(ctx: Context, seed: int, block: int) -> pa.RecordBatch:
    """Rows ``[block * BLOCK, (block + 1) * BLOCK)``, from their own RNG stream."""
    rng = np.random.default_rng([seed, 0, block])
    n = BLOCK
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
        _ids(ctx, rng, block * BLOCK, n),
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


def check_arguments(nodes: int, seed: int, batch_size: int) -> None:
    if not 0 <= nodes < 1 << 32:
        raise ValueError(f"nodes must be in [0, 2^32), got {nodes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def sliced(make: Callable[[int], pa.RecordBatch], nodes: int,
            batch_size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row, batch) of ``nodes`` rows in batches of ``batch_size``, cut from blocks."""
    cached: tuple[int, pa.RecordBatch] | None = None
    for start in range(0, nodes, batch_size):
        end = min(start + batch_size, nodes)
        pieces = []
        for block in range(start // BLOCK, (end - 1) // BLOCK + 1):
            if cached is None or cached[0] != block:
                cached = (block, make(block))
            lo, hi = max(start, block * BLOCK), min(end, (block + 1) * BLOCK)
            pieces.append(cached[1].slice(lo - block * BLOCK, hi - lo))
        yield start, pa.concat_batches(pieces) if len(pieces) > 1 else pieces[0]


def generate_batches(nodes: int, seed: int, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Yield ``nodes`` synthetic legacy Memory rows as LEGACY_SCHEMA batches of ``batch_size``.

    Example:
        >>> [b.num_rows for b in generate_batches(5, seed=7, batch_size=2)]
        [2, 2, 1]
    """
    check_arguments(nodes, seed, batch_size)
    ctx = Context(seed)
    for _start, batch in sliced(lambda block: memory_block(ctx, seed, block), nodes, batch_size):
        yield batch
