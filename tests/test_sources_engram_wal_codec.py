"""The Engram WAL codec (``dualmem_bulk.sources.engram_wal_codec``): the record header, the
Episode decoder and both encoders, held against the real bytes of the WAL fixture and against
each other."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from crc32c import crc32c

from dualmem_bulk.generate import generate_wal_batches
from dualmem_bulk.schema import DIM
from dualmem_bulk.sources.engram_wal_codec import (
    HEADER_SIZE,
    DecayFunction,
    DecodedEpisode,
    DecodeError,
    EmbeddingProvenance,
    EntryType,
    Episode,
    decode_episode,
    encode_episode,
    entry_type_name,
    episode_payloads,
    header_problem,
    pack_header,
    read_id,
    unpack_header,
)

FIXTURES = Path(__file__).parent.parent / "data" / "fixtures" / "engram-wal"
HEADER = HEADER_SIZE


def _episode(id_: str, **fields: Any) -> Episode:
    base: dict[str, Any] = {"when": "2024-01-02T03:04:05.123Z",
                            "embedding": np.random.default_rng(len(id_)).standard_normal(DIM)
                            .astype(np.float32)}
    return Episode(id=id_, what=f"about {id_}", **(base | fields))


def test_header_round_trip_and_problems() -> None:
    payload = encode_episode(_episode("a"))
    header = pack_header(7, 1_700_000_000_000_000_000, EntryType.MemoryDelete, payload)
    h = unpack_header(header)
    assert len(header) == HEADER
    assert (h.sequence, h.timestamp_ns, h.entry_type, h.payload_size, h.payload_crc) == (
        7, 1_700_000_000_000_000_000, EntryType.MemoryDelete, len(payload), crc32c(payload))
    assert header_problem(header, h.magic, h.header_crc) is None
    assert header[36:] == bytes(HEADER - 36)  # reserved and padding bytes are zero
    bad_magic = b"\x00" + header[1:]
    assert "magic 0xdeadbe00" in str(header_problem(bad_magic, unpack_header(bad_magic).magic,
                                                    h.header_crc))
    bad_sequence = header[:4] + b"\x08" + header[5:]
    assert "header CRC" in str(header_problem(bad_sequence, h.magic, h.header_crc))
    assert [entry_type_name(t) for t in (1, 3, 5, 99)] == [
        "EpisodeStore", "MemoryDelete", "Checkpoint", "EpisodeStore"]


def test_decoder_refuses_what_engram_refuses() -> None:
    payload = encode_episode(_episode("abc", recall_count=3))
    assert read_id(payload) == "abc"
    assert decode_episode(payload + b"trailing").recall_count == 3  # as bincode 1.3 allows
    with pytest.raises(DecodeError, match=r"payload byte 8: id: needs 3 bytes, 2 left"):
        decode_episode(payload[:10])
    high = np.float32(1.5)
    with pytest.raises(DecodeError, match=r"encoding_confidence 1.5 .* is outside \[0, 1\]"):
        decode_episode(encode_episode(_episode("abc", encoding_confidence=high)))
    tag = struct.pack("<Q", 3) + b"abc" + struct.pack("<Q", 24)
    at = payload.index(tag) + len(tag) + 24  # after ``when``: the where_location option tag
    with pytest.raises(DecodeError, match=rf"payload byte {at}: where_location: option tag 2"):
        decode_episode(payload[:at] + b"\x02" + payload[at + 1:])


def test_encode_episode_refuses_a_wrong_embedding_or_variant() -> None:
    with pytest.raises(ValueError, match="embedding shape"):
        encode_episode(_episode("short", embedding=np.zeros(3)))
    with pytest.raises(ValueError, match="variant 'Linear'"):
        encode_episode(_episode("d", decay_function=DecayFunction(variant="Linear")))


def _pinned(d: DecodedEpisode, payload: bytes) -> Episode:
    """The writer's Episode for a decoded one, every f32 pinned to its bits."""

    def f32(bits: int) -> np.float32:
        return np.uint32(bits).view(np.float32)

    p, decay = d.provenance, d.decay_function
    decay_fields: dict[str, Any] = {} if decay is None else {
        k: f32(v) if k in ("tau_hours", "beta", "short_term_tau", "long_term_beta") else v
        for k, v in decay._asdict().items() if k != "variant" and v is not None}
    return Episode(
        id=d.id, when=d.when, what=d.what, where_location=d.where_location, who=d.who,
        embedding=np.frombuffer(payload, "<f4", DIM, d.embedding_at),
        embedding_provenance=None if p is None else EmbeddingProvenance(
            model_name=p.model_name, model_version=p.model_version, dimension=p.dimension,
            language=p.language, created_at=p.created_at, metadata=p.metadata,
            quality_score=None if p.quality_score is None else f32(p.quality_score)),
        encoding_confidence=f32(d.encoding_confidence),
        vividness_confidence=f32(d.vividness_confidence),
        reliability_confidence=f32(d.reliability_confidence),
        last_recall=d.last_recall, recall_count=d.recall_count, decay_rate=f32(d.decay_rate),
        decay_function=None if decay is None else DecayFunction(variant=decay.variant,
                                                                **decay_fields),
        metadata=d.metadata,
    )


