"""MemoryStore: bit-exact round trips, the MemoryBackend API, the change log, locking."""

from __future__ import annotations

import doctest
import importlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from dualmem_bulk import Memory, MemoryStore
from dualmem_bulk.checksum import row_checksums
from dualmem_bulk.errors import SourceError
from dualmem_bulk.stores.memory_store import batch_to_memories, memories_to_batch
from tests.conftest import assert_bit_equal, legacy_table


def _edge_rows(sample_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*sample_rows,
            {"id": "big", "content": "ü" * 50_000 + "x" * 2, "created_at": -(2**63),
             "last_access": 2**63 - 1, "activation_bits": 0x80000000,
             "embedding_provenance": {"model_name": "", "model_version": "✓", "dimension": 0,
                                      "language": None, "created_at": 2**64 - 1,
                                      "quality_score": None, "metadata": []}},
            {"id": "nan-score", "embedding_provenance": {
                "model_name": "m", "model_version": "1", "dimension": 2**64 - 1,
                "language": "", "created_at": 0, "quality_score": float("nan"),
                "metadata": [("b", ""), ("a", "ключ")]}}]


def _sorted(table: pa.Table) -> pa.Table:
    return table.take(pa.array(np.argsort(np.array(table.column("id").to_pylist(), dtype=object),
                                          kind="stable")))


def test_round_trip_is_bit_exact(tmp_path: Path, sample_rows: list[dict[str, Any]]) -> None:
    table = legacy_table(_edge_rows(sample_rows))
    assert len(table.column("content")[4].as_py().encode()) >= 100_000
    with MemoryStore(tmp_path / "m.sqlite") as store:
        store.store_batch(table.to_batches()[0])
        back = pa.Table.from_batches([store.rows(table.column("id").to_pylist())])
        scanned = pa.Table.from_batches(list(store.scan(2)))
    for got in (_sorted(back), scanned):
        # the provenance is compared through the checksums: Arrow's equals() says NaN != NaN
        assert row_checksums(got) == row_checksums(_sorted(table))
        assert_bit_equal(got.drop_columns("embedding_provenance"),
                         _sorted(table).drop_columns("embedding_provenance"))
        quality = got.column("embedding_provenance").combine_chunks().field("quality_score")
        assert np.asarray(quality.to_numpy(zero_copy_only=False)).view("u4")[-1] == 0x7FC00000


def test_memory_objects_round_trip(tmp_path: Path, sample_rows: list[dict[str, Any]]) -> None:
    """Through Memory values (the service's API) every checksum survives: the embedding keeps
    its bytes, the scalars here are quiet NaNs or ordinary floats."""
    batch = legacy_table(_edge_rows(sample_rows)).to_batches()[0]
    memories = batch_to_memories(batch)
    assert row_checksums(memories_to_batch(memories)) == row_checksums(batch)
    with MemoryStore(tmp_path / "m.sqlite") as store:
        for memory in memories:
            store.store(memory)
        for memory in memories:
            got = store.retrieve(memory.id)
            assert got is not None and got.embedding == memory.embedding
            assert row_checksums(memories_to_batch([got])) == row_checksums(
                memories_to_batch([memory]))
            assert got.last_access == memory.last_access and got.content == memory.content


def _memory(memory_id: str, value: float = 1.0) -> Memory:
    vector = np.zeros(768, dtype=np.float32)
    vector[0], vector[1] = value, 1.0
    return Memory.with_vector(vector, id=memory_id, activation=0.5, confidence=0.5,
                              last_access=1, access_count=2, created_at=3)


def test_backend_api(tmp_path: Path) -> None:
    with MemoryStore(tmp_path / "m.sqlite") as store:
        for i, memory_id in enumerate(["b", "a", "c"]):
            store.store(_memory(memory_id, float(i)))
        assert store.count() == 3 and store.all_ids() == ["a", "b", "c"]
        assert store.contains("a") and not store.contains("z")
        assert store.update_activation("a", 0.25) and not store.update_activation("z", 0.1)
        got = store.retrieve("a")
        assert got is not None and got.activation == 0.25 and got.access_count == 2
        assert [i for i, _ in store.search(np.eye(768, dtype=np.float32)[1], 2)] == ["b", "a"]
        assert store.remove("a") and not store.remove("a")
        assert store.retrieve("a") is None and store.count() == 2


def test_change_log_records_every_write_in_order(tmp_path: Path) -> None:
    with MemoryStore(tmp_path / "m.sqlite") as store:
        store.store(_memory("x"))
        store.store(_memory("y"))
        store.store(_memory("x", 2.0))
        store.update_activation("y", 0.1)
        store.remove("x")
        store.remove("missing")
        assert store.change_position() == 5
        assert store.changes(0, 100) == (["x", "y"], 5)
        assert store.changes(2, 100) == (["x", "y"], 5)
        assert store.changes(0, 2) == (["x", "y"], 2)
        assert store.changes(0, 100, upto=1) == (["x"], 1)
        assert store.changes(5, 100) == ([], 5)
        store.trim_changes(3)
        assert store.changes(0, 100) == (["y", "x"], 5)


def test_write_lock_holds_writers_not_readers(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    with MemoryStore(path) as migrator, MemoryStore(path, busy_timeout_ms=0) as service:
        service.store(_memory("a"))
        with migrator.write_lock():
            assert service.retrieve("a") is not None
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                service.store(_memory("b"))
        service.store(_memory("b"))
        assert migrator.count() == 2


def test_snapshot_sees_one_state(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    with MemoryStore(path) as reader, MemoryStore(path) as writer:
        writer.store(_memory("a"))
        with reader.snapshot():
            writer.store(_memory("b"))
            assert reader.count() == 1 and reader.change_position() == 1
        assert reader.count() == 2


def test_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such MemoryStore"):
        MemoryStore(tmp_path / "absent.sqlite", create=False)
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(SourceError, match="not a MemoryStore"):
        MemoryStore(tmp_path / "junk.sqlite")
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(SourceError, match="tables are missing"):
        MemoryStore(tmp_path / "other.sqlite", create=False)


def test_bad_embedding_blob_names_the_memory(tmp_path: Path) -> None:
    with MemoryStore(tmp_path / "m.sqlite") as store:
        store.store(_memory("short"))
        conn = sqlite3.connect(tmp_path / "m.sqlite")
        conn.execute("UPDATE memories SET embedding = x'00' WHERE id = 'short'")
        conn.commit()
        conn.close()
        with pytest.raises(SourceError, match="'short': embedding is 1, expected 3072"):
            store.retrieve("short")
    with pytest.raises(ValueError, match="3072 bytes"):
        Memory(id="x", embedding=b"\0", activation=0, confidence=0, last_access=0,
               access_count=0, created_at=0)


@pytest.mark.parametrize(
    "module", ["dualmem_bulk.stores.memory_store", "dualmem_bulk.online.compat"]
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
