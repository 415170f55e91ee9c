"""The frame of an Engram WAL record: the 64-byte header, the entry types, the enum indexes.

Header, little-endian: magic u32 ``0xDEADBEEF`` @0, sequence u64 @4, timestamp u64 ns @12,
entry_type u32 @20, payload_size u32 @24, payload_crc u32 (CRC32C of the payload) @28,
header_crc u32 @32 (CRC32C of bytes 0..32 and 36..56, i.e. the first 52 header bytes with
header_crc left out), 20 reserved zero bytes @36, 8 zero padding bytes @56.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from crc32c import crc32c

__all__ = [
    "DECAY_VARIANTS",
    "HEADER_SIZE",
    "MAGIC",
    "EntryType",
    "Header",
    "entry_type_name",
    "header_crc",
    "header_problem",
    "pack_header",
    "unpack_header",
]

MAGIC = 0xDEADBEEF
HEADER_SIZE = 64
_HEADER = struct.Struct("<IQQIIII")  # magic .. header_crc: the first 36 bytes


class EntryType(IntEnum):
    """Engram's WAL entry types; any other number is replayed as an EpisodeStore."""

    EpisodeStore = 1
    MemoryUpdate = 2
    MemoryDelete = 3
    Consolidation = 4
    Checkpoint = 5
    CompactionMarker = 6


_NAMES = {t.value: t.name for t in EntryType}


def entry_type_name(entry_type: int) -> str:
    """The report name of an entry type; unknown numbers count as ``EpisodeStore``."""
    return _NAMES.get(entry_type, "EpisodeStore")


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


def header_problem(header: bytes, magic: int, stored_crc: int) -> str | None:
    """What is wrong with a 64-byte header (magic first, then its CRC), or ``None``."""
    if magic != MAGIC:
        return f"magic {magic:#010x}, expected {MAGIC:#010x}"
    computed = header_crc(header)
    if computed != stored_crc:
        return f"header CRC {stored_crc:#010x}, computed {computed:#010x}"
    return None


DECAY_VARIANTS = ("Exponential", "PowerLaw", "TwoComponent", "Hybrid")
"""``DecayFunction`` variants by their bincode index."""
