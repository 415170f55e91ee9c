"""The store read by other tools: DuckDB sees a converted Lance store's ``embedding`` as a
fixed-size FLOAT[768] array (so its array functions work on it) and the node ``id`` as the
16 bytes of the UUID (a BLOB: the store keeps ``fixed_size_binary(16)``; see
benchmarks/RESULTS.md for why not Arrow's UUID type)."""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
import lance
import numpy as np
import pyarrow as pa

from dualmem_bulk.convert import node_uuids
from dualmem_bulk.offline.run import OfflineConfig, run_offline

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "clean.parquet"


def test_duckdb_reads_the_embedding_as_a_fixed_size_array(tmp_path: Path) -> None:
    target = tmp_path / "nodes.lance"
    run_offline(OfflineConfig(source=FIXTURE, target=target))
    nodes = lance.dataset(str(target))
    first = nodes.take([0], columns=["id", "episode_id", "embedding"])
    con = duckdb.connect()
    con.register("nodes", nodes)
    kinds = con.sql("SELECT DISTINCT typeof(id), typeof(embedding) FROM nodes").fetchall()
    assert kinds == [("BLOB", "FLOAT[768]")]
    episode_id = first.column("episode_id")[0].as_py()
    # a string filter pushed down into the Lance dataset fails (Substrait, lance issue 2972):
    # filter the columns read as Arrow
    con.register("read", nodes.to_table(columns=["id", "episode_id", "embedding"]))
    found = con.sql("SELECT id, embedding, array_inner_product(embedding, embedding) "
                    "FROM read WHERE episode_id = ?", params=[episode_id]).fetchall()
    assert len(found) == 1
    node_id, embedding, norm2 = found[0]
    expected = np.asarray(first.column("embedding")[0].values, dtype=np.float32)
    assert np.asarray(embedding, dtype=np.float32).tobytes() == expected.tobytes()
    assert np.isclose(norm2, float(expected.astype(np.float64) @ expected), rtol=1e-5)
    expected_id = node_uuids(pa.array([episode_id]))[0].as_py()
    assert uuid.UUID(bytes=node_id) == uuid.UUID(bytes=expected_id)
