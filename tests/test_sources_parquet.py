"""Legacy Parquet sources (``dualmem_bulk.sources.parquet``) on real files: a directory's files in
name order, only the legacy columns, ``_row`` counted per file, parts of whole row groups that
read back exactly what the whole reader yields, and unreadable or wrong files named."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dualmem_bulk.errors import SchemaMismatch, SourceError
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.sources import ROW_COLUMN, SourceBatch
from dualmem_bulk.sources.parquet import ParquetSource, parquet_files


def _store(folder: Path) -> pa.Table:
    """Two files in a directory tree (25 rows in row groups of 10, then 17 in groups of 5),
    with a column no legacy Memory has; and a file that is not Parquet."""
    rows = pa.Table.from_batches(list(generate_batches(42, seed=37, batch_size=42)))
    (folder / "b").mkdir(parents=True)
    extra = rows.append_column("notes", pa.array(["x"] * 42))
    pq.write_table(extra.slice(0, 25), folder / "a.parquet", row_group_size=10)
    pq.write_table(extra.slice(25), folder / "b" / "c.parquet", row_group_size=5)
    (folder / "README.txt").write_text("not a part")
    return rows


def _read(batches: list[SourceBatch]) -> list[tuple[str, int, str]]:
    return [(Path(b.source).name, row, memory_id) for b in batches
            for row, memory_id in zip(b.batch.column(ROW_COLUMN).to_pylist(),
                                      b.batch.column("id").to_pylist(), strict=True)]


def test_a_directory_reads_its_files_in_name_order_with_rows_per_file(tmp_path: Path) -> None:
    rows = _store(tmp_path / "store")
    source = ParquetSource(tmp_path / "store")
    assert [f.name for f in source.files] == ["a.parquet", "c.parquet"]
    assert source.total_rows == 42
    batches = list(source.batches(8))
    assert all(b.batch.num_rows <= 8 and "notes" not in b.batch.schema.names for b in batches)
    ids = rows.column("id").to_pylist()
    assert _read(batches) == [("a.parquet", i, ids[i]) for i in range(25)] + [
        ("c.parquet", i, ids[25 + i]) for i in range(17)]


@pytest.mark.parametrize("rows", [1, 10, 12, 30, 100])
def test_parts_are_whole_row_groups_reading_as_the_whole(tmp_path: Path, rows: int) -> None:
    _store(tmp_path / "store")
    source = ParquetSource(tmp_path / "store")
    parts = source.partitions(rows)
    assert sum(p.rows for p in parts) == 42
    for name, groups in (("a.parquet", 3), ("c.parquet", 4)):  # never across files
        mine = [p for p in parts if p.path.name == name]
        assert [p.first_group for p in mine] == [0, *(p.end_group for p in mine[:-1])]
        assert mine[-1].end_group == groups
        assert all(p.rows >= rows for p in mine[:-1])
        assert [p.first_row for p in mine] == [sum(p.rows for p in mine[:i])
                                               for i in range(len(mine))]
    whole = _read(list(source.batches(7)))
    assert [r for part in parts for r in _read(list(part.batches(7)))] == whole


def test_unreadable_and_wrong_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"holds no \.parquet files"):
        parquet_files(tmp_path)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\x00" * 20)
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        ParquetSource(broken)
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"id": [1, 2]}), wrong)
    with pytest.raises(SchemaMismatch, match="id"):
        ParquetSource(wrong)
