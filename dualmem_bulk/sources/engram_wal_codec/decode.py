"""Decode and check an EpisodeStore payload: Engram's ``Episode`` in bincode 1.3 (fixint, LE).

The decoder checks what Engram's deserialiser checks (lengths, option tags, enum variants,
UTF-8, the 768-float embedding, confidences in [0, 1]) so a record it accepts is one Engram
would replay. Every f32 is kept as its u32 bit pattern: NaN payloads and -0.0 must survive, and
a round trip through a Python float would quiet signalling NaNs.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from dualmem_bulk.schema import DIM

__all__ = [
    "DecodeError",
    "DecodedDecay",
    "DecodedEpisode",
    "DecodedProvenance",
    "decode_episode",
    "read_id",
]

_U64 = struct.Struct("<Q").unpack_from
_U32 = struct.Struct("<I").unpack_from
_EMBEDDING_BYTES = DIM * 4
_ONE_BITS = 0x3F800000  # 1.0f32
_NEG_ZERO_BITS = 0x80000000  # -0.0f32, which Rust's (0.0..=1.0).contains() accepts


class DecodeError(ValueError):
    """A payload that Engram's deserialiser would refuse; ``position`` is within the payload."""

    def __init__(self, position: int, problem: str) -> None:
        super().__init__(f"payload byte {position}: {problem}")
        self.position = position
        self.problem = problem


class DecodedProvenance(NamedTuple):
    """``EmbeddingProvenance`` as read: ``quality_score`` as f32 bits."""

    model_name: str
    model_version: str
    dimension: int
    language: str | None
    created_at: int
    quality_score: int | None
    metadata: dict[str, str]


class DecodedDecay(NamedTuple):
    """``DecayFunction`` as read: the variant name and its fields (f32 as bits), others ``None``."""

    variant: str
    tau_hours: int | None = None
    beta: int | None = None
    consolidation_threshold: int | None = None
    short_term_tau: int | None = None
    long_term_beta: int | None = None
    transition_point: int | None = None


class DecodedEpisode(NamedTuple):
    """An ``Episode`` as read; f32 fields are u32 bit patterns, timestamps RFC 3339 text."""

    id: str
    when: str
    where_location: str | None
    who: list[str] | None
    what: str
    embedding_at: int
    """Byte position in the payload of the 768 little-endian f32 of the embedding."""
    provenance: DecodedProvenance | None
    encoding_confidence: int
    vividness_confidence: int
    reliability_confidence: int
    last_recall: str
    recall_count: int
    decay_rate: int
    decay_function: DecodedDecay | None
    metadata: dict[str, str]


def _short(buf: bytes, pos: int, n: int, what: str) -> DecodeError:
    return DecodeError(pos, f"{what}: needs {n} bytes, {max(len(buf) - pos, 0)} left")


# The readers below test bounds with try/except (free when nothing is raised in Python 3.11)
# and build error texts only on failure: they run a dozen times per Episode.


def _u32(buf: bytes, pos: int, what: str) -> int:
    try:
        return int(_U32(buf, pos)[0])
    except struct.error:
        raise _short(buf, pos, 4, what) from None


def _u64(buf: bytes, pos: int, what: str) -> int:
    try:
        return int(_U64(buf, pos)[0])
    except struct.error:
        raise _short(buf, pos, 8, what) from None


def _tag(buf: bytes, pos: int, what: str) -> bool:
    """An Option tag: bincode writes 0 for None and 1 for Some; anything else is an error."""
    try:
        tag = buf[pos]
    except IndexError:
        raise _short(buf, pos, 1, f"{what} option tag") from None
    if tag > 1:
        raise DecodeError(pos, f"{what}: option tag {tag}, expected 0 or 1")
    return tag == 1


