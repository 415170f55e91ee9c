"""Arrow columns of decoded Episodes, mapped the way ``Memory::from_episode`` maps them.

``activation = confidence = encoding_confidence``, ``content = what``, ``created_at = when``,
``last_access = last_recall``, ``access_count = recall_count``, ``decay_rate = 0.1``; the
Episode-only fields go into the ``episode`` struct. f32 values travel as u32 bits into numpy and
are viewed as float32, so every bit pattern (NaN payloads, -0.0) arrives unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from dualmem_bulk.schema import (
    DECAY_FUNCTION_TYPE,
    DIM,
    EMBEDDING_TYPE,
    EPISODE_TYPE,
    LEGACY_SCHEMA,
    PROVENANCE_TYPE,
    TIMESTAMP_TYPE,
)
from dualmem_bulk.sources import ROW_COLUMN
from dualmem_bulk.sources.engram_wal_codec import DecodedDecay, DecodedEpisode, DecodedProvenance

__all__ = ["BATCH_SCHEMA", "episode_batch"]

BATCH_SCHEMA = LEGACY_SCHEMA.append(pa.field(ROW_COLUMN, pa.int64(), nullable=False))
"""The legacy schema plus ``_row``: what every WAL batch carries."""

_MEMORY_DECAY_RATE = np.float32(0.1)
_METADATA_TYPE = PROVENANCE_TYPE.field("metadata").type


def _f32(bits: Sequence[int | None]) -> pa.Array:
    """float32 from u32 bit patterns; ``None`` is null."""
    mask = np.fromiter((b is None for b in bits), dtype=bool, count=len(bits))
    raw = np.fromiter((b or 0 for b in bits), dtype=np.uint32, count=len(bits))
    return pa.array(raw.view(np.float32), mask=mask if mask.any() else None)


def _offsets(lengths: Sequence[int]) -> pa.Array:
    out = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=out[1:])
    return pa.array(out)


def _null_mask(values: Sequence[object]) -> pa.Array | None:
    mask = [v is None for v in values]
    return pa.array(mask, pa.bool_()) if any(mask) else None


def _maps(maps: Sequence[dict[str, str]]) -> pa.Array:
    keys = [k for m in maps for k in m]
    items = [v for m in maps for v in m.values()]
    return pa.MapArray.from_arrays(
        _offsets([len(m) for m in maps]),
        pa.array(keys, pa.utf8()),
        pa.array(items, pa.utf8()),
        type=_METADATA_TYPE,
    )


def _struct(children: list[pa.Array], type_: pa.StructType, values: Sequence[object]) -> pa.Array:
    return pa.StructArray.from_arrays(children, fields=list(type_), mask=_null_mask(values))


def _provenance(provs: Sequence[DecodedProvenance | None]) -> pa.Array:
    some = [p or DecodedProvenance("", "", 0, None, 0, None, {}) for p in provs]
    children = [
        pa.array([p.model_name for p in some], pa.utf8()),
        pa.array([p.model_version for p in some], pa.utf8()),
        pa.array([p.dimension for p in some], pa.uint64()),
        pa.array([p.language for p in some], pa.utf8()),
        pa.array([p.created_at for p in some], pa.uint64()),
        _f32([p.quality_score for p in some]),
        _maps([p.metadata for p in some]),
    ]
    return _struct(children, PROVENANCE_TYPE, provs)


def _decay_functions(decays: Sequence[DecodedDecay | None]) -> pa.Array:
    some = [d or DecodedDecay("") for d in decays]
    children = [
        pa.array([d.variant for d in some], pa.utf8()),
        _f32([d.tau_hours for d in some]),
        _f32([d.beta for d in some]),
        pa.array([d.consolidation_threshold for d in some], pa.uint64()),
        _f32([d.short_term_tau for d in some]),
        _f32([d.long_term_beta for d in some]),
        pa.array([d.transition_point for d in some], pa.uint64()),
    ]
    return _struct(children, DECAY_FUNCTION_TYPE, decays)


def _episode(eps: Sequence[DecodedEpisode]) -> pa.Array:
    who = [e.who for e in eps]
    who_list = pa.ListArray.from_arrays(
        _offsets([len(w or ()) for w in who]),
        pa.array([name for w in who for name in w or ()], pa.utf8()),
        type=EPISODE_TYPE.field("who").type,
        mask=_null_mask(who),
    )
    children = [
        pa.array([e.where_location for e in eps], pa.utf8()),
        who_list,
        _f32([e.vividness_confidence for e in eps]),
        _f32([e.reliability_confidence for e in eps]),
        _f32([e.decay_rate for e in eps]),
        _decay_functions([e.decay_function for e in eps]),
        _maps([e.metadata for e in eps]),
    ]
    return pa.StructArray.from_arrays(children, fields=list(EPISODE_TYPE))


def episode_batch(
    space: str,
    episodes: Sequence[DecodedEpisode],
    payloads: Sequence[bytes],
    created_at_ns: np.ndarray,
    last_access_ns: np.ndarray,
    rows: np.ndarray,
) -> pa.RecordBatch:
    """One legacy batch (plus ``_row``) from Episodes, their payloads and pre-parsed times."""
    n = len(episodes)
    vectors = b"".join(
        p[e.embedding_at : e.embedding_at + DIM * 4]
        for e, p in zip(episodes, payloads, strict=True)
    )
    floats = np.frombuffer(vectors, dtype="<f4").astype(np.float32, copy=False)
    confidence = _f32([e.encoding_confidence for e in episodes])
    columns = [
        pa.array([e.id for e in episodes], pa.utf8()),
        pa.FixedSizeListArray.from_arrays(pa.array(floats), type=EMBEDDING_TYPE),
        confidence,
        confidence,
        pa.array(last_access_ns.astype(np.int64, copy=False), TIMESTAMP_TYPE),
        pa.array([e.recall_count for e in episodes], pa.uint64()),
        pa.array(created_at_ns.astype(np.int64, copy=False), TIMESTAMP_TYPE),
        pa.array(np.full(n, _MEMORY_DECAY_RATE)),
        pa.array([e.what for e in episodes], pa.utf8()),
        _provenance([e.provenance for e in episodes]),
        pa.array([space] * n, pa.utf8()),
        _episode(episodes),
        pa.array(rows.astype(np.int64, copy=False)),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=BATCH_SCHEMA)
