"""Encode a batch at a time: the bincode 1.3 payloads behind legacy Memory rows, vectorised.

Each field of every row at once, as large_binary columns joined per row, with Arrow kernels: the
generator writes millions of Episodes this way. The bytes equal :func:`encode_episode`'s for the
same Episode (a test holds them against each other).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.schema import DECAY_FUNCTION_TYPE, DIM
from dualmem_bulk.sources.engram_wal_codec.layout import DECAY_VARIANTS
from dualmem_bulk.timefmt import format_rfc3339

__all__ = ["episode_payloads", "memory_payloads"]

_EMPTY = pa.scalar(b"", pa.large_binary())


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


def episode_payloads(batch: pa.RecordBatch) -> list[bytes]:
    """bincode 1.3 of the ``Episode`` behind each memory row (as :func:`encode_episode`).

    ``batch`` has the legacy schema with its ``episode`` column set; ``id``, ``created_at``,
    ``content``, ``confidence``, ``last_access`` and ``access_count`` give the Episode's ``id``,
    ``when``, ``what``, ``encoding_confidence``, ``last_recall`` and ``recall_count``.
    """
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


def memory_payloads(batch: pa.RecordBatch) -> list[bytes]:
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

