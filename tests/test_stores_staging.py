"""Resumable target writers (``dualmem_bulk.stores.staging``) on real Lance and Parquet stores: a
written unit stays invisible until committed, commits land in unit order, a resume undoes what the
journal did not record (so a redone unit is never doubled); a Lance store converted in place keeps
serving its version until one publish, which a resume finds again; strays are removed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal

from dualmem_bulk.convert import to_dual
from dualmem_bulk.errors import SourceError
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.rundir.journal import BatchRecord
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA, schema_identity
from dualmem_bulk.stores.staging import (
    LanceInPlace,
    data_files,
    remove_strays,
    staged_writer,
    unsliced,
)


def _units(n: int = 3, rows: int = 50) -> list[pa.RecordBatch]:
    """``n`` units of dual rows, ``rows`` each."""
    return [to_dual(b) for b in generate_batches(n * rows, seed=11, batch_size=rows)]


def _record(unit: int, rows: int, version: int | None, part: str | None) -> BatchRecord:
    """The journal's record of a committed unit, as the driver writes it."""
    return BatchRecord(unit, unit, unit + 1, rows, "", version, part, 0.0, 0.0)


def _plain(table: pa.Table) -> pa.Table:
    """``table`` in the dual schema with ``node_type`` as text: Lance adds encoding hints to the
    schema, Parquet names list items ``element``, a dictionary read back holds only the values
    used."""
    table = table.cast(DUAL_SCHEMA)
    i = table.schema.get_field_index("node_type")
    return table.set_column(i, "node_type", table.column(i).cast(pa.utf8()))


def _same(read: Iterable[pa.RecordBatch], units: list[pa.RecordBatch]) -> None:
    """The rows read back are the units' rows, bit for bit."""
    assert_bit_equal(_plain(pa.Table.from_batches(list(read), DUAL_SCHEMA)),
                     _plain(pa.Table.from_batches(units)))


def _rows(path: Path) -> pa.Table:
    return lance.dataset(str(path)).to_table()


def test_lance_units_are_invisible_until_committed_in_order(tmp_path: Path) -> None:
    units = _units()
    writer = staged_writer("lance", tmp_path / ".t.lance", DUAL_SCHEMA)
    writer.resume([])
    written = [writer.write(i, [batch]) for i, batch in enumerate(units)]  # any order, any process
    assert not (writer.path / "_versions").exists()  # no version refers to them yet
    for w, batch in zip(written, units, strict=True):
        assert all((writer.path / "data" / name).is_file() for name in writer.files(w))
        _same(writer.read(w, 7), [batch])
    assert writer.commit(0, written[0]) == (1, None)
    assert _rows(writer.path).num_rows == 50
    assert writer.commit(1, written[1]) == (2, None)
    assert writer.commit(2, written[2]) == (3, None)
    assert _rows(writer.path).column("id").equals(
        pa.Table.from_batches(units).column("id"))  # in unit order


def test_lance_resume_undoes_an_unrecorded_commit(tmp_path: Path) -> None:
    units = _units()
    writer = staged_writer("lance", tmp_path / ".t.lance", DUAL_SCHEMA)
    writer.resume([])
    for i, batch in enumerate(units):
        writer.commit(i, writer.write(i, [batch]))
    recorded = [_record(0, 50, 1, None), _record(1, 50, 2, None)]  # unit 2's commit unrecorded
    again = staged_writer("lance", writer.path, DUAL_SCHEMA)
    again.resume(recorded)
    assert _rows(again.path).num_rows == 100
    again.commit(2, again.write(2, [units[2]]))  # redone, not doubled
    assert _rows(again.path).column("id").equals(pa.Table.from_batches(units).column("id"))


def test_a_resume_with_nothing_committed_starts_over(tmp_path: Path) -> None:
    for fmt in ("lance", "parquet"):
        writer = staged_writer(fmt, tmp_path / f".t.{fmt}", DUAL_SCHEMA)  # type: ignore[arg-type]
        writer.commit(0, writer.write(0, _units(1)))
        assert writer.path.exists()
        writer.resume([])
        assert not writer.path.exists(), fmt