def test_encoder_reproduces_the_fixture_bytes() -> None:
    """Re-encoding every fixture Episode (and header) gives the real serde/bincode bytes back."""
    checked = 0
    for path in sorted((FIXTURES / "engram-data").glob("*/wal/wal-*.log")):
        data, at = path.read_bytes(), 0
        while at + HEADER <= len(data):
            seq, stamp, kind, size, crc = struct.unpack_from("<QQIII", data, at + 4)
            payload = data[at + HEADER : at + HEADER + size]
            if len(payload) == size and crc32c(payload) == crc:
                assert pack_header(seq, stamp, kind, payload) == data[at : at + HEADER]
                if kind == EntryType.EpisodeStore:
                    assert encode_episode(_pinned(decode_episode(payload), payload)) == payload
                    checked += 1
            at += HEADER + size
    assert checked == 298


def _from_row(row: dict[str, Any], embedding: np.ndarray) -> Episode:
    """The writer's Episode for a generated memory row (f32 values pinned as np.float32)."""
    ep, prov, decay = row["episode"], row["embedding_provenance"], row["episode"]["decay_function"]
    f32 = np.float32
    return Episode(
        id=row["id"], when=row["created_at"], what=row["content"], embedding=embedding,
        where_location=ep["where_location"], who=ep["who"],
        embedding_provenance=None if prov is None else EmbeddingProvenance(
            model_name=prov["model_name"], model_version=prov["model_version"],
            dimension=prov["dimension"], language=prov["language"],
            created_at=prov["created_at"], metadata=dict(prov["metadata"]),
            quality_score=None if prov["quality_score"] is None else f32(prov["quality_score"])),
        encoding_confidence=f32(row["confidence"]),
        vividness_confidence=f32(ep["vividness_confidence"]),
        reliability_confidence=f32(ep["reliability_confidence"]),
        last_recall=row["last_access"], recall_count=row["access_count"],
        decay_rate=f32(ep["decay_rate"]),
        decay_function=None if decay is None else DecayFunction(
            **{k: f32(v) if isinstance(v, float) else v for k, v in decay.items()
               if v is not None}),
        metadata=dict(ep["metadata"]),
    )


def test_batch_encoder_matches_the_episode_encoder() -> None:
    """``episode_payloads`` (the generator's) equals ``encode_episode`` (checked on the fixture
    bytes above) for every generated row."""
    batch = next(generate_wal_batches(600, seed=5))
    table = pa.Table.from_batches([batch])
    for name in ("created_at", "last_access"):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 table[name].cast(pa.int64()))
    vectors = batch.column("embedding").flatten().to_numpy().reshape(-1, DIM)
    payloads = episode_payloads(batch)
    for i, row in enumerate(table.to_pylist()):
        assert payloads[i] == encode_episode(_from_row(row, vectors[i])), row["id"]
