"""The partitioned export gives what the serial export gives: the same snapshot rows, the same
quarantine rows and the same target rows in the same order, bit for bit, for every source kind,
any partition size and any number of workers; duplicates across partitions included (the first
valid occurrence in source order wins)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal, legacy_table, read_snapshot

from dualmem_bulk.convert import to_dual
from dualmem_bulk.offline.export import export_snapshot
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.schema import LEGACY_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.sources import plan_runs
from dualmem_bulk.sources.detect import open_source
from dualmem_bulk.stores import TargetStore

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"
WAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "engram-wal" / "engram-data"
"""The shared fixture, reached as ``../shared`` from the repository root."""


def _serial(src: Path, out: Path) -> tuple[pa.Table, list[dict[str, Any]]]:
    """The serial export's snapshot and quarantine (``dualmem-bulk export``)."""
    snapshot = out / "serial.parquet"
    export_snapshot(src, snapshot, batch_size=4096)
    quarantine = out / "serial.quarantine.parquet"
    rows = pq.read_table(quarantine).to_pylist() if quarantine.exists() else []
    return pq.read_table(snapshot), rows


def _partitioned(src: Path, target: Path, batch_size: int, workers: int,
                 fmt: str = "lance") -> tuple[pa.Table, list[dict[str, Any]], pa.Table, int]:
    report = run_offline(OfflineConfig(source=src, target=target, batch_size=batch_size,
                                       workers=workers, target_format=fmt))  # type: ignore[arg-type]
    assert report.verified and report.snapshot_digest == report.target_digest
    run_dir = target.with_name(target.name + ".run")
    quarantine = run_dir / "quarantine.parquet"
    rows = pq.read_table(quarantine).to_pylist() if quarantine.exists() else []
    target_rows = pa.Table.from_batches(list(TargetStore(target).batches(4096)))
    return read_snapshot(run_dir / "snapshot.parquet"), rows, target_rows, report.units


def _same(serial: tuple[pa.Table, list[dict[str, Any]]],
          parted: tuple[pa.Table, list[dict[str, Any]], pa.Table, int]) -> None:
    snapshot, quarantine = serial
    got_snapshot, got_quarantine, target, _units = parted
    assert_bit_equal(got_snapshot.cast(SNAPSHOT_SCHEMA), snapshot.cast(SNAPSHOT_SCHEMA))
    assert got_quarantine == quarantine
    legacy = snapshot.select(LEGACY_SCHEMA.names).cast(LEGACY_SCHEMA).combine_chunks()
    expected = pa.Table.from_batches([to_dual(b, s) for b, s in zip(
        legacy.to_batches(), [snapshot.column("checksum").combine_chunks()], strict=True)])
    assert target.num_rows == expected.num_rows
    if expected.num_rows:
        plain = _plain(expected)  # a Parquet target names list items as Parquet does
        assert_bit_equal(_plain(target.select(expected.column_names)).cast(plain.schema), plain)


def _plain(table: pa.Table) -> pa.Table:
    """``node_type`` as text (a dictionary read back holds only the values used), no field
    metadata (the Lance encodings a store's schema carries)."""
    i = table.schema.get_field_index("node_type")
    table = table.set_column(i, "node_type", table.column(i).cast(pa.utf8()))
    return table.cast(pa.schema([f.remove_metadata() for f in table.schema],
                                metadata=table.schema.metadata))


@pytest.mark.parametrize("name", ["clean.parquet", "extreme.parquet", "invalid.parquet",
                                  "clean.jsonl", "extreme.jsonl", "invalid.jsonl"])
@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_fixtures_equal_the_serial_export(tmp_path: Path, name: str, batch_size: int) -> None:
    src = FIXTURES / name
    _same(_serial(src, tmp_path), _partitioned(src, tmp_path / "n.lance", batch_size, 0))


def test_the_engram_wal_fixture_equals_the_serial_export(tmp_path: Path) -> None:
    serial = _serial(WAL, tmp_path)
    for batch_size in (5, 4096):
        parted = _partitioned(WAL, tmp_path / f"n{batch_size}.lance", batch_size, 0)
        _same(serial, parted)
    assert len(open_source(WAL).partitions(5)) > len(open_source(WAL).partitions(4096)) > 1


