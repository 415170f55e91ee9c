"""Canonical row encoding, per-row BLAKE3-256 checksums and the order-independent table digest.

The encoding (all integers little-endian) is documented in the README so anyone can recompute
it: ``u32 len + utf8(id)``; the 768 embedding floats as raw float32 bits; ``activation`` f32;
``confidence`` f32; ``last_access`` i64 ns; ``access_count`` u64; ``created_at`` i64 ns;
``decay_rate`` f32; content as ``u8 0`` or ``u8 1, u32 len, utf8``; embedding_provenance as
``u8 0`` or ``u8 1`` + model_name, model_version (``u32 len, utf8`` each), dimension u64,
language (``u8 0`` or ``u8 1, u32 len, utf8``), created_at u64, quality_score (``u8 0`` or
``u8 1, f32``), metadata as ``u32 count`` then entries sorted by key bytes, each
``u32 len, key, u32 len, value``.

The table digest is the row count plus the sum of the row checksums read as unsigned 256-bit
little-endian integers, modulo 2^256: order-independent and mergeable across batches, resumed
runs and workers. The kernels here are pure: Arrow in, Arrow out, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from blake3 import blake3

__all__ = ["TableDigest", "encode_rows", "episode_checksums", "identity_digest", "row_checksums"]

_MOD = 1 << 256
_EMPTY = pa.scalar(b"", pa.large_binary())
_ABSENT = pa.scalar(b"\x00", pa.large_binary())
_PRESENT = pa.scalar(b"\x01", pa.large_binary())


@dataclass(frozen=True)
class TableDigest:
    """Row count and the sum of row checksums modulo 2^256; ``+`` merges two digests."""

    rows: int = 0
    total: int = 0

    def __add__(self, other: TableDigest) -> TableDigest:
        return TableDigest(self.rows + other.rows, (self.total + other.total) % _MOD)

    @property
    def hex(self) -> str:
        """The sum as 64 hex digits of its 32-byte little-endian form."""
        return self.total.to_bytes(32, "little").hex()

    @classmethod
    def from_hex(cls, rows: int, value: str) -> TableDigest:
        """Rebuild a digest from its row count and :attr:`hex` form."""
        return cls(rows, int.from_bytes(bytes.fromhex(value), "little"))

    @classmethod
    def of(cls, checksums: pa.Array | pa.ChunkedArray) -> TableDigest:
        """Digest of a fixed_size_binary(32) checksum column.

        Example:
            >>> TableDigest.of(pa.array([b"\\x01" + b"\\x00" * 31] * 3, pa.binary(32))).total
            3
        """
        arr = _contiguous(checksums)
        n = len(arr)
        if n == 0:
            return cls()
        if arr.null_count:
            raise ValueError("checksum column holds nulls")
        data = arr.buffers()[1]
        halves = np.frombuffer(data, dtype="<u4", count=n * 8, offset=arr.offset * 32)
        sums = halves.reshape(n, 8).sum(axis=0, dtype=np.uint64)
        total = sum(int(s) << (32 * i) for i, s in enumerate(sums))
        return cls(n, total % _MOD)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: ``{"rows": n, "digest": hex}``."""
        return {"rows": self.rows, "digest": self.hex}


def identity_digest(checksums: pa.Array | pa.ChunkedArray,
                    episodes: pa.Array | pa.ChunkedArray) -> TableDigest:
    """Digest of the rows' (row checksum, episode checksum) pairs, each pair taken as the XOR
    of its two BLAKE3 values: two tables with the same row-checksum digest have the same
    identity digest only if every row has the same episode checksum (``space``, ``episode``)
    too, unless 256-bit hashes cancel out. Every proof compares it, so no column goes
    unchecked."""
    pairs = np.bitwise_xor(_fixed_rows(checksums), _fixed_rows(episodes))
    return TableDigest.of(pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), len(pairs), [None, pa.py_buffer(pairs.tobytes())]))


