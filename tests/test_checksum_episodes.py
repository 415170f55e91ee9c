"""The `space`/`episode` checksum (``checksum.episode_checksums``) against the independent
reference encoder (``tests/reference_encoding.py``): on the Engram WAL fixtures and on generated
episodes with nulls, unicode and extreme values (NaN payloads, infinities, -0.0, u64 limits)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_encoding import encode_episode, episode_checksum

from dualmem_bulk.checksum import episode_checksums
from dualmem_bulk.schema import EPISODE_TYPE
from dualmem_bulk.sources.engram_wal import read_engram_wal

ROOT = Path(__file__).resolve().parents[1]
WAL_FIXTURES = {
    "shared": ROOT.parent / "shared" / "fixtures" / "engram-wal" / "engram-data",
    "local": ROOT / "data" / "fixtures" / "engram-wal" / "engram-data",
}
_DECAY_TYPE = EPISODE_TYPE.field("decay_function").type


def plain(arr: pa.Array) -> list[Any]:
    """Python values of an Arrow array, every float32 as its 4 raw little-endian bytes (so NaN
    payloads survive), structs as dicts, maps as (key, value) pairs."""
    kind = arr.type
    if pa.types.is_struct(kind):
        fields = {kind.field(i).name: plain(pc.struct_field(arr, [i]))
                  for i in range(kind.num_fields)}
        valid = arr.is_valid().to_pylist()
        return [{name: values[j] for name, values in fields.items()} if ok else None
                for j, ok in enumerate(valid)]
    if pa.types.is_float32(kind):
        return [None if bits is None else struct.pack("<I", bits)
                for bits in arr.view(pa.uint32()).to_pylist()]
    return list(arr.to_pylist())


def _reference(batch: pa.RecordBatch) -> list[bytes]:
    spaces = batch.column("space").to_pylist()
    return [episode_checksum(s, e) for s, e in zip(spaces, plain(batch.column("episode")),
                                                   strict=True)]


@pytest.mark.parametrize("name", list(WAL_FIXTURES))
def test_wal_fixture_episodes_match_the_reference(name: str) -> None:
    root = WAL_FIXTURES[name]
    if not root.is_dir():
        pytest.fail(f"{root} is missing")
    rows = spaces = with_decay = with_nan = 0
    for part in read_engram_wal(root, 100):
        batch = part.batch
        assert episode_checksums(batch).to_pylist() == _reference(batch)
        rows += batch.num_rows
        episodes = plain(batch.column("episode"))
        spaces += len({s for s in batch.column("space").to_pylist() if s})
        with_decay += sum(1 for e in episodes if e and e["decay_function"])
        with_nan += sum(1 for e in episodes if e and e["decay_rate"] and
                        struct.unpack("<f", e["decay_rate"])[0] != struct.unpack(
                            "<f", e["decay_rate"])[0])
    assert rows > 100 and spaces >= 2 and with_decay and with_nan  # the fixture's variety


def test_hand_built_episode_bytes() -> None:
    """The documented layout, byte by byte, for one full episode and the null cases."""
    episode = {
        "where_location": "é", "who": ["a", None, "bc"], "vividness_confidence": 0.5,
        "reliability_confidence": None, "decay_rate": -0.0,
        "decay_function": {"variant": "Two", "tau_hours": None, "beta": 1.0,
                           "consolidation_threshold": 2**64 - 1, "short_term_tau": None,
                           "long_term_beta": None, "transition_point": 0},
        "metadata": [("b", "2"), ("a", "1")],
    }
    expected = (b"\x01\x01\x00\x00\x00s" + b"\x01"
                + b"\x01\x02\x00\x00\x00\xc3\xa9"
                + b"\x01\x03\x00\x00\x00" + b"\x01\x00\x00\x00a" + b"\x02\x00\x00\x00bc"
                + b"\x01\x00\x00\x00?" + b"\x00" + b"\x01\x00\x00\x00\x80"
                + b"\x01\x03\x00\x00\x00Two" + b"\x00" + b"\x01\x00\x00\x80?"
                + b"\x01" + b"\xff" * 8 + b"\x00\x00" + b"\x01" + b"\x00" * 8
                + b"\x02\x00\x00\x00" + b"\x01\x00\x00\x00a\x01\x00\x00\x001"
                + b"\x01\x00\x00\x00b\x01\x00\x00\x002")
    assert encode_episode("s", episode) == expected
    assert encode_episode(None, None) == b"\x00\x00"
    batch = pa.record_batch({"space": pa.array(["s", None], pa.utf8()),
                             "episode": pa.array([episode, None], EPISODE_TYPE)})
    assert episode_checksums(batch).to_pylist() == [episode_checksum("s", episode),
                                                    episode_checksum(None, None)]


_TEXT = st.text(max_size=6)
_BITS32 = st.one_of(st.none(), st.integers(0, 2**32 - 1),
                    st.sampled_from([0x7FC00000, 0x7FA00001, 0xFFFFFFFF, 0x80000000,
                                     0x7F800000, 0xFF800000, 0x00000001, 0x7F7FFFFF]))
_U64 = st.one_of(st.none(), st.integers(0, 2**64 - 1), st.sampled_from([0, 2**64 - 1]))


def _f32s(bits: list[int | None]) -> pa.Array:
    return pa.array(bits, pa.uint32()).view(pa.float32())


@st.composite
def episodes(draw: st.DrawFn) -> tuple[pa.RecordBatch, list[str | None], list[Any]]:
    """A batch of generated (space, episode) rows, and the same rows as plain values."""
    n = draw(st.integers(1, 6))
    spaces = draw(st.lists(st.one_of(st.none(), _TEXT), min_size=n, max_size=n))
    null_episode = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    null_decay = draw(st.lists(st.booleans(), min_size=n, max_size=n))

    def column(strategy: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(strategy, min_size=n, max_size=n))

    where = column(st.one_of(st.none(), _TEXT))
    who = column(st.one_of(st.none(), st.lists(st.one_of(st.none(), _TEXT), max_size=3)))
    floats = {name: column(_BITS32) for name in
              ("vividness_confidence", "reliability_confidence", "decay_rate",
               "tau_hours", "beta", "short_term_tau", "long_term_beta")}
    ints = {name: column(_U64) for name in ("consolidation_threshold", "transition_point")}
    variant = column(st.one_of(st.none(), _TEXT))
    metadata = column(st.one_of(st.none(), st.lists(st.tuples(_TEXT, _TEXT), max_size=4)))
    decay = pa.StructArray.from_arrays(
        [pa.array(variant, pa.utf8()), _f32s(floats["tau_hours"]), _f32s(floats["beta"]),
         pa.array(ints["consolidation_threshold"], pa.uint64()),
         _f32s(floats["short_term_tau"]), _f32s(floats["long_term_beta"]),
         pa.array(ints["transition_point"], pa.uint64())],
        fields=list(_DECAY_TYPE), mask=pa.array(null_decay))
    episode = pa.StructArray.from_arrays(
        [pa.array(where, pa.utf8()), pa.array(who, EPISODE_TYPE.field("who").type),
         _f32s(floats["vividness_confidence"]), _f32s(floats["reliability_confidence"]),
         _f32s(floats["decay_rate"]), decay,
         pa.array(metadata, EPISODE_TYPE.field("metadata").type)],
        fields=list(EPISODE_TYPE), mask=pa.array(null_episode))
    batch = pa.record_batch({"space": pa.array(spaces, pa.utf8()), "episode": episode})
    return batch, spaces, plain(episode)


@settings(max_examples=150, deadline=None)
@given(episodes())
def test_generated_episodes_match_the_reference(
        case: tuple[pa.RecordBatch, list[str | None], list[Any]]) -> None:
    batch, spaces, plain_episodes = case
    expected = [episode_checksum(s, e) for s, e in zip(spaces, plain_episodes, strict=True)]
    assert episode_checksums(batch).to_pylist() == expected
    sliced = batch.slice(1)  # offsets inside every child array
    assert episode_checksums(sliced).to_pylist() == expected[1:]
