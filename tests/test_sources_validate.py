"""Row validation: every kind of invalid row is quarantined with a reason, valid rows conform."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import legacy_table

from dualmem_bulk.convert import node_uuids
from dualmem_bulk.errors import SchemaMismatch
from dualmem_bulk.schema import DIM, LEGACY_SCHEMA
from dualmem_bulk.schema.conform import check_schema
from dualmem_bulk.sources import ROW_COLUMN, SourceBatch
from dualmem_bulk.sources.validate import SeenIds, validate_batch


def _loose(table: pa.Table, **replace: pa.Array) -> SourceBatch:
    batch = table.combine_chunks().to_batches()[0]
    cols = {n: replace.get(n, batch.column(n)) for n in batch.schema.names}
    cols[ROW_COLUMN] = pa.array(range(batch.num_rows), pa.int64())
    return SourceBatch("src.parquet", pa.RecordBatch.from_pydict(cols))


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"mem_{i:08x}"} for i in range(n)]


def test_valid_rows_conform_exactly() -> None:
    table = legacy_table(_rows(3))
    checked = validate_batch(_loose(table), SeenIds())
    assert checked.rejected == ()
    assert checked.good.schema.equals(LEGACY_SCHEMA, check_metadata=True)
    assert checked.rows.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("column", "values", "bad_row", "reason"),
    [
        ("id", pa.array(["a", None, "c"]), 1, "id is null"),
        ("id", pa.array(["a", "", "c"]), 1, "id is empty"),
        ("confidence", pa.array([0.5, 1.5, 0.5], pa.float32()), 1, "confidence is 1.5"),
        ("confidence", pa.array([0.5, float("nan"), 0.5], pa.float32()), 1, "confidence is nan"),
        ("activation", pa.array([0.5, 0.5, -0.1], pa.float32()), 2, "activation is -0.1,"),
        ("activation", pa.array([float("nan"), 0.5, 0.5], pa.float32()), 0, "activation is nan"),
        ("decay_rate", pa.array([0.1, None, 0.1], pa.float32()), 1, "decay_rate is null"),
        ("content", pa.array([b"ok", b"\xff\xfe", None], pa.binary()), 1,
         "content is not valid UTF-8"),
    ],
)
def test_each_invalid_kind(column: str, values: pa.Array, bad_row: int, reason: str) -> None:
    checked = validate_batch(_loose(legacy_table(_rows(3)), **{column: values}), SeenIds())
    assert [(r.row, r.source) for r in checked.rejected] == [(bad_row, "src.parquet")]
    assert reason in checked.rejected[0].reason
    assert checked.good.num_rows == 2
    assert checked.rejected[0].record is not None


def test_embedding_lengths_and_nulls() -> None:
    lists = [np.zeros(DIM, np.float32).tolist(), [0.0] * 767, None, [0.0] * 769,
             [0.0] * 10 + [None] + [0.0] * (DIM - 11)]
    emb = pa.array(lists, pa.list_(pa.float32()))
    checked = validate_batch(_loose(legacy_table(_rows(5)), embedding=emb), SeenIds())
    reasons = {r.row: r.reason for r in checked.rejected}
    assert reasons == {
        1: "embedding has 767 values, expected 768",
        2: "embedding is null",
        3: "embedding has 769 values, expected 768",
        4: "embedding holds null values",
    }
    assert checked.good.column("id").to_pylist() == ["mem_00000000"]


def test_nan_and_negative_zero_in_embeddings_are_not_judged() -> None:
    bits = np.full(DIM, 0xFFC00001, dtype=np.uint32)
    table = legacy_table([{"id": "a", "embedding_bits": bits},
                          {"id": "b", "embedding_bits": np.full(DIM, 0x80000000, np.uint32)}])
    assert validate_batch(_loose(table), SeenIds()).rejected == ()


def test_duplicates_first_occurrence_wins_across_batches() -> None:
    seen = SeenIds()
    first = validate_batch(_loose(legacy_table([{"id": "a"}, {"id": "b"}, {"id": "a"}])), seen)
    assert [r.row for r in first.rejected] == [2]
    assert "duplicate id" in first.rejected[0].reason
    second = validate_batch(_loose(legacy_table([{"id": "c"}, {"id": "b"}])), seen)
    assert [r.row for r in second.rejected] == [1]
    assert second.good.column("id").to_pylist() == ["c"]
    assert len(seen) == 3


def test_uuid_ids_differing_in_case_are_duplicates() -> None:
    lower, upper = "a0b1c2d3-0000-4000-8000-abcdef012345", "A0B1C2D3-0000-4000-8000-ABCDEF012345"
    checked = validate_batch(_loose(legacy_table([{"id": lower}, {"id": upper}])), SeenIds())
    assert [r.id for r in checked.rejected] == [upper]


def test_invalid_first_occurrence_lets_a_later_valid_row_win() -> None:
    table = legacy_table([{"id": "a", "confidence": 2.0}, {"id": "a"}])
    checked = validate_batch(_loose(table), SeenIds())
    assert [r.row for r in checked.rejected] == [0]
    assert checked.rows.tolist() == [1]


def test_seen_ids_is_exact_on_trailing_zero_bytes() -> None:
    seen = SeenIds()
    a = pa.array([b"\x01" + b"\x00" * 15], pa.binary(16))
    b = pa.array([b"\x01" + b"\x00" * 14 + b"\x02"], pa.binary(16))
    assert seen.first_seen(a).tolist() == [True]
    assert seen.first_seen(b).tolist() == [True]
    assert seen.first_seen(a).tolist() == [False]


def test_seen_ids_after_a_batch_with_nothing_new() -> None:
    """A batch that adds no key (empty, or all seen) must not leave an empty run behind."""
    seen = SeenIds()
    a = pa.array([b"\x01" * 16], pa.binary(16))
    assert seen.first_seen(pa.array([], pa.binary(16))).tolist() == []
    assert seen.first_seen(a).tolist() == [True]
    assert seen.first_seen(a).tolist() == [False]
    assert seen.first_seen(pa.array([b"\x02" * 16, b"\x01" * 16], pa.binary(16))).tolist() == [
        True, False]


def test_seen_ids_scale() -> None:
    seen = SeenIds()
    ids = pa.array([f"id-{i}" for i in range(20_000)])
    for part in range(4):
        keep = seen.first_seen(node_uuids(ids.slice(part * 5000, 5000)))
        assert keep.all()
    assert not seen.first_seen(node_uuids(ids.slice(123, 10))).any()


def test_seen_ids_agree_with_a_set_over_many_batches() -> None:
    """Batches of varying size, each with keys seen in any earlier batch or in itself."""
    rng = np.random.default_rng(5)
    seen, reference = SeenIds(), set()
    pool = rng.integers(0, 256, size=(3000, 16), dtype=np.uint8)
    for _ in range(60):
        rows = pool[rng.integers(0, len(pool), size=int(rng.integers(1, 200)))]
        keys = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(rows),
                                                    [None, pa.py_buffer(rows.tobytes())])
        expected = []
        for key in keys.to_pylist():
            expected.append(key not in reference)
            reference.add(key)
        assert seen.first_seen(keys).tolist() == expected
    assert len(seen) == len(reference)


@pytest.mark.parametrize(
    ("field", "typ", "found"),
    [
        ("embedding", pa.list_(pa.float64()), "list<item: double>"),
        ("confidence", pa.float64(), "double"),
        ("last_access", pa.string(), "string"),
        ("access_count", pa.int64(), "int64"),
    ],
)
def test_schema_mismatch_names_column(field: str, typ: pa.DataType, found: str) -> None:
    schema = LEGACY_SCHEMA.set(LEGACY_SCHEMA.get_field_index(field), pa.field(field, typ))
    pattern = rf"f\.parquet: column '{field}'.*found {re.escape(found)}"
    with pytest.raises(SchemaMismatch, match=pattern):
        check_schema(schema, "f.parquet")


def test_missing_required_column() -> None:
    with pytest.raises(SchemaMismatch, match=r"column 'created_at'.*no such column"):
        check_schema(LEGACY_SCHEMA.remove(LEGACY_SCHEMA.get_field_index("created_at")), "f")


_PROVENANCE = {"model_name": "m", "model_version": "1", "dimension": 768, "language": None,
               "created_at": 5, "quality_score": None, "metadata": [("k", "v")]}


@pytest.mark.parametrize(("change", "reason"), [
    ({"model_name": None}, "embedding_provenance.model_name is null"),
    ({"model_version": None}, "embedding_provenance.model_version is null"),
    ({"dimension": None}, "embedding_provenance.dimension is null"),
    ({"created_at": None}, "embedding_provenance.created_at is null"),
    ({"metadata": None}, "embedding_provenance.metadata is null"),
    ({"metadata": [("a", "1"), ("k", None)]}, "embedding_provenance.metadata holds a null value"),
])
def test_each_provenance_reason(change: dict[str, Any], reason: str) -> None:
    """A null inside a present provenance would encode like an empty value: rejected, named."""
    rows = [{"id": "a", "embedding_provenance": _PROVENANCE},
            {"id": "b", "embedding_provenance": {**_PROVENANCE, **change}},
            {"id": "c", "embedding_provenance": {**_PROVENANCE, "language": None,
                                                 "quality_score": None, "metadata": []}}]
    checked = validate_batch(_loose(legacy_table(rows)), SeenIds())
    assert [(r.row, r.id, r.reason) for r in checked.rejected] == [(1, "b", reason)]
    assert checked.good.column("id").to_pylist() == ["a", "c"]


@pytest.mark.parametrize("column", ["activation", "confidence", "last_access", "access_count",
                                    "created_at", "decay_rate"])
def test_each_required_field_null(column: str) -> None:
    batch = legacy_table(_rows(3)).combine_chunks().to_batches()[0]
    values = batch.column(column).to_pylist()
    values[2] = None
    checked = validate_batch(_loose(legacy_table(_rows(3)),
                                    **{column: pa.array(values, batch.column(column).type)}),
                             SeenIds())
    assert [(r.row, r.reason) for r in checked.rejected] == [(2, f"{column} is null")]


def test_id_not_valid_utf8() -> None:
    ids = pa.array([b"ok", b"bad \xc3\x28", b"fine"], pa.binary())
    checked = validate_batch(_loose(legacy_table(_rows(3)), id=ids), SeenIds())
    assert [(r.row, r.reason) for r in checked.rejected] == [(1, "id is not valid UTF-8")]
    assert checked.good.column("id").to_pylist() == ["ok", "fine"]