def _fixed_rows(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_binary(32) array as an (n, 32) uint8 array."""
    arr = _contiguous(arr)
    return np.frombuffer(arr.buffers()[1], np.uint8, len(arr) * 32,
                         arr.offset * 32).reshape(len(arr), 32)


def _contiguous(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _fixed(values: np.ndarray) -> pa.Array:
    """Little-endian bytes of a 1-D numpy array (or rows of a 2-D uint8 array) as binary."""
    width = values.dtype.itemsize if values.ndim == 1 else values.shape[1]
    buf = pa.py_buffer(np.ascontiguousarray(values).tobytes())
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, buf])
    return fixed.cast(pa.large_binary())


def _join(*parts: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(*parts, _EMPTY)


def _bytes(arr: pa.Array) -> pa.Array:
    return arr.cast(pa.large_binary())


def _prefixed(arr: pa.Array) -> pa.Array:
    """``u32 len + bytes``; nulls stay null."""
    lengths = pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    return _join(_fixed(lengths.astype("<u4")), _bytes(arr))


def _optional(valid: pa.Array, encoded: pa.Array) -> pa.Array:
    """``u8 1 + encoded`` where ``valid``, else ``u8 0``."""
    present = _join(_PRESENT, encoded.fill_null(_EMPTY))
    return pc.if_else(valid, present, _ABSENT)


def _scalar_le(arr: pa.Array, dtype: str) -> pa.Array:
    return _fixed(arr.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype))


def _metadata(maps: pa.Array) -> pa.Array:
    """``u32 count`` then entries sorted by key bytes; a null map encodes as count 0."""
    offsets = maps.offsets.to_numpy()
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(len(maps), dtype=np.int64), counts)
    keys = maps.keys.slice(offsets[0], offsets[-1] - offsets[0])
    values = maps.items.slice(offsets[0], offsets[-1] - offsets[0])
    if maps.null_count:  # a null slot may still span entries: leave them out
        valid = maps.is_valid().to_numpy(zero_copy_only=False)
        counts = np.where(valid, counts, 0)
        keep = pa.array(valid[owner])
        owner, keys, values = owner[valid[owner]], keys.filter(keep), values.filter(keep)
    order = pc.sort_indices(
        pa.table({"owner": owner, "key": keys.cast(pa.large_binary())}),
        sort_keys=[("owner", "ascending"), ("key", "ascending")],
    )
    return _grouped(counts, _join(_prefixed(keys.take(order)), _prefixed(values.take(order))))


def _grouped(counts: np.ndarray, encoded: pa.Array) -> pa.Array:
    """``u32 count`` then the row's encoded elements, concatenated."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    grouped = pa.LargeListArray.from_arrays(pa.array(offsets), encoded)
    return _join(_fixed(counts.astype("<u4")), pc.binary_join(grouped, _EMPTY))


def _string_list(lists: pa.Array) -> pa.Array:
    """``u32 count`` then each string as ``u32 len, utf8``, in order; null lists count 0."""
    offsets = lists.offsets.to_numpy()
    counts = np.diff(offsets)
    values = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
    if lists.null_count:
        valid = lists.is_valid().to_numpy(zero_copy_only=False)
        owner = np.repeat(np.arange(len(lists), dtype=np.int64), counts)
        counts = np.where(valid, counts, 0)
        values = values.filter(pa.array(valid[owner]))
    return _grouped(counts, _prefixed(values).fill_null(_EMPTY))


def _opt_scalar(arr: pa.Array, dtype: str) -> pa.Array:
    return _optional(pc.is_valid(arr), _scalar_le(arr, dtype))


def _opt_text(arr: pa.Array) -> pa.Array:
    return _optional(pc.is_valid(arr), _prefixed(arr))


def episode_checksums(batch: pa.RecordBatch) -> pa.FixedSizeBinaryArray:
    """BLAKE3-256 over the columns the row checksum leaves out (``space`` and the Engram-only
    ``episode`` struct), so verification covers what a WAL source carries as well.

    Encoding: ``space`` and ``where_location`` as optional strings; ``who`` optional
    (``u32 count``, strings in order); the three f32 fields and each decay-function field
    optional (``u8 0`` or ``u8 1`` + little-endian bits); the decay variant as a string;
    ``metadata`` as in the row checksum (entries sorted by key).
    """
    episode, space = batch.column("episode"), batch.column("space")
    if len(episode) and episode.null_count == len(episode):  # a legacy source: no episodes,
        spaces = pc.dictionary_encode(space, null_encoding="encode")  # so hash each space once
        once = _episode_checksums(spaces.dictionary, pa.nulls(len(spaces.dictionary),
                                                               episode.type))
        return once.take(spaces.indices)
    return _episode_checksums(space, episode)


def _episode_checksums(space: pa.Array, episode: pa.Array) -> pa.FixedSizeBinaryArray:
    def field(name: str, of: pa.Array = episode) -> pa.Array:
        return pc.struct_field(of, name)

    decay = field("decay_function")
    decay_body = _join(
        _prefixed(field("variant", decay).fill_null("")),
        *(_opt_scalar(field(name, decay), dtype) for name, dtype in (
            ("tau_hours", "<f4"), ("beta", "<f4"), ("consolidation_threshold", "<u8"),
            ("short_term_tau", "<f4"), ("long_term_beta", "<f4"), ("transition_point", "<u8"),
        )),
    )
    body = _join(
        _opt_text(field("where_location")),
        _optional(pc.is_valid(field("who")), _string_list(field("who"))),
        *(_opt_scalar(field(name), "<f4") for name in (
            "vividness_confidence", "reliability_confidence", "decay_rate")),
        _optional(pc.is_valid(decay), decay_body),
        _metadata(field("metadata")),
    )
    return _hash_rows(_join(_opt_text(space), _optional(pc.is_valid(episode), body)))


def _provenance(prov: pa.Array) -> pa.Array:
    def field(name: str) -> pa.Array:
        return pc.struct_field(prov, name)

    language = field("language")
    quality = field("quality_score")
    body = _join(
        _prefixed(field("model_name").fill_null("")),
        _prefixed(field("model_version").fill_null("")),
        _scalar_le(field("dimension"), "<u8"),
        _optional(pc.is_valid(language), _prefixed(language)),
        _scalar_le(field("created_at"), "<u8"),
        _optional(pc.is_valid(quality), _scalar_le(quality, "<f4")),
        _metadata(field("metadata")),
    )
    return _optional(pc.is_valid(prov), body)


def _embedding_bytes(emb: pa.Array) -> np.ndarray:
    """The embedding's float32 bits as an (n, 3072) uint8 view, respecting slicing."""
    width = emb.type.list_size
    values = emb.values.slice(emb.offset * width, len(emb) * width)
    floats = np.frombuffer(values.buffers()[1], dtype="<f4", count=len(values),
                           offset=values.offset * 4)
    return floats.view(np.uint8).reshape(len(emb), width * 4)


_FIXED_DTYPE = np.dtype(
    [
        ("activation", "<f4"),
        ("confidence", "<f4"),
        ("last_access", "<i8"),
        ("access_count", "<u8"),
        ("created_at", "<i8"),
        ("decay_rate", "<f4"),
    ]
)


def _single_batch(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    if isinstance(batch, pa.Table):
        return batch.combine_chunks().to_batches()[0] if batch.num_rows else \
            pa.RecordBatch.from_pylist([], schema=batch.schema)
    return batch


def _parts(batch: pa.RecordBatch) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """The encoding in three parts: id, embedding bytes (a zero-copy view), everything after."""
    n = batch.num_rows
    fixed = np.empty(n, dtype=_FIXED_DTYPE)
    for name in _FIXED_DTYPE.names or ():
        col = batch.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        fixed[name] = col.to_numpy(zero_copy_only=False)
    content = batch.column("content")
    tail = _join(
        _fixed(fixed.view(np.uint8).reshape(n, _FIXED_DTYPE.itemsize)),
        _optional(pc.is_valid(content), _prefixed(content)),
        _provenance(batch.column("embedding_provenance")),
    )
    return _prefixed(batch.column("id")), _embedding_bytes(batch.column("embedding")), tail


def encode_rows(batch: pa.RecordBatch | pa.Table) -> pa.LargeBinaryArray:
    """The canonical encoding of every row of a legacy-schema batch (one binary value per row).

    Only the legacy Memory fields are encoded, so a DualMemoryNode batch rebuilt to legacy form
    encodes to the same bytes as its source row.
    """
    head, emb, tail = _parts(_single_batch(batch))
    return _join(head, _fixed(emb), tail)


def _offsets(arr: pa.Array) -> list[int]:
    """A large_binary array's value offsets (``len + 1`` of them), respecting slicing."""
    offsets: list[int] = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + 1,
                                       offset=arr.offset * 8).tolist()
    return offsets


def _data(arr: pa.Array) -> memoryview:
    """A large_binary array's value bytes (zero-copy)."""
    return memoryview(arr.buffers()[2]) if len(arr) and arr.buffers()[2] else memoryview(b"")


def _views(arr: pa.Array) -> list[memoryview]:
    """Per-row zero-copy views of a large_binary array's values."""
    data = _data(arr)
    return [data[start:end] for start, end in pairwise(_offsets(arr))]


def row_checksums(batch: pa.RecordBatch | pa.Table) -> pa.FixedSizeBinaryArray:
    """BLAKE3-256 of each row's canonical encoding, as fixed_size_binary(32).

    Each row's three parts are joined into one buffer before hashing: BLAKE3 hashes a 3.4 KB
    input's whole 1 KiB chunks in parallel (SIMD) only when it gets them in one update, which
    makes the copy cheaper than feeding the parts separately (4.9 against 8.5 us a row).
    """
    head, emb, tail = _parts(_single_batch(batch))
    n, width = len(head), emb.shape[1]
    heads, tails = _offsets(head), _offsets(tail)
    head_data, emb_data, tail_data = _data(head), emb.reshape(-1).data, _data(tail)
    embs = range(0, (n + 1) * width, width)
    join = b"".join
    out = join([blake3(join((head_data[h0:h1], emb_data[e0:e1], tail_data[t0:t1]))).digest()
                for h0, h1, e0, e1, t0, t1
                in zip(heads[:-1], heads[1:], embs[:-1], embs[1:], tails[:-1], tails[1:],
                       strict=True)])
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, pa.py_buffer(out)])


def _hash_rows(encoded: pa.Array) -> pa.FixedSizeBinaryArray:
    out = b"".join(blake3(row).digest() for row in _views(encoded))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), len(encoded),
                                                [None, pa.py_buffer(out)])
