"""Engram's WAL record header and the bincode 1.3 (fixint, little-endian) ``Episode`` payload.

A record is a 64-byte header plus ``payload_size`` bytes. Header, little-endian: magic u32
``0xDEADBEEF`` @0, sequence u64 @4, timestamp u64 ns @12, entry_type u32 @20, payload_size u32
@24, payload_crc u32 (CRC32C of the payload) @28, header_crc u32 @32 (CRC32C of bytes 0..32 and
36..56, i.e. the first 52 header bytes with header_crc left out), 20 reserved zero bytes @36,
8 zero padding bytes @56. The decoder checks what Engram's deserialiser checks (lengths, option
tags, enum variants, UTF-8, the 768-float embedding, confidences in [0, 1]) so a record it
accepts is one Engram would replay. Every f32 is kept as its u32 bit pattern: NaN payloads and
-0.0 must survive, and a round trip through a Python float would quiet signalling NaNs.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from crc32c import crc32c

from dualmem_bulk.schema import DIM

__all__ = [
    "DECAY_VARIANTS",
    "HEADER_SIZE",
    "MAGIC",
    "DecayFunction",
    "DecodeError",
    "DecodedEpisode",
    "EntryType",
    "Header",
    "Provenance",
    "decode_episode",
    "entry_type_name",
    "header_crc",
    "pack_header",
    "read_id",
    "unpack_header",
]

MAGIC = 0xDEADBEEF
HEADER_SIZE = 64
_HEADER = struct.Struct("<IQQIIII")  # magic .. header_crc: the first 36 bytes
_U64 = struct.Struct("<Q").unpack_from
_U32 = struct.Struct("<I").unpack_from
_EMBEDDING_BYTES = DIM * 4
_ONE_BITS = 0x3F800000  # 1.0f32
_NEG_ZERO_BITS = 0x80000000  # -0.0f32, which Rust's (0.0..=1.0).contains() accepts


class EntryType(IntEnum):
    """Engram's WAL entry types; any other number is replayed as an EpisodeStore."""

    EpisodeStore = 1
    MemoryUpdate = 2
    MemoryDelete = 3
    Consolidation = 4
    Checkpoint = 5
    CompactionMarker = 6


def entry_type_name(entry_type: int) -> str:
    """The report name of an entry type; unknown numbers count as ``EpisodeStore``."""
    try:
        return EntryType(entry_type).name
    except ValueError:
        return EntryType.EpisodeStore.name


class Header(NamedTuple):
    """A decoded record header (the CRCs are checked by the caller)."""

    magic: int
    sequence: int
    timestamp_ns: int
    entry_type: int
    payload_size: int
    payload_crc: int
    header_crc: int


def header_crc(header: bytes) -> int:
    """CRC32C of a 64-byte header's first 52 bytes with the header_crc field left out."""
    return crc32c(header[36:56], crc32c(header[:32]))


def unpack_header(header: bytes) -> Header:
    """Decode the fields of a 64-byte header."""
    return Header._make(_HEADER.unpack_from(header))


def pack_header(sequence: int, timestamp_ns: int, entry_type: int, payload: bytes) -> bytes:
    """Build the 64-byte header Engram writes in front of ``payload``."""
    head = _HEADER.pack(MAGIC, sequence, timestamp_ns, entry_type, len(payload), crc32c(payload), 0)
    header = head + bytes(HEADER_SIZE - len(head))
    crc = header_crc(header)
    return header[:32] + crc.to_bytes(4, "little") + header[36:]


class DecodeError(ValueError):
    """A payload that Engram's deserialiser would refuse; ``position`` is within the payload."""

    def __init__(self, position: int, problem: str) -> None:
        super().__init__(f"payload byte {position}: {problem}")
        self.position = position
        self.problem = problem


class Provenance(NamedTuple):
    """``EmbeddingProvenance`` as read: ``quality_score`` as f32 bits."""

    model_name: str
    model_version: str
    dimension: int
    language: str | None
    created_at: int
    quality_score: int | None
    metadata: dict[str, str]


class DecayFunction(NamedTuple):
    """``DecayFunction``: the variant name and its fields (f32 as bits), the others ``None``."""

    variant: str
    tau_hours: int | None = None
    beta: int | None = None
    consolidation_threshold: int | None = None
    short_term_tau: int | None = None
    long_term_beta: int | None = None
    transition_point: int | None = None


DECAY_VARIANTS = ("Exponential", "PowerLaw", "TwoComponent", "Hybrid")
"""``DecayFunction`` variants by their bincode index."""


