"""The DualMemoryNode store (``dualmem_bulk.stores``) on real Lance datasets and Parquet
directories: written all or nothing, recognised by content, read back whole or piece by piece in
written order, and what is no store refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dualmem_bulk.convert import to_dual
from dualmem_bulk.errors import SourceError
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.schema import DUAL_SCHEMA, schema_identity
from dualmem_bulk.stores import TargetFormat, TargetStore, detect_store, write_store
from dualmem_bulk.stores.staging import unsliced


def _batches() -> list[pa.RecordBatch]:
    """Three batches of 15 nodes (unsliced: Lance 14 panics on a sliced all-null struct)."""
    return [unsliced(to_dual(b)) for b in generate_batches(45, seed=41, batch_size=15)]


def _ids(batches: Iterator[pa.RecordBatch]) -> list[bytes]:
    return [i for b in batches for i in b.column("id").to_pylist()]


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_a_store_is_written_whole_and_read_back_in_order(tmp_path: Path,
                                                         fmt: TargetFormat) -> None:
    batches = _batches()
    path = tmp_path / f"n.{fmt}"
    write_store(path, fmt, DUAL_SCHEMA, batches)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    assert detect_store(path) == fmt
    store = TargetStore(path)
    assert store.format == fmt and store.count_rows() == 45
    assert schema_identity(store.schema) == ("engram.DualMemoryNode", "1")
    expected = _ids(iter(batches))
    assert _ids(store.batches(8)) == expected
    pieces = store.pieces()
    assert sum(pieces) == 45
    assert [i for n in range(len(pieces)) for i in _ids(store.piece_batches(n, 4))] == expected
    assert all(store.piece_files(n) for n in range(len(pieces)))
    assert set(store.describe()) == ({"version", "fragments"} if fmt == "lance" else {"files"})


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_a_failed_write_leaves_nothing(tmp_path: Path, fmt: TargetFormat) -> None:
    def failing() -> Iterator[pa.RecordBatch]:
        yield _batches()[0]
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_store(tmp_path / "n", fmt, DUAL_SCHEMA, failing())
    assert list(tmp_path.iterdir()) == []


def test_a_parquet_stores_parts_are_its_pieces_in_name_order(tmp_path: Path) -> None:
    """Parts as a store past 1M rows has them (written here out of order)."""
    batches = _batches()
    store = tmp_path / "n"
    store.mkdir()
    for i in (2, 0, 1):
        pq.write_table(pa.Table.from_batches([batches[i]]), store / f"part-{i:05d}.parquet")
    target = TargetStore(store)
    assert target.pieces() == [15, 15, 15]
    assert target.piece_files(2) == ("part-00002.parquet",)
    assert _ids(target.batches(10)) == _ids(iter(batches))
    assert _ids(target.piece_batches(1, 10)) == _ids(iter(batches[1:2]))


def test_an_empty_parquet_store_is_still_a_store(tmp_path: Path) -> None:
    write_store(tmp_path / "n", "parquet", DUAL_SCHEMA, [])
    store = TargetStore(tmp_path / "n")
    assert store.count_rows() == 0 and store.pieces() == [0]


def test_what_is_no_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.parquet").write_bytes(b"x")
    for path in (tmp_path / "empty", tmp_path / "file.parquet", tmp_path / "missing"):
        assert detect_store(path) is None
        with pytest.raises(SourceError, match="not a Lance dataset or a directory of Parquet"):
            TargetStore(path)
