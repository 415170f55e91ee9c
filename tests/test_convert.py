"""Conversion kernels: node UUIDs, Episode fields, and the bit-exact inverse."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import assert_bit_equal, legacy_table
from hypothesis import given, settings
from hypothesis import strategies as st

from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import ID_NAMESPACE, node_uuids, to_dual, to_legacy
from dualmem_bulk.schema import DIM, DUAL_SCHEMA


def test_namespace_is_documented_value() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "engram:memory-id") == ID_NAMESPACE
    assert str(ID_NAMESPACE) == "2710fbed-f5c0-51e6-a3f9-153748fa6550"


@pytest.mark.parametrize(
    "ident",
    [
        "mem_1a2b3c4d",
        "ep_1a2b3c4d",
        "",
        "free form / 😀",
        "a0b1c2d3-0000-4000-8000-abcdef01234",  # one hex digit short: not canonical
        "a0b1c2d3-0000-4000-8000-abcdef0123456",  # one too many
        "a0b1c2d300004000-8000-abcdef012345-",  # dashes in the wrong places
        "{a0b1c2d3-0000-4000-8000-abcdef012345}",
        "g0b1c2d3-0000-4000-8000-abcdef012345",
        "a0b1c2d3-0000-4000-8000-abcdef012345\n",
    ],
)
def test_non_canonical_ids_get_uuid5(ident: str) -> None:
    assert node_uuids(pa.array([ident]))[0].as_py() == uuid.uuid5(ID_NAMESPACE, ident).bytes


@pytest.mark.parametrize(
    "ident",
    ["a0b1c2d3-0000-4000-8000-abcdef012345", "A0B1C2D3-0000-4000-8000-ABCDEF012345",
     "ffffffff-ffff-ffff-ffff-ffffffffffff", "00000000-0000-0000-0000-000000000000",
     "Aa0b1C2d-e3F4-0000-8000-abcDEF012345"],
)
def test_canonical_uuid_ids_are_kept(ident: str) -> None:
    assert node_uuids(pa.array([ident]))[0].as_py() == uuid.UUID(ident).bytes


def test_uuids_of_a_sliced_mixed_array() -> None:
    ids = ["x", "a0b1c2d3-0000-4000-8000-abcdef012345", "y", "Z0",
           "00000000-0000-0000-0000-0000000000ff"]
    arr = pa.array(["skip", *ids]).slice(1)
    expected = [uuid.UUID(i).bytes if len(i) == 36 else uuid.uuid5(ID_NAMESPACE, i).bytes
                for i in ids]
    assert node_uuids(arr).to_pylist() == expected


def test_to_dual_sets_episode_fields(sample_rows: list[dict[str, Any]]) -> None:
    legacy = legacy_table(sample_rows).to_batches()[0]
    dual = to_dual(legacy)
    assert dual.schema.equals(DUAL_SCHEMA, check_metadata=True)
    assert dual.column("node_type").cast(pa.utf8()).to_pylist() == ["Episode"] * len(sample_rows)
    assert dual.column("episode_id").to_pylist() == [r["id"] for r in sample_rows]
    assert np.array_equal(dual.column("strength").to_numpy().view("u4"),
                          legacy.column("activation").to_numpy().view("u4"))
    assert dual.column("consolidation_score").to_pylist() == [0.0] * len(sample_rows)
    for name in ("centroid", "coherence", "instance_count", "formation_time"):
        assert dual.column(name).null_count == len(sample_rows)
    assert dual.column("checksum").equals(row_checksums(legacy))
    assert dual.column("id").to_pylist() == node_uuids(legacy.column("id")).to_pylist()


def test_round_trip_is_bit_exact(sample_rows: list[dict[str, Any]]) -> None:
    legacy = legacy_table(sample_rows).to_batches()[0]
    assert_bit_equal(to_legacy(to_dual(legacy)), legacy)


def test_to_legacy_refuses_concepts(sample_rows: list[dict[str, Any]]) -> None:
    dual = to_dual(legacy_table(sample_rows).to_batches()[0])
    kinds = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0, 0], pa.int8()),
                                           pa.array(["Episode", "Concept"]))
    concept = dual.set_column(1, DUAL_SCHEMA.field("node_type"), kinds)
    with pytest.raises(ValueError, match="row 1 is a Concept"):
        to_legacy(concept)


_f32_bits = st.integers(0, 2**32 - 1)
_unit = st.floats(0, 1, width=32)
_text = st.text(max_size=30)
_prov = st.none() | st.fixed_dictionaries({
    "model_name": _text, "model_version": _text, "dimension": st.integers(0, 2**64 - 1),
    "language": st.none() | _text, "created_at": st.integers(0, 2**64 - 1),
    "quality_score": st.none() | st.floats(width=32, allow_nan=False),
    "metadata": st.dictionaries(_text, _text, max_size=4).map(lambda d: list(d.items())),
})
_row = st.fixed_dictionaries({
    "id": st.text(min_size=1, max_size=40) | st.uuids().map(str),
    "embedding_bits": st.lists(_f32_bits, min_size=DIM, max_size=DIM)
    | _f32_bits.map(lambda b: [b] * DIM),
    "activation": _unit, "confidence": _unit,
    "last_access": st.integers(-(2**63), 2**63 - 1),
    "created_at": st.integers(-(2**63), 2**63 - 1),
    "access_count": st.integers(0, 2**64 - 1),
    "decay_rate_bits": _f32_bits,
    "content": st.none() | st.text(max_size=200),
    "embedding_provenance": _prov,
})


@settings(max_examples=60, deadline=None)
@given(st.lists(_row, min_size=1, max_size=8))
def test_round_trip_property(rows: list[dict[str, Any]]) -> None:
    legacy = legacy_table(rows).to_batches()[0]
    assert_bit_equal(to_legacy(to_dual(legacy)), legacy)


@settings(max_examples=40, deadline=None)
@given(st.lists(_row, min_size=1, max_size=12), st.integers(1, 5), st.randoms())
def test_digest_independent_of_batching_and_order(
    rows: list[dict[str, Any]], batch: int, rnd: Any
) -> None:
    table = legacy_table(rows)
    whole = TableDigest.of(row_checksums(table))
    parts = TableDigest()
    for b in table.to_batches(max_chunksize=batch):
        parts += TableDigest.of(row_checksums(b))
    order = list(range(len(rows)))
    rnd.shuffle(order)
    shuffled = TableDigest.of(row_checksums(table.take(order)))
    assert parts == whole == shuffled
