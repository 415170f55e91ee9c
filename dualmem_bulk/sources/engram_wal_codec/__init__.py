"""The Engram WAL codec: the one place that knows the bytes of a WAL record.

A record is a 64-byte header (:mod:`.layout`) plus ``payload_size`` bytes of payload: for an
EpisodeStore, Engram's ``Episode`` in bincode 1.3 (fixint, little-endian). The reader decodes
and checks payloads (:mod:`.decode`), the writer encodes one Episode at a time (:mod:`.encode`),
the generator a batch of legacy rows at a time (:mod:`.encode_batch`); the same bytes each way.
"""

from __future__ import annotations

from dualmem_bulk.sources.engram_wal_codec.decode import (
    DecodedDecay,
    DecodedEpisode,
    DecodedProvenance,
    DecodeError,
    decode_episode,
    read_id,
)
from dualmem_bulk.sources.engram_wal_codec.encode import (
    DecayFunction,
    EmbeddingProvenance,
    Episode,
    encode_episode,
)
from dualmem_bulk.sources.engram_wal_codec.encode_batch import episode_payloads, memory_payloads
from dualmem_bulk.sources.engram_wal_codec.layout import (
    DECAY_VARIANTS,
    HEADER_SIZE,
    MAGIC,
    EntryType,
    Header,
    entry_type_name,
    header_crc,
    header_problem,
    pack_header,
    unpack_header,
)

__all__ = [
    "DECAY_VARIANTS",
    "HEADER_SIZE",
    "MAGIC",
    "DecayFunction",
    "DecodeError",
    "DecodedDecay",
    "DecodedEpisode",
    "DecodedProvenance",
    "EmbeddingProvenance",
    "EntryType",
    "Episode",
    "Header",
    "decode_episode",
    "encode_episode",
    "entry_type_name",
    "episode_payloads",
    "header_crc",
    "header_problem",
    "memory_payloads",
    "pack_header",
    "read_id",
    "unpack_header",
]
