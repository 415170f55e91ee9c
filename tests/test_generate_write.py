"""Writing generated rows (``dualmem_bulk.generate.write``): Parquet and JSON lines files, the
same bytes for the same seed, written atomically; a directory or an unknown format refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal

from dualmem_bulk.errors import UsageError
from dualmem_bulk.generate import generate_batches, write_generated
from dualmem_bulk.generate import write as write_module
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources.jsonl import read_jsonl

N = 6_000


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pa.Table.from_batches(list(generate_batches(N, seed=42, batch_size=2_500)))


def test_write_parquet(tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "m.parquet"
    assert write_generated(path, N, seed=42, batch_size=2_500) == N
    handle = pq.ParquetFile(path)
    # Parquet renames nested child fields on the way back (list "element", map entries after
    # the column), so compare types and the schema's own metadata, then cast the names back.
    assert handle.schema_arrow.equals(LEGACY_SCHEMA)
    assert handle.schema_arrow.metadata == LEGACY_SCHEMA.metadata
    assert [handle.metadata.row_group(i).num_rows for i in range(handle.num_row_groups)] == [
        2_500, 2_500, 1_000]
    assert_bit_equal(handle.read().cast(LEGACY_SCHEMA), table)
    again = tmp_path / "again.parquet"
    write_generated(again, N, seed=42, batch_size=2_500)
    assert again.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.parquet", "m.parquet"]


def test_write_jsonl(tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "m.jsonl"
    assert write_generated(path, 500, seed=42, fmt="jsonl") == 500
    [batch] = list(read_jsonl(path, 1_000))
    assert batch.batch.column("id").equals(table.column("id").combine_chunks().slice(0, 500))
    assert not batch.rejected


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(nodes: int, seed: int, batch_size: int) -> Iterator[pa.RecordBatch]:
        yield from generate_batches(100, seed, 100)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(write_module, "generate_batches", broken)
    for fmt in ("parquet", "jsonl"):
        with pytest.raises(RuntimeError, match="disk on fire"):
            write_generated(tmp_path / f"m.{fmt}", 1_000, seed=1, fmt=fmt)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_directory_or_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory; fmt jsonl writes one file"):
        write_generated(tmp_path, 10, seed=1, fmt="jsonl")
    with pytest.raises(ValueError, match="fmt must be"):
        write_generated(tmp_path / "m.csv", 10, seed=1, fmt="csv")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
