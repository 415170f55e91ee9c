"""Encode one Episode at a time: Engram's ``Episode`` as bincode 1.3 (fixint, little-endian).

Byte for byte what Engram serialises, for tests and for the WAL writer. Every f32 field accepts
``np.float32`` so exact bit patterns (NaN payloads, -0.0) can be written.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dualmem_bulk.schema import DIM
from dualmem_bulk.sources.engram_wal_codec.layout import DECAY_VARIANTS
from dualmem_bulk.timefmt import format_rfc3339

__all__ = ["DecayFunction", "EmbeddingProvenance", "Episode", "encode_episode"]

F32 = float | np.float32
"""An f32 field: a Python float, or an ``np.float32`` to pin its exact bits."""


@dataclass(frozen=True, kw_only=True)
class EmbeddingProvenance:
    """Engram's ``EmbeddingProvenance``; ``created_at`` in unix seconds."""

    model_name: str
    model_version: str
    dimension: int = DIM
    language: str | None = None
    created_at: int = 0
    quality_score: F32 | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DecayFunction:
    """Engram's ``DecayFunction``: ``variant`` names it; set only that variant's fields."""

    variant: str
    tau_hours: F32 = 0.0
    beta: F32 = 0.0
    consolidation_threshold: int = 0
    short_term_tau: F32 = 0.0
    long_term_beta: F32 = 0.0
    transition_point: int = 0


@dataclass(frozen=True, kw_only=True)
class Episode:
    """Engram's ``Episode``; timestamps as RFC 3339 text or int nanoseconds since the epoch."""

    id: str
    when: str | int
    what: str
    embedding: np.ndarray
    """768 float32 values (any array-like of 768 numbers; written as little-endian f32)."""
    where_location: str | None = None
    who: Sequence[str] | None = None
    embedding_provenance: EmbeddingProvenance | None = None
    encoding_confidence: F32 = 1.0
    vividness_confidence: F32 = 1.0
    reliability_confidence: F32 = 1.0
    last_recall: str | int | None = None
    """Defaults to ``when``."""
    recall_count: int = 0
    decay_rate: F32 = 0.05
    decay_function: DecayFunction | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


def _f32(value: F32) -> bytes:
    return bytes(np.float32(value).astype("<f4").tobytes())


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _time(value: str | int) -> bytes:
    if isinstance(value, int):
        value = str(format_rfc3339(pa.array([value], pa.int64()))[0].as_py())
    return _str(value)


def _map(entries: Mapping[str, str]) -> bytes:
    return struct.pack("<Q", len(entries)) + b"".join(
        _str(k) + _str(v) for k, v in entries.items()
    )


def _provenance(p: EmbeddingProvenance) -> bytes:
    out = [_str(p.model_name), _str(p.model_version), struct.pack("<Q", p.dimension)]
    out.append(b"\x00" if p.language is None else b"\x01" + _str(p.language))
    out.append(struct.pack("<Q", p.created_at))
    out.append(b"\x00" if p.quality_score is None else b"\x01" + _f32(p.quality_score))
    out.append(_map(p.metadata))
    return b"".join(out)


def _decay(d: DecayFunction) -> bytes:
    if d.variant not in DECAY_VARIANTS:
        raise ValueError(f"decay function variant {d.variant!r}, expected one of {DECAY_VARIANTS}")
    index = DECAY_VARIANTS.index(d.variant)
    body = (
        _f32(d.tau_hours),
        _f32(d.beta),
        struct.pack("<Q", d.consolidation_threshold),
        _f32(d.short_term_tau) + _f32(d.long_term_beta) + struct.pack("<Q", d.transition_point),
    )[index]
    return struct.pack("<I", index) + body


def encode_episode(ep: Episode) -> bytes:
    """The bincode 1.3 (fixint, little-endian) bytes of an Episode, as Engram serialises it."""
    embedding = np.asarray(ep.embedding, dtype="<f4")
    if embedding.shape != (DIM,):
        raise ValueError(f"episode {ep.id!r}: embedding shape {embedding.shape}, expected ({DIM},)")
    out = [_str(ep.id), _time(ep.when)]
    out.append(b"\x00" if ep.where_location is None else b"\x01" + _str(ep.where_location))
    if ep.who is None:
        out.append(b"\x00")
    else:
        out.append(b"\x01" + struct.pack("<Q", len(ep.who)) + b"".join(_str(w) for w in ep.who))
    out += [_str(ep.what), struct.pack("<Q", DIM), embedding.tobytes()]
    prov = ep.embedding_provenance
    out.append(b"\x00" if prov is None else b"\x01" + _provenance(prov))
    out += [_f32(ep.encoding_confidence), _f32(ep.vividness_confidence)]
    out += [_f32(ep.reliability_confidence), _time(ep.when if ep.last_recall is None else
                                                   ep.last_recall)]
    out += [struct.pack("<I", ep.recall_count), _f32(ep.decay_rate)]
    decay = ep.decay_function
    out.append(b"\x00" if decay is None else b"\x01" + _decay(decay))
    out.append(_map(ep.metadata))
    return b"".join(out)

