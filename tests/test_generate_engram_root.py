"""Generated Engram data roots (``dualmem_bulk.generate.engram_root``): replayed by the WAL
reader they give the generated memories, record by record as Engram writes them; the same bytes
for the same seed, written atomically."""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import assert_bit_equal

from dualmem_bulk.errors import TargetExists
from dualmem_bulk.generate import engram_root, generate_wal_batches, write_generated
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources import ROW_COLUMN
from dualmem_bulk.sources.engram_wal import read_engram_wal
from dualmem_bulk.sources.engram_wal_codec import HEADER_SIZE, EntryType


def _file_records(path: Path) -> list[tuple[int, int, bytes]]:
    """(sequence, entry type, payload) of every record of a well-formed WAL file."""
    data, out, at = path.read_bytes(), [], 0
    while at < len(data):
        seq, _, kind, size = struct.unpack_from("<QQII", data, at + 4)
        out.append((seq, kind, data[at + HEADER_SIZE : at + HEADER_SIZE + size]))
        at += HEADER_SIZE + size
    return out


def test_generated_root_replays_to_the_generated_memories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engram_root, "_CHECKPOINT_EVERY", 300)
    root = tmp_path / "engram-data"
    assert write_generated(root, 6_000, seed=11, fmt="engram-wal") == 6_000
    source = read_engram_wal(root, batch_size=1_000)
    got = pa.Table.from_batches([b.batch for b in source]).drop_columns([ROW_COLUMN])
    want = pa.Table.from_batches(list(generate_wal_batches(6_000, seed=11, batch_size=2_500)))
    assert_bit_equal(got.replace_schema_metadata(LEGACY_SCHEMA.metadata), want)

    report = source.report.as_dict()
    assert report["damage"] == {k: [] for k in report["damage"]}
    totals = report["totals"]
    assert totals["memories_yielded"] == 6_000
    assert totals["duplicates_skipped"] == totals["episode_store_records"] - 6_000 > 0
    spaces = report["spaces"]
    assert "default" in spaces and 2 <= len(spaces) <= 3
    assert all(s["wal_files"] >= 3 for s in spaces.values())
    by_type = [s["records_by_type"] for s in spaces.values()]
    assert all(t.get("Checkpoint", 0) > 0 for t in by_type)
    assert sum(t.get("MemoryUpdate", 0) for t in by_type) > 0
    files = sorted(root.glob("*/wal/*"))
    assert all(f.name.startswith("wal-") and len(f.name) == 24 for f in files)
    for path in files:  # sequences restart at 0 in every file and count up by one
        records = _file_records(path)
        assert [seq for seq, _, _ in records] == list(range(len(records)))
        for seq, kind, payload in records:
            if kind == EntryType.Checkpoint:
                assert struct.unpack("<Q", payload) == (seq - 1,)
    assert got["content"].null_count == 0
    decay = pa.concat_arrays([c.field("decay_function") for c in got["episode"].chunks])
    assert set(decay.field("variant").drop_null().to_pylist()) >= {
        "Exponential", "PowerLaw", "TwoComponent", "Hybrid"}


def test_generated_root_is_deterministic_and_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    two.mkdir()  # an empty directory is fine
    for path, seed in ((one, 4), (two, 4), (other, 5)):
        write_generated(path, 500, seed=seed, fmt="engram-wal")

    def contents(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert contents(one) == contents(two)
    assert contents(one) != contents(other)
    with pytest.raises(TargetExists, match="already exists"):
        write_generated(one, 10, seed=4, fmt="engram-wal")

    calls = []

    def broken(batch: pa.RecordBatch) -> list[bytes]:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk on fire")
        return real(batch)

    real = engram_root.episode_payloads
    monkeypatch.setattr(engram_root, "episode_payloads", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_generated(tmp_path / "broken", 9_000, seed=4, fmt="engram-wal")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "other", "two"]
