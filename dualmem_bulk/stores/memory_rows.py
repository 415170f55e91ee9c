"""How a legacy row is laid out in a SQLite table (the live :mod:`.memory_store`, the pending
writes of :mod:`.pending_store`): the columns, and the conversion of Arrow batches to SQLite
parameter rows and back. Every field round-trips bit for bit (the float32 scalars as their bit
patterns, ``access_count`` as its int64 two's complement, the provenance as JSON text)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import DIM, EPISODE_TYPE, LEGACY_SCHEMA, PROVENANCE_TYPE, TIMESTAMP_TYPE

__all__ = ["COLUMNS", "EMBEDDING_BYTES", "batch_of", "embedding_bytes", "float_bits", "rows_of"]

EMBEDDING_BYTES = DIM * 4
"""Size of an embedding BLOB: 768 little-endian float32."""

COLUMNS = ("id, embedding, activation, confidence, last_access, access_count, created_at, "
           "decay_rate, content, embedding_provenance")
"""The table's columns in the order of a parameter row (:func:`rows_of`, :func:`batch_of`)."""


def embedding_bytes(column: pa.Array) -> bytes:
    """The embeddings of ``column`` (fixed-size lists of float32) as one little-endian buffer."""
    values = column.values.slice(column.offset * DIM, len(column) * DIM)
    return bytes(np.asarray(values.to_numpy(zero_copy_only=False), dtype="<f4").tobytes())


def float_bits(column: pa.Array) -> list[int]:
    """The float32 bit pattern of every value of ``column`` (how SQLite keeps them)."""
    bits: list[int] = np.asarray(column.to_numpy(zero_copy_only=False),
                                 dtype="<f4").view("<u4").tolist()
    return bits


def _prov_json(prov: pa.StructArray) -> list[str | None]:
    quality = prov.field("quality_score")
    q_bits = np.asarray(quality.fill_null(0).to_numpy(zero_copy_only=False),
                        dtype="<f4").view("<u4").tolist()
    out: list[str | None] = []
    for i, value in enumerate(prov.to_pylist()):
        if value is None:
            out.append(None)
            continue
        value["quality_score"] = q_bits[i] if quality[i].is_valid else None
        value["metadata"] = [list(kv) for kv in value["metadata"] or ()]
        out.append(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return out


def rows_of(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    """SQLite parameter rows of a LEGACY_SCHEMA batch."""
    emb = embedding_bytes(batch.column("embedding"))
    ts = {n: batch.column(n).cast(pa.int64()).to_pylist() for n in ("last_access", "created_at")}
    counts = np.asarray(batch.column("access_count").to_numpy(zero_copy_only=False),
                        dtype=np.uint64).view(np.int64).tolist()
    bits = {n: float_bits(batch.column(n)) for n in ("activation", "confidence", "decay_rate")}
    prov = _prov_json(batch.column("embedding_provenance"))
    return [
        (ident, emb[i * EMBEDDING_BYTES:(i + 1) * EMBEDDING_BYTES], bits["activation"][i],
         bits["confidence"][i], ts["last_access"][i], counts[i], ts["created_at"][i],
         bits["decay_rate"][i], content, prov[i])
        for i, (ident, content) in enumerate(zip(batch.column("id").to_pylist(),
                                                 batch.column("content").to_pylist(),
                                                 strict=True))
    ]


def _f32(values: list[int]) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64).astype("<u4").view("<f4"), pa.float32())


def _provenance_array(texts: list[str | None]) -> pa.Array:
    parsed = [None if t is None else json.loads(t) for t in texts]
    q_bits = [0 if p is None or p["quality_score"] is None else p["quality_score"]
              for p in parsed]
    q_valid = [p is not None and p["quality_score"] is not None for p in parsed]
    for p in parsed:
        if p is not None:
            p["quality_score"] = None
            p["metadata"] = [tuple(kv) for kv in p["metadata"]]
    struct = pa.array(parsed, PROVENANCE_TYPE)
    quality = pa.array(np.asarray(q_bits, dtype=np.int64).astype("<u4").view("<f4"),
                       pa.float32(), mask=~np.asarray(q_valid, dtype=bool))
    children = [quality if f.name == "quality_score" else struct.field(f.name)
                for f in PROVENANCE_TYPE]
    return pa.StructArray.from_arrays(children, fields=list(PROVENANCE_TYPE),
                                      mask=struct.is_null())


def batch_of(rows: list[tuple[Any, ...]], where: str) -> pa.RecordBatch:
    """A LEGACY_SCHEMA batch of ``memories`` rows (in ``COLUMNS`` order)."""
    n = len(rows)
    cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 10
    for ident, blob in zip(cols[0], cols[1], strict=True):
        if not isinstance(blob, bytes) or len(blob) != EMBEDDING_BYTES:
            size = len(blob) if isinstance(blob, bytes) else type(blob).__name__
            raise SourceError(where, f"memory {ident!r}: embedding is {size}, expected "
                                     f"{EMBEDDING_BYTES} bytes")
    emb = np.frombuffer(b"".join(cols[1]), dtype="<f4")
    columns = {
        "id": pa.array(cols[0], pa.utf8()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb, pa.float32()), DIM),
        "activation": _f32(list(cols[2])),
        "confidence": _f32(list(cols[3])),
        "last_access": pa.array(cols[4], pa.int64()).cast(TIMESTAMP_TYPE),
        "access_count": pa.array(np.asarray(cols[5], dtype=np.int64).view(np.uint64)),
        "created_at": pa.array(cols[6], pa.int64()).cast(TIMESTAMP_TYPE),
        "decay_rate": _f32(list(cols[7])),
        "content": pa.array(cols[8], pa.utf8()),
        "embedding_provenance": _provenance_array(list(cols[9])),
        "space": pa.nulls(n, pa.utf8()),
        "episode": pa.nulls(n, EPISODE_TYPE),
    }
    return pa.RecordBatch.from_arrays([columns[f.name] for f in LEGACY_SCHEMA],
                                      schema=LEGACY_SCHEMA)