def _duplicated(tmp_path: Path) -> Path:
    """Row groups of 10; ids repeated within a group and across groups, some invalid."""
    rows: list[dict[str, Any]] = []
    for i in range(95):
        rows.append({"id": f"m{i % 37}", "content": f"row {i}"})
        if i % 11 == 0:
            rows.append({"id": f"m{i % 37}", "confidence": 2.0})  # invalid, not a duplicate
    rows.append({"id": "6BA7B810-9DAD-11D1-80B4-00C04FD430C8"})
    rows.append({"id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8"})  # same UUID, other case
    src = tmp_path / "dups.parquet"
    pq.write_table(legacy_table(rows), src, row_group_size=10)
    return src


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("batch_size", [1, 10, 35])
def test_duplicates_across_partitions_first_occurrence_wins(tmp_path: Path, workers: int,
                                                            batch_size: int) -> None:
    src = _duplicated(tmp_path)
    serial = _serial(src, tmp_path)
    parted = _partitioned(src, tmp_path / "n.lance", batch_size, workers)
    _same(serial, parted)
    assert serial[0].num_rows == 38
    assert sum("duplicate id" in row["reason"] for row in parted[1]) == 95 - 37 + 1
    groups = pq.ParquetFile(src).metadata
    sizes = [groups.row_group(i).num_rows for i in range(groups.num_row_groups)]
    assert parted[3] == len(plan_runs(sizes, batch_size)) > 1


def test_parquet_target_and_a_lance_source(tmp_path: Path) -> None:
    src = _duplicated(tmp_path)
    legacy = tmp_path / "legacy.lance"
    table = pq.read_table(src).select(LEGACY_SCHEMA.names).cast(LEGACY_SCHEMA)
    for i in range(0, table.num_rows, 20):  # six fragments
        lance.write_dataset(table.slice(i, 20), legacy, mode="append" if i else "create")
    serial = _serial(legacy, tmp_path)
    assert len(open_source(legacy).partitions(20)) == 6
    _same(serial, _partitioned(legacy, tmp_path / "n.lance", 20, 0))
    (tmp_path / "p").mkdir()
    _same(_serial(src, tmp_path / "p"), _partitioned(src, tmp_path / "n.parquet", 10, 0,
                                                     "parquet"))


def test_generated_sources_split_into_many_partitions(tmp_path: Path) -> None:
    from dualmem_bulk.generate import write_generated

    for fmt, name in (("jsonl", "m.jsonl"), ("parquet", "m.parquet")):
        src = tmp_path / name
        write_generated(src, 3000, seed=3, fmt=fmt, batch_size=500)  # type: ignore[arg-type]
        (tmp_path / fmt).mkdir()
        parted = _partitioned(src, tmp_path / fmt / "n.lance", 500, 2)
        assert parted[3] == 6
        _same(_serial(src, tmp_path / fmt), parted)
        journal = Journal.open(tmp_path / fmt / "n.lance.run")
        assert [r.rows for r in journal.batches()] == [500] * 6
        assert len(journal.values["partitions"]) == 6
        journal.close()


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_nothing_to_convert_is_a_success(tmp_path: Path) -> None:
    """A valid Parquet with no rows, a source whose every row is quarantined and an Engram data
    root with nothing readable give exit 0, an empty valid target and a verified run; with
    --strict the invalid rows still refuse the run (exit 3) and leave nothing behind."""
    empty, bad, root = tmp_path / "empty.parquet", tmp_path / "bad.parquet", tmp_path / "root"
    pq.write_table(LEGACY_SCHEMA.empty_table(), empty)
    pq.write_table(legacy_table([{"id": "a", "confidence": 3.0}, {"id": ""}]), bad)
    (root / "default" / "wal").mkdir(parents=True)
    (root / "default" / "wal" / "wal-0000000000000001.log").write_bytes(b"not a record")
    for src, quarantined in ((empty, 0), (bad, 2), (root, 0)):
        target = tmp_path / f"{src.name}.lance"
        done = _cli("convert", src, target, "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["status"] == "done" and report["verified"]
        assert (report["nodes_converted"], report["quarantined"]) == (0, quarantined)
        assert lance.dataset(str(target)).count_rows() == 0
        verified = _cli("verify", f"{target}.run", "--json")
        assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout
    strict = _cli("convert", bad, tmp_path / "strict.lance", "--strict")
    assert strict.returncode == 3 and "--strict" in strict.stderr
    assert not [p for p in tmp_path.iterdir() if "strict" in p.name]