def test_parquet_parts_are_named_by_unit_and_unknown_ones_removed(tmp_path: Path) -> None:
    units = _units()
    writer = staged_writer("parquet", tmp_path / ".t", DUAL_SCHEMA)
    writer.resume([])
    first = writer.write(0, [units[0]])
    second = writer.write(1, [units[1]], durable=False)
    writer.sync(second)
    assert (first, second) == ("part-00000.parquet", "part-00001.parquet")
    assert writer.commit(0, first) == (None, "part-00000.parquet")
    assert writer.files(second) == ("part-00001.parquet",)
    _same(pq.read_table(writer.path / second).to_batches(), [units[1]])
    _same(writer.read(first, 20), [units[0]])
    staged_writer("parquet", writer.path, DUAL_SCHEMA).resume([_record(0, 50, None, first)])
    assert sorted(p.name for p in writer.path.iterdir()) == ["part-00000.parquet"]


def _legacy_store(path: Path) -> Path:
    """A legacy Lance store of two versions (two fragments)."""
    for mode, batch in zip(("create", "append"), generate_batches(60, seed=3, batch_size=30),
                           strict=True):
        lance.write_dataset(pa.RecordBatchReader.from_batches(LEGACY_SCHEMA, [unsliced(batch)]),
                            str(path), schema=LEGACY_SCHEMA, mode=mode)
    return path


def _in_place(store: Path, units: list[pa.RecordBatch]) -> tuple[LanceInPlace, list[BatchRecord]]:
    """Every unit written into ``store`` in place and committed (recorded, not published)."""
    writer = staged_writer("lance", store, DUAL_SCHEMA, in_place_base=2)
    assert isinstance(writer, LanceInPlace)
    writer.resume([])
    records = []
    for i, batch in enumerate(units):
        version, part = writer.commit(i, writer.write(i, [batch]))
        assert version is None and part is not None
        records.append(_record(i, batch.num_rows, version, part))
    return writer, records


def test_lance_in_place_serves_its_version_until_one_publish(tmp_path: Path) -> None:
    store = _legacy_store(tmp_path / "store.lance")
    before = data_files(store)
    units = _units()
    writer, records = _in_place(store, units)
    ds = lance.dataset(str(store))
    assert ds.version == 2 and schema_identity(ds.schema) == ("engram.Memory", "1")
    assert ds.count_rows() == 60 and len(data_files(store)) == len(before) + 3
    assert writer.published(records) is None
    assert writer.publish(records) == 3
    published = lance.dataset(str(store))
    assert schema_identity(published.schema) == ("engram.DualMemoryNode", "1")
    assert published.to_table().column("id").equals(pa.Table.from_batches(units).column("id"))
    assert writer.published(records) == 3  # a resume finds the publish the journal missed
    assert writer.publish(records) == 3 and lance.dataset(str(store)).version == 3
    assert lance.dataset(str(store), version=2).count_rows() == 60  # rollback's version


def test_lance_in_place_refuses_a_store_someone_else_changed(tmp_path: Path) -> None:
    store = _legacy_store(tmp_path / "store.lance")
    writer, records = _in_place(store, _units(1))
    extra = next(generate_batches(5, seed=9, batch_size=5))
    lance.write_dataset(pa.RecordBatchReader.from_batches(LEGACY_SCHEMA, [extra]), str(store),
                        schema=LEGACY_SCHEMA, mode="append")
    with pytest.raises(SourceError, match="the store changed since the run read version 2"):
        writer.publish(records)


def test_remove_strays_keeps_the_store_and_the_published_units(tmp_path: Path) -> None:
    store = _legacy_store(tmp_path / "store.lance")
    before = data_files(store)
    writer, records = _in_place(store, _units())
    assert remove_strays(store, before, None) == 3  # a rollback before the publish
    assert data_files(store) == before and lance.dataset(str(store)).count_rows() == 60
    writer, records = _in_place(store, _units())
    writer.write(3, _units(1))  # a unit written after the last record: no version has it
    writer.publish(records)
    assert remove_strays(store, before, records) == 1
    assert lance.dataset(str(store)).count_rows() == 150  # every published file kept
    assert remove_strays(store, before, records) == 0


def test_unsliced_copies_only_a_sliced_batch() -> None:
    batch = next(generate_batches(10, seed=1, batch_size=10))
    assert unsliced(batch) is batch
    sliced = batch.slice(3, 4)
    copy = unsliced(sliced)
    assert all(column.offset == 0 for column in copy.columns)
    assert_bit_equal(copy, sliced)
