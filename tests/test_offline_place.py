"""In-place conversion of a legacy store (Parquet dataset or Lance dataset) at its own path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lance
import pyarrow as pa
import pytest
from conftest import kill_after_units

from dualmem_bulk import run_status
from dualmem_bulk.generate import generate_batches, write_generated
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.schema import LEGACY_SCHEMA, schema_identity
from dualmem_bulk.sources.scan import scan_source
from dualmem_bulk.stores import TargetStore
from dualmem_bulk.stores.staging import unsliced

NODES = 6000


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def legacy_store(tmp_path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        store = tmp_path / "store"
        store.mkdir()
        write_generated(store / "part-0.parquet", NODES, seed=21, batch_size=500)
        return store
    store = tmp_path / "store.lance"
    reader = pa.RecordBatchReader.from_batches(
        LEGACY_SCHEMA, map(unsliced, generate_batches(NODES, 21, 1000)))
    lance.write_dataset(reader, str(store), schema=LEGACY_SCHEMA)
    return store


@pytest.mark.parametrize("fmt", ["parquet", "lance"])
def test_in_place_conversion(tmp_path: Path, fmt: str) -> None:
    store = legacy_store(tmp_path, fmt)
    before = scan_source(store).snapshot_digest
    done = cli("convert", store, "--in-place", "--target-format", fmt, "--batch-size", "1000",
               "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verified"] and report["snapshot_digest"] == before == report["target_digest"]
    converted = TargetStore(store)
    assert schema_identity(converted.schema) == ("engram.DualMemoryNode", "1")
    assert converted.count_rows() == NODES
    journal = Journal.open(Path(f"{store}.run"))
    assert journal.values["mode"] == "in-place" and journal.values["swapped"] is True
    if fmt == "lance":
        ds = lance.dataset(str(store))
        tag = ds.tags.list()["dualmem-pre-migration"]
        assert tag["version"] == journal.values["pre_migration_version"] == 1
        old = lance.dataset(str(store), version="dualmem-pre-migration")
        assert schema_identity(old.schema) == ("engram.Memory", "1")
        assert old.count_rows() == NODES
    else:
        backup = Path(journal.values["legacy_backup"])
        assert backup.name == ".store.dualmem-legacy"
        assert scan_source(backup).snapshot_digest == before
    journal.close()
    assert run_status(Path(f"{store}.run")).rollback_possible


@pytest.mark.parametrize("fmt", ["parquet", "lance"])
def test_in_place_killed_then_resumed(tmp_path: Path, fmt: str) -> None:
    store = legacy_store(tmp_path, fmt)
    before = scan_source(store).snapshot_digest
    run_dir = Path(f"{store}.run")
    args = ["convert", str(store), "--in-place", "--target-format", fmt, "--batch-size", "500",
            "--json"]
    kill_after_units(args, run_dir, 3)
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["verified"] and report["target_digest"] == before


def test_in_place_refuses_what_it_cannot_convert(tmp_path: Path) -> None:
    src = tmp_path / "m.parquet"
    write_generated(src, 100, seed=1)
    single = cli("convert", src, "--in-place", "--target-format", "parquet")
    assert single.returncode == 2 and "legacy store directory" in single.stderr
    store = legacy_store(tmp_path, "parquet")
    wrong = cli("convert", store, "--in-place")
    assert wrong.returncode == 2 and "--target-format parquet" in wrong.stderr
    both = cli("convert", store, tmp_path / "x.lance", "--in-place")
    assert both.returncode == 2
    neither = cli("convert", store)
    assert neither.returncode == 2 and "missing TARGET" in neither.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet", "store"]