def _string(buf: bytes, pos: int, what: str) -> tuple[str, int]:
    """A u64-length-prefixed UTF-8 string and the position after it."""
    try:
        n = _U64(buf, pos)[0]
    except struct.error:
        raise _short(buf, pos, 8, f"{what} length") from None
    start = pos + 8
    end = start + n
    if end > len(buf):
        raise _short(buf, start, n, what)
    try:
        return buf[start:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise DecodeError(start + exc.start, f"{what}: invalid UTF-8") from None


def _string_map(buf: bytes, pos: int, what: str) -> tuple[dict[str, str], int]:
    """A ``HashMap<String, String>``; a repeated key overwrites, as a HashMap insert does."""
    n = _u64(buf, pos, f"{what} length")
    pos += 8
    out: dict[str, str] = {}
    for _ in range(n):
        key, pos = _string(buf, pos, what + " key")
        out[key], pos = _string(buf, pos, what + " value")
    return out, pos


def _confidence(buf: bytes, pos: int, what: str) -> int:
    """A ``Confidence`` as f32 bits; Engram refuses values outside [0, 1] and NaN."""
    bits = _u32(buf, pos, what)
    if bits > _ONE_BITS and bits != _NEG_ZERO_BITS:
        value = struct.unpack("<f", bits.to_bytes(4, "little"))[0]
        raise DecodeError(pos, f"{what} {value} (bits {bits:#010x}) is outside [0, 1]")
    return bits


def read_id(payload: bytes) -> str:
    """The first bincode field of an EpisodeStore payload: the Episode id."""
    return _string(payload, 0, "id")[0]


def _provenance(buf: bytes, pos: int) -> tuple[DecodedProvenance, int]:
    name, pos = _string(buf, pos, "provenance model name")
    version, pos = _string(buf, pos, "provenance model version")
    dimension = _u64(buf, pos, "provenance dimension")
    language = None
    if _tag(buf, pos + 8, "provenance language"):
        language, pos = _string(buf, pos + 9, "provenance language")
    else:
        pos += 9
    created_at = _u64(buf, pos, "provenance created_at")
    quality = None
    if _tag(buf, pos + 8, "provenance quality_score"):
        quality = _u32(buf, pos + 9, "provenance quality_score")
        pos += 4
    metadata, pos = _string_map(buf, pos + 9, "provenance metadata")
    return DecodedProvenance(name, version, dimension, language, created_at, quality, metadata), pos


def _decay_function(buf: bytes, pos: int) -> tuple[DecodedDecay, int]:
    index = _u32(buf, pos, "decay_function variant")
    pos += 4
    if index == 0:
        return DecodedDecay("Exponential", tau_hours=_u32(buf, pos, "tau_hours")), pos + 4
    if index == 1:
        return DecodedDecay("PowerLaw", beta=_u32(buf, pos, "beta")), pos + 4
    if index == 2:
        threshold = _u64(buf, pos, "consolidation_threshold")
        return DecodedDecay("TwoComponent", consolidation_threshold=threshold), pos + 8
    if index == 3:
        return DecodedDecay(
            "Hybrid",
            short_term_tau=_u32(buf, pos, "short_term_tau"),
            long_term_beta=_u32(buf, pos + 4, "long_term_beta"),
            transition_point=_u64(buf, pos + 8, "transition_point"),
        ), pos + 16
    raise DecodeError(pos - 4, f"decay_function variant {index}, expected 0..3")


def decode_episode(payload: bytes) -> DecodedEpisode:
    """Decode and check an EpisodeStore payload; trailing bytes are allowed, as in bincode 1.3."""
    buf = payload
    id_, pos = _string(buf, 0, "id")
    when, pos = _string(buf, pos, "when")
    where = None
    if _tag(buf, pos, "where_location"):
        where, pos = _string(buf, pos + 1, "where_location")
    else:
        pos += 1
    who = None
    if _tag(buf, pos, "who"):
        who = []
        pos += 9
        for _ in range(_u64(buf, pos - 8, "who length")):
            name, pos = _string(buf, pos, "who item")
            who.append(name)
    else:
        pos += 1
    what, pos = _string(buf, pos, "what")
    dim = _u64(buf, pos, "embedding length")
    if dim != DIM:
        raise DecodeError(pos, f"embedding has {dim} values, expected {DIM}")
    embedding_at = pos + 8
    pos = embedding_at + _EMBEDDING_BYTES
    if pos > len(buf):
        raise _short(buf, embedding_at, _EMBEDDING_BYTES, "embedding")
    provenance = None
    if _tag(buf, pos, "embedding_provenance"):
        provenance, pos = _provenance(buf, pos + 1)
    else:
        pos += 1
    encoding = _confidence(buf, pos, "encoding_confidence")
    vividness = _confidence(buf, pos + 4, "vividness_confidence")
    reliability = _confidence(buf, pos + 8, "reliability_confidence")
    last_recall, pos = _string(buf, pos + 12, "last_recall")
    recall_count = _u32(buf, pos, "recall_count")
    decay_rate = _u32(buf, pos + 4, "decay_rate")
    decay = None
    if _tag(buf, pos + 8, "decay_function"):
        decay, pos = _decay_function(buf, pos + 9)
    else:
        pos += 9
    metadata, _ = _string_map(buf, pos, "metadata")
    return DecodedEpisode(id_, when, where, who, what, embedding_at, provenance, encoding,
                          vividness, reliability, last_recall, recall_count, decay_rate, decay,
                          metadata)