class DecodedEpisode(NamedTuple):
    """An ``Episode`` as read; f32 fields are u32 bit patterns, timestamps RFC 3339 text."""

    id: str
    when: str
    where_location: str | None
    who: list[str] | None
    what: str
    embedding_at: int
    """Byte position in the payload of the 768 little-endian f32 of the embedding."""
    provenance: Provenance | None
    encoding_confidence: int
    vividness_confidence: int
    reliability_confidence: int
    last_recall: str
    recall_count: int
    decay_rate: int
    decay_function: DecayFunction | None
    metadata: dict[str, str]


class _Reader:
    """Cursor over one payload; each read checks bounds and raises :class:`DecodeError`."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def _need(self, n: int, what: str) -> int:
        at = self.pos
        if at + n > self.end:
            raise DecodeError(at, f"{what}: needs {n} bytes, {self.end - at} left")
        self.pos = at + n
        return at

    def u8(self, what: str) -> int:
        return self.buf[self._need(1, what)]

    def u32(self, what: str) -> int:
        return int(_U32(self.buf, self._need(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64(self.buf, self._need(8, what))[0])

    def string(self, what: str) -> str:
        n = self.u64(f"{what} length")
        at = self._need(n, what)
        try:
            return self.buf[at : at + n].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(at + exc.start, f"{what}: invalid UTF-8") from None

    def tag(self, what: str) -> bool:
        at = self.pos
        tag = self.u8(f"{what} option tag")
        if tag > 1:
            raise DecodeError(at, f"{what}: option tag {tag}, expected 0 or 1")
        return tag == 1

    def confidence(self, what: str) -> int:
        at = self.pos
        bits = self.u32(what)
        if bits > _ONE_BITS and bits != _NEG_ZERO_BITS:
            value = struct.unpack("<f", bits.to_bytes(4, "little"))[0]
            raise DecodeError(at, f"{what} {value} (bits {bits:#010x}) is outside [0, 1]")
        return bits

    def string_map(self, what: str) -> dict[str, str]:
        n = self.u64(f"{what} length")
        out: dict[str, str] = {}
        for _ in range(n):  # a repeated key overwrites, as a HashMap insert does
            key = self.string(f"{what} key")
            out[key] = self.string(f"{what} value")
        return out


def read_id(payload: bytes) -> str:
    """The first bincode field of an EpisodeStore payload: the Episode id."""
    return _Reader(payload).string("id")


def _provenance(r: _Reader) -> Provenance:
    return Provenance(
        r.string("provenance model name"),
        r.string("provenance model version"),
        r.u64("provenance dimension"),
        r.string("provenance language") if r.tag("provenance language") else None,
        r.u64("provenance created_at"),
        r.u32("provenance quality_score") if r.tag("provenance quality_score") else None,
        r.string_map("provenance metadata"),
    )


def _decay_function(r: _Reader) -> DecayFunction:
    at = r.pos
    index = r.u32("decay_function variant")
    if index == 0:
        return DecayFunction("Exponential", tau_hours=r.u32("tau_hours"))
    if index == 1:
        return DecayFunction("PowerLaw", beta=r.u32("beta"))
    if index == 2:
        return DecayFunction("TwoComponent", consolidation_threshold=r.u64("threshold"))
    if index == 3:
        return DecayFunction(
            "Hybrid",
            short_term_tau=r.u32("short_term_tau"),
            long_term_beta=r.u32("long_term_beta"),
            transition_point=r.u64("transition_point"),
        )
    raise DecodeError(at, f"decay_function variant {index}, expected 0..3")


def decode_episode(payload: bytes) -> DecodedEpisode:
    """Decode and check an EpisodeStore payload; trailing bytes are allowed, as in bincode 1.3."""
    r = _Reader(payload)
    id_ = r.string("id")
    when = r.string("when")
    where = r.string("where_location") if r.tag("where_location") else None
    who = None
    if r.tag("who"):
        who = [r.string("who item") for _ in range(r.u64("who length"))]
    what = r.string("what")
    at = r.pos
    dim = r.u64("embedding length")
    if dim != DIM:
        raise DecodeError(at, f"embedding has {dim} values, expected {DIM}")
    embedding_at = r._need(_EMBEDDING_BYTES, "embedding")
    provenance = _provenance(r) if r.tag("embedding_provenance") else None
    return DecodedEpisode(
        id_,
        when,
        where,
        who,
        what,
        embedding_at,
        provenance,
        r.confidence("encoding_confidence"),
        r.confidence("vividness_confidence"),
        r.confidence("reliability_confidence"),
        r.string("last_recall"),
        r.u32("recall_count"),
        r.u32("decay_rate"),
        _decay_function(r) if r.tag("decay_function") else None,
        r.string_map("metadata"),
    )
