"""The offline run end to end on real files: snapshot, quarantine, target, verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal, legacy_table, read_snapshot

from dualmem_bulk import verify_run
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import to_legacy
from dualmem_bulk.errors import InvalidRows, SchemaMismatch, SourceError, TargetExists
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources.scan import scan_source
from dualmem_bulk.stores import TargetStore


def _source(tmp_path: Path, rows: list[dict[str, Any]], name: str = "src.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(legacy_table(rows), path, row_group_size=3)
    return path


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"mem_{i:08x}", "content": f"memory {i}", "access_count": i} for i in range(n)]


def _read_back(target: Path) -> pa.Table:
    store = TargetStore(target)
    batches = [to_legacy(b) for b in store.batches(1000)]
    return pa.Table.from_batches(batches, schema=LEGACY_SCHEMA).sort_by("id")


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_convert_verifies_and_round_trips(tmp_path: Path, fmt: str, batch_size: int,
                                          sample_rows: list[dict[str, Any]]) -> None:
    rows = sample_rows + _rows(9)
    src = _source(tmp_path, rows)
    target = tmp_path / "nodes.out"
    report = run_offline(OfflineConfig(source=src, target=target, target_format=fmt,  # type: ignore[arg-type]
                                       batch_size=batch_size))
    expected = legacy_table(rows)
    digest = TableDigest.of(row_checksums(expected))
    assert report.status == "done" and report.verified
    assert (report.nodes_in, report.nodes_converted, report.quarantined) == (13, 13, 0)
    assert report.snapshot_digest == report.target_digest == digest.hex
    assert_bit_equal(_read_back(target), expected.sort_by("id"))
    run_dir = tmp_path / "nodes.out.run"
    snapshot = read_snapshot(run_dir / "snapshot.parquet")
    assert snapshot.num_rows == 13
    assert json.loads((run_dir / "report.json").read_text())["status"] == "done"
    journal = Journal.open(run_dir)
    assert journal.state == "done"
    assert journal.committed().hex == digest.hex
    assert sum(r.rows for r in journal.batches()) == 13
    journal.close()


def test_invalid_rows_are_quarantined(tmp_path: Path) -> None:
    rows = [*_rows(4), {"id": "mem_00000001"}, {"id": "bad", "confidence": 3.0}]
    src = _source(tmp_path, rows)
    report = run_offline(OfflineConfig(source=src, target=tmp_path / "n.lance"))
    assert (report.nodes_in, report.nodes_converted, report.quarantined) == (6, 4, 2)
    q = pq.read_table(tmp_path / "n.lance.run" / "quarantine.parquet").to_pylist()
    assert [(r["row"], r["id"]) for r in q] == [(4, "mem_00000001"), (5, "bad")]
    assert "duplicate id" in q[0]["reason"] and "confidence is 3.0" in q[1]["reason"]
    assert all(r["source"] == str(src) for r in q)
    assert TargetStore(tmp_path / "n.lance").count_rows() == 4


def test_strict_fails_before_writing_target(tmp_path: Path) -> None:
    src = _source(tmp_path, [*_rows(3), {"id": ""}])
    target = tmp_path / "n.lance"
    with pytest.raises(InvalidRows, match=r"1 invalid row.*row 3: id is empty") as err:
        run_offline(OfflineConfig(source=src, target=target, strict=True))
    assert err.value.exit_code == 3
    assert not target.exists()
    assert not (tmp_path / "n.lance.run").exists()


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    src = _source(tmp_path, [*_rows(5), {"id": ""}])
    before = sorted(p.name for p in tmp_path.iterdir())
    report = run_offline(OfflineConfig(source=src, target=tmp_path / "n.lance", dry_run=True))
    assert report.status == "dry-run"
    assert (report.nodes_in, report.nodes_converted, report.quarantined) == (6, 5, 1)
    assert report.estimated_disk_bytes and report.estimated_disk_bytes > 0
    assert report.snapshot_digest == TableDigest.of(row_checksums(legacy_table(_rows(5)))).hex
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_existing_target_is_refused(tmp_path: Path) -> None:
    src = _source(tmp_path, _rows(2))
    (tmp_path / "n.lance").mkdir()
    with pytest.raises(TargetExists):
        run_offline(OfflineConfig(source=src, target=tmp_path / "n.lance"))


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "empty file"), (b"PAR1garbage", "not a readable Parquet file"),
     (b"hello", "neither Parquet")],
)
def test_bad_source_files(tmp_path: Path, content: bytes, problem: str) -> None:
    src = tmp_path / "src.parquet"
    src.write_bytes(content)
    with pytest.raises(SourceError, match=problem):
        run_offline(OfflineConfig(source=src, target=tmp_path / "n.lance"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.parquet"]


def test_truncated_parquet(tmp_path: Path) -> None:
    src = _source(tmp_path, _rows(20))
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"src\.parquet"):
        run_offline(OfflineConfig(source=src, target=tmp_path / "n.lance"))
    assert not (tmp_path / "n.lance").exists() and not (tmp_path / "n.lance.run").exists()


def test_wrong_schema(tmp_path: Path) -> None:
    src = tmp_path / "src.parquet"
    pq.write_table(pa.table({"id": ["a"], "embedding": [[1.0] * 768]}), src)
    with pytest.raises(SchemaMismatch, match=r"column 'embedding'.*double"):
        run_offline(OfflineConfig(source=src, target=tmp_path / "n.lance"))


def test_directory_source(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    _source(tmp_path / "src", _rows(3), "a.parquet")
    _source(tmp_path / "src", [{"id": "other"}], "b.parquet")
    report = run_offline(OfflineConfig(source=tmp_path / "src", target=tmp_path / "n.lance"))
    assert report.nodes_converted == 4


def test_verify_detects_a_changed_node(tmp_path: Path) -> None:
    src = _source(tmp_path, _rows(6))
    target = tmp_path / "n.lance"
    run_offline(OfflineConfig(source=src, target=target))
    ds = lance.dataset(str(target))
    ds.update({"access_count": "access_count + 1"}, where="episode_id = 'mem_00000002'")
    report = verify_run(tmp_path / "n.lance.run")
    assert not report.ok
    assert report.mismatched == 1
    assert report.mismatches[0] == {"id": "mem_00000002",
                                    "problem": "fields differ from the stored checksum"}


def test_verify_detects_a_missing_node(tmp_path: Path) -> None:
    src = _source(tmp_path, _rows(6))
    target = tmp_path / "n.lance"
    run_offline(OfflineConfig(source=src, target=target))
    lance.dataset(str(target)).delete("episode_id = 'mem_00000004'")
    report = verify_run(tmp_path / "n.lance.run")
    assert not report.ok
    assert report.mismatches == [{"id": "mem_00000004", "problem": "missing from the target"}]
    assert (report.snapshot_rows, report.target_rows) == (6, 5)


def test_scan_source_matches_snapshot_digest(tmp_path: Path) -> None:
    src = _source(tmp_path, _rows(7))
    scanned = scan_source(src, batch_size=2)
    converted = run_offline(OfflineConfig(source=src, target=tmp_path / "n.lance"))
    assert scanned.snapshot_digest == converted.snapshot_digest
    assert scanned.nodes_in == 7
