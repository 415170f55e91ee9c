"""Pure conversion kernels: legacy Memory batch -> DualMemoryNode batch, and the exact inverse.

Every migrated node is an Episode: ``episode_id = id``, ``strength = activation``,
``consolidation_score = 0.0``, Concept fields null, every legacy field carried bit-exact. The
node UUID is the id itself when the id is a canonical UUID string (any case), otherwise
``uuid5(uuid5(NAMESPACE_URL, "engram:memory-id"), id)``, so re-running gives the same ids.

The derived scalar columns are computed with Polars expressions; the carried columns (768-float
embeddings, nested provenance and episode structs) pass through as Arrow arrays without a copy,
since routing them through Polars would only copy them and lose the exact Arrow types.
"""

from __future__ import annotations

import functools
import hashlib
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.checksum import row_checksums
from dualmem_bulk.schema import (
    CARRIED,
    DUAL_SCHEMA,
    EMBEDDING_TYPE,
    LEGACY_SCHEMA,
    NODE_TYPE_TYPE,
)

__all__ = ["ID_NAMESPACE", "node_uuids", "to_dual", "to_legacy"]

ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "engram:memory-id")
"""Namespace of the UUIDv5 given to ids that are not UUIDs: 2710fbed-f5c0-51e6-a3f9-153748fa6550."""

_UUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_HEX_POSITIONS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])
_NIBBLE = np.zeros(256, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
    _NIBBLE[ord(chr(_c).upper())] = _i
_NODE_TYPES = pa.array(["Episode", "Concept"], pa.utf8())



def _parse_canonical(ids: pa.Array) -> np.ndarray:
    """16 bytes per canonical UUID string (all exactly 36 ASCII bytes), vectorized."""
    if len(ids) == 0:
        return np.empty((0, 16), dtype=np.uint8)
    ids = ids.cast(pa.large_utf8())
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64, count=len(ids) + 1,
                            offset=ids.offset * 8)
    raw = np.frombuffer(ids.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    nibbles = _NIBBLE[raw.reshape(len(ids), 36)[:, _HEX_POSITIONS]]
    return (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]


def _uuid5(ids: pa.Array) -> np.ndarray:
    """RFC 4122 UUIDv5 of each id under :data:`ID_NAMESPACE` (SHA-1 has no vectorized form)."""
    prefix = ID_NAMESPACE.bytes
    digests = b"".join(hashlib.sha1(prefix + s.encode()).digest()[:16] for s in ids.to_pylist())
    out = np.frombuffer(digests, dtype=np.uint8).reshape(len(ids), 16).copy()
    out[:, 6] = (out[:, 6] & 0x0F) | 0x50
    out[:, 8] = (out[:, 8] & 0x3F) | 0x80
    return out


def node_uuids(ids: pa.Array | pa.ChunkedArray) -> pa.FixedSizeBinaryArray:
    """The deterministic node UUID of each legacy id, as fixed_size_binary(16).

    Example:
        >>> node_uuids(pa.array(["mem_1a2b3c4d"])).to_pylist()[0].hex()
        '4900999cb77150208cb0daa82f133832'
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    canonical = pc.match_substring_regex(ids, _UUID_RE).fill_null(False)
    mask = canonical.to_numpy(zero_copy_only=False)
    out = np.empty((len(ids), 16), dtype=np.uint8)
    out[mask] = _parse_canonical(ids.filter(canonical))
    out[~mask] = _uuid5(ids.filter(pc.invert(canonical)))
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(ids), [None, pa.py_buffer(out.tobytes())]
    )


@functools.lru_cache(maxsize=2)
def _no_centroids(n: int) -> pa.Array:
    """``n`` null centroids. Arrow allocates the 768 floats of every null slot (12 MiB for
    4,096 rows), so batches of the same length share one immutable array."""
    return pa.nulls(n, EMBEDDING_TYPE)


def _derived(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The Episode columns, computed with Polars from the id and activation columns."""
    import polars as pl  # here, not at the top: a run's driver never needs Polars (26 MiB)

    frame = pl.from_arrow(pa.RecordBatch.from_arrays(
        [batch.column("id"), batch.column("activation")], names=["id", "activation"]
    ))
    assert isinstance(frame, pl.DataFrame)
    derived = frame.select(
        pl.col("id").alias("episode_id"),
        pl.col("activation").alias("strength"),
        pl.lit(0.0, pl.Float32).alias("consolidation_score"),
    ).to_arrow()
    return pa.RecordBatch.from_arrays(
        [c.combine_chunks() for c in derived.columns], names=derived.column_names
    )


def to_dual(batch: pa.RecordBatch, checksums: pa.Array | None = None,
            uuids: pa.Array | None = None) -> pa.RecordBatch:
    """Convert one legacy-schema batch to a DualMemoryNode batch (every node an Episode).

    ``checksums`` are the batch's row checksums when already known (they are computed over the
    legacy fields, which the conversion carries unchanged); otherwise they are computed here.
    ``uuids``, likewise, are its node UUIDs when known.
    """
    n = batch.num_rows
    derived = _derived(batch)
    node_type = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), _NODE_TYPES)
    columns: dict[str, pa.Array] = {
        "id": node_uuids(batch.column("id")) if uuids is None else uuids,
        "node_type": node_type.cast(NODE_TYPE_TYPE),
        "episode_id": derived.column("episode_id"),
        "strength": derived.column("strength"),
        "consolidation_score": derived.column("consolidation_score"),
        "centroid": _no_centroids(n),
        "coherence": pa.nulls(n, pa.float32()),
        "instance_count": pa.nulls(n, pa.uint32()),
        "formation_time": pa.nulls(n, DUAL_SCHEMA.field("formation_time").type),
        **{name: batch.column(name) for name in CARRIED},
        "checksum": row_checksums(batch) if checksums is None else checksums,
    }
    return pa.RecordBatch.from_arrays(
        [columns[f.name].cast(f.type) for f in DUAL_SCHEMA], schema=DUAL_SCHEMA
    )


def to_legacy(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Rebuild the legacy Memory rows of a DualMemoryNode batch of Episodes, bit for bit.

    Raises ``ValueError`` naming the first Concept row: a Concept has no legacy Memory form.
    """
    kinds = batch.column("node_type").cast(pa.utf8())
    concept = pc.not_equal(kinds, "Episode").fill_null(True)
    if pc.any(concept).as_py():
        first = pc.index(concept, True).as_py()
        raise ValueError(f"row {first} is a {kinds[first]} node; only Episodes map back to Memory")
    columns = {"id": batch.column("episode_id"), **{n: batch.column(n) for n in CARRIED}}
    return pa.RecordBatch.from_arrays(
        [columns[f.name].cast(f.type) for f in LEGACY_SCHEMA], schema=LEGACY_SCHEMA
    )
