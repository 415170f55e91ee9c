"""Recognising a source (``dualmem_bulk.sources.detect``) on real files: by content whatever its
name, directories by what they hold, a refusal that says why, a converted store refused as a
source, and JSON lines cut into byte ranges that read back exactly as the whole file."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import lance
import pyarrow as pa
import pytest

from dualmem_bulk.errors import SourceError, UsageError
from dualmem_bulk.generate import generate_batches, write_generated
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources import ROW_COLUMN, SourceBatch
from dualmem_bulk.sources.detect import JsonlSource, detect_source, open_source
from dualmem_bulk.stores.staging import unsliced


def test_a_file_is_recognised_by_its_content_not_its_name(tmp_path: Path) -> None:
    parquet, jsonl = tmp_path / "rows.parquet", tmp_path / "rows.jsonl"
    write_generated(parquet, 10, seed=1)
    write_generated(jsonl, 10, seed=1, fmt="jsonl")
    parquet.rename(tmp_path / "a.jsonl")
    jsonl.rename(tmp_path / "b.parquet")
    assert detect_source(tmp_path / "a.jsonl") == "parquet"
    assert detect_source(tmp_path / "b.parquet") == "jsonl"
    assert open_source(tmp_path / "b.parquet").kind == "jsonl"


def test_directories_are_recognised_by_what_they_hold(tmp_path: Path) -> None:
    root = tmp_path / "engram-data"
    write_generated(root, 50, seed=2, fmt="engram-wal")
    assert detect_source(root) == "engram-wal"
    store = tmp_path / "store.lance"
    lance.write_dataset(pa.RecordBatchReader.from_batches(
        LEGACY_SCHEMA, map(unsliced, generate_batches(20, 2, 20))), str(store),
        schema=LEGACY_SCHEMA)
    assert detect_source(store) == "lance"
    parts = tmp_path / "parts"
    (parts / "deeper").mkdir(parents=True)
    write_generated(parts / "deeper" / "p.parquet", 10, seed=3)
    assert detect_source(parts) == "parquet"


@pytest.mark.parametrize(("content", "why"), [
    (None, "no such file or directory"),
    (b"", "empty file"),
    (b"\x00garbage", "not a legacy source: neither Parquet"),
    ("dir", "directory holds no .parquet files"),
])
def test_what_is_no_source_is_refused_saying_why(tmp_path: Path, content: bytes | str | None,
                                                 why: str) -> None:
    path = tmp_path / "source"
    if content == "dir":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(SourceError, match=why):
        open_source(path)


def test_a_converted_store_is_no_source_and_spaces_need_an_engram_root(tmp_path: Path) -> None:
    source, target = tmp_path / "m.parquet", tmp_path / "n.parquet"
    write_generated(source, 20, seed=4)
    run_offline(OfflineConfig(source=source, target=target, target_format="parquet"))
    with pytest.raises(SourceError, match="already a DualMemoryNode store"):
        open_source(target)
    with pytest.raises(UsageError) as refused:
        open_source(source, spaces=["default"])
    assert refused.value.field == "spaces"


def _rows(batches: Iterable[SourceBatch]) -> list[tuple[int, str]]:
    return [(row, memory_id) for batch in batches
            for row, memory_id in zip(batch.batch.column(ROW_COLUMN).to_pylist(),
                                      batch.batch.column("id").to_pylist(), strict=True)]


@pytest.mark.parametrize("newline_at_end", [True, False])
def test_jsonl_ranges_cover_every_line_once(tmp_path: Path, newline_at_end: bool) -> None:
    path = tmp_path / "m.jsonl"
    write_generated(path, 20, seed=5, fmt="jsonl")
    if not newline_at_end:
        path.write_bytes(path.read_bytes().rstrip(b"\n"))
    source = JsonlSource(path)
    assert source.total_rows == 20
    parts = source.partitions(7)
    assert [(p.first_line, p.rows) for p in parts] == [(0, 7), (7, 7), (14, 6)]
    assert parts[0].start == 0 and parts[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    whole = _rows(source.batches(6))
    assert len(whole) == 20
    assert [r for part in parts for r in _rows(part.batches(6))] == whole
