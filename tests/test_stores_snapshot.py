"""A run's snapshot read back (``dualmem_bulk.stores.snapshot``) from real Parquet parts: parts in
name order as one table (an empty part included, a crash's temporary beside them not read), from
any start row, any batch size and any columns, and a single-file snapshot read the same way."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal

from dualmem_bulk.checksum import row_checksums
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.schema import SNAPSHOT_SCHEMA
from dualmem_bulk.stores.snapshot import Snapshot, part_name

ROWS = 50


def _rows() -> pa.Table:
    legacy = pa.Table.from_batches(list(generate_batches(ROWS, seed=23, batch_size=ROWS)))
    return legacy.append_column(SNAPSHOT_SCHEMA.field("checksum"), row_checksums(legacy))


def _parts(folder: Path, table: pa.Table) -> Path:
    """Parts of 25, 0 and 25 rows in row groups of 10, and a temporary a crash left."""
    folder.mkdir()
    pq.write_table(table.slice(0, 25), folder / part_name(0), row_group_size=10)
    pq.write_table(table.slice(0, 0), folder / part_name(1))
    pq.write_table(table.slice(25), folder / part_name(12), row_group_size=10)
    pq.write_table(table.slice(0, 5), folder / f".{part_name(13)}.tmp-4242")
    return folder


def test_part_names_sort_in_unit_order() -> None:
    assert part_name(3) == "part-000003.parquet"
    assert sorted([part_name(12), part_name(2), part_name(100)]) == [
        part_name(2), part_name(12), part_name(100)]


def test_parts_read_as_one_table_in_name_order(tmp_path: Path) -> None:
    table = _rows()
    snapshot = Snapshot(_parts(tmp_path / "snapshot.parquet", table))
    assert [f.name for f in snapshot.files] == [part_name(0), part_name(1), part_name(12)]
    assert snapshot.num_rows == ROWS and snapshot.num_row_groups == 3 + 1 + 3
    read = pa.Table.from_batches(list(snapshot.batches(7)), schema=SNAPSHOT_SCHEMA)
    assert_bit_equal(read, table)
    assert max(b.num_rows for b in snapshot.batches(7)) == 7


@pytest.mark.parametrize("start", [0, 1, 9, 10, 24, 25, 26, 37, 49, 50])
def test_reading_from_a_start_row(tmp_path: Path, start: int) -> None:
    table = _rows()
    snapshot = Snapshot(_parts(tmp_path / "snapshot.parquet", table))
    ids = [i for b in snapshot.batches(4, ["id"], start=start) for i in b.column("id").to_pylist()]
    assert ids == table.column("id").to_pylist()[start:]


def test_a_single_file_snapshot_reads_the_same(tmp_path: Path) -> None:
    table = _rows()
    path = tmp_path / "snapshot.parquet"
    pq.write_table(table, path, row_group_size=16)
    snapshot = Snapshot(path)
    assert snapshot.files == [path] and snapshot.num_rows == ROWS
    checksums = [c for b in snapshot.batches(5, ["checksum"], start=17)
                 for c in b.column("checksum").to_pylist()]
    assert checksums == table.column("checksum").to_pylist()[17:]
