"""The row-level checks of a verification (``dualmem_bulk.verify.rows``): target rows against their
stored checksum and each conversion rule, and the join of (space, id) keys naming what is
missing, extra, held twice or different, on batches built from generated rows."""

from __future__ import annotations

import pyarrow as pa
from conftest import legacy_table

from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import to_dual
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.verify.rows import MAX_LISTED, keyed_problems, listed, row_problems


def _legacy(n: int = 10) -> pa.Table:
    return pa.Table.from_batches(list(generate_batches(n, seed=17, batch_size=n)))


def _snapshot(legacy: pa.Table) -> list[pa.RecordBatch]:
    """Snapshot rows: the legacy rows with their checksums."""
    return legacy.append_column("checksum", row_checksums(legacy)).to_batches()


def _target(legacy: pa.Table) -> list[pa.RecordBatch]:
    return [to_dual(batch) for batch in legacy.to_batches(max_chunksize=4)]


def _set(batch: pa.RecordBatch, column: str, row: int, value: object) -> pa.RecordBatch:
    """``batch`` with one value of ``column`` replaced."""
    values = batch.column(column).to_pylist()
    values[row] = value
    i = batch.schema.get_field_index(column)
    table = pa.Table.from_batches([batch])
    changed = table.set_column(i, batch.schema.field(i),
                               pa.array(values, batch.schema.field(i).type))
    return changed.to_batches()[0]


def test_equal_rows_have_no_problem_and_the_recomputed_digest() -> None:
    legacy = _legacy()
    target = _target(legacy)
    assert keyed_problems(iter(_snapshot(legacy)), iter(target)) == []
    problems, digest = row_problems(target[0])
    assert problems == [] and digest == TableDigest.of(row_checksums(legacy.slice(0, 4)))


def test_the_join_names_missing_extra_repeated_and_different_keys() -> None:
    legacy = _legacy()
    ids = legacy.column("id").to_pylist()
    changed = legacy.slice(5, 1).set_column(
        LEGACY_SCHEMA.get_field_index("content"), "content", pa.array(["other"]))
    extra = legacy_table([{"id": "extra"}]).cast(LEGACY_SCHEMA)
    held = pa.concat_tables([legacy.slice(1, 4), changed, legacy.slice(6), legacy.slice(3, 1),
                             extra])
    problems = keyed_problems(iter(_snapshot(legacy)), iter(_target(held)))
    assert problems == [("", ids[3], "appears more than once in the target"),
                        *sorted([("", ids[0], "missing from the target"),
                                 ("", "extra", "in the target but not in the snapshot"),
                                 ("", ids[5], "checksum differs from the snapshot's")])]


def test_the_same_id_in_two_spaces_is_two_keys() -> None:
    legacy = _legacy(2)
    same_id = legacy.set_column(0, "id", pa.array([legacy.column("id")[0].as_py()] * 2))
    spaces = same_id.set_column(LEGACY_SCHEMA.get_field_index("space"), "space",
                                pa.array(["a", "b"]))
    assert keyed_problems(iter(_snapshot(spaces)), iter(_target(spaces))) == []
    only_a = keyed_problems(iter(_snapshot(spaces)), iter(_target(spaces.slice(0, 1))))
    assert only_a == [("b", spaces.column("id")[0].as_py(), "missing from the target")]


def test_each_broken_rule_and_a_changed_field_is_named_by_row() -> None:
    batch = _target(_legacy(5))[0]
    batch = _set(batch, "content", 0, "changed after the checksum")
    batch = _set(batch, "strength", 1, 0.123)
    batch = _set(batch, "consolidation_score", 2, 0.5)
    batch = _set(batch, "id", 3, batch.column("id")[0].as_py())
    ids = batch.column("episode_id").to_pylist()
    problems, _digest = row_problems(batch)
    assert problems == [("", ids[0], "fields differ from the stored checksum"),
                        ("", ids[1], "strength differs from activation"),
                        ("", ids[2], "consolidation_score is not 0.0"),
                        ("", ids[3], "id is not the node UUID of episode_id")]


def test_listed_names_a_space_only_when_there_is_one_and_stops_at_the_limit() -> None:
    assert listed([("", "x", "p"), ("s", "y", "q")]) == [
        {"id": "x", "problem": "p"}, {"id": "y", "problem": "q", "space": "s"}]
    many = [("", str(i), "p") for i in range(MAX_LISTED + 5)]
    assert [item["id"] for item in listed(many)] == [str(i) for i in range(MAX_LISTED)]
