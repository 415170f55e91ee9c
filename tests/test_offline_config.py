"""What an offline run knows of its source before reading it (``dualmem_bulk.offline.config``):
the rows it sizes the default worker pool for: counted from Parquet footers and a Lance
manifest, estimated from the bytes of JSON lines and an Engram data root (whose rows are only
counted by decoding them), 0 for a source that cannot be read."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow.parquet as pq
import pytest

from dualmem_bulk.generate import write_generated
from dualmem_bulk.offline.config import BYTES_PER_ROW, OfflineConfig, source_rows

NODES = 1_500


def _rows(source: Path) -> int:
    return source_rows(OfflineConfig(source=source, target=source.with_name("n.lance")))


def test_parquet_and_lance_sources_are_counted_exactly(tmp_path: Path) -> None:
    parquet = tmp_path / "m.parquet"
    write_generated(parquet, NODES, 3, batch_size=500)
    assert _rows(parquet) == NODES
    folder = tmp_path / "parts"
    folder.mkdir()
    for name in ("a", "b"):
        pq.write_table(pq.read_table(parquet), folder / f"{name}.parquet")
    assert _rows(folder) == 2 * NODES
    store = tmp_path / "legacy.lance"
    lance.write_dataset(pq.read_table(parquet), str(store))
    assert _rows(store) == NODES


@pytest.mark.parametrize("fmt", ["jsonl", "engram-wal"])
def test_json_lines_and_a_data_root_are_estimated_from_their_bytes(
        tmp_path: Path, fmt: str) -> None:
    source = tmp_path / ("m.jsonl" if fmt == "jsonl" else "engram-data")
    write_generated(source, NODES, 3, fmt=fmt)  # type: ignore[arg-type]
    estimate = _rows(source)
    assert NODES * 0.8 <= estimate <= NODES * 1.25, (fmt, estimate, BYTES_PER_ROW[fmt])


def test_a_source_that_cannot_be_read_sizes_no_pool(tmp_path: Path) -> None:
    assert _rows(tmp_path / "missing.parquet") == 0
    (tmp_path / "empty").mkdir()
    assert _rows(tmp_path / "empty") == 0
    (tmp_path / "noise.bin").write_bytes(b"\x00" * 100)
    assert _rows(tmp_path / "noise.bin") == 0
