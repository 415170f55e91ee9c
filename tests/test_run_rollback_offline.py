"""In-place runs: the legacy store kept as a Lance dataset (a source of its own), and rollback and
finalize of stores converted in place (legacy Parquet directories and Lance datasets), including
after a SIGKILL and when the backup or the pre-migration version is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import legacy_table

from dualmem_bulk import finalize_run, rollback_run, run_status
from dualmem_bulk.errors import SourceError
from dualmem_bulk.generate import write_generated
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources.detect import open_source
from dualmem_bulk.sources.scan import scan_source
from dualmem_bulk.stores import TargetStore, open_parquet, parquet_batches

TAG = "dualmem-pre-migration"


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture(scope="module")
def rows_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "memories.parquet"
    write_generated(path, 2000, seed=21)
    return path


@pytest.fixture(scope="module")
def rows_large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "memories.parquet"
    write_generated(path, 30_000, seed=22)
    return path


def _batches(rows: Path) -> list[pa.RecordBatch]:
    return list(parquet_batches(open_parquet(rows), 1000, LEGACY_SCHEMA.names))


def parquet_store(rows: Path, store: Path, extra: pa.Table | None = None) -> Path:
    """A legacy Parquet store: the rows split over two part files (plus ``extra`` rows)."""
    table = pq.read_table(rows)
    if extra is not None:
        table = pa.concat_tables([table, extra])
    store.mkdir()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), store / "memories-a.parquet")
    pq.write_table(table.slice(half), store / "memories-b.parquet")
    return store


def lance_store(rows: Path, store: Path) -> Path:
    """A legacy Lance store of two versions: created with half the rows, then appended to."""
    batches = _batches(rows)
    half = len(batches) // 2
    for mode, part in (("create", batches[:half]), ("append", batches[half:])):
        lance.write_dataset(pa.RecordBatchReader.from_batches(LEGACY_SCHEMA, iter(part)),
                            str(store), schema=LEGACY_SCHEMA, mode=mode)
    return store


def make_store(fmt: str, rows: Path, tmp_path: Path) -> Path:
    if fmt == "parquet":
        return parquet_store(rows, tmp_path / "memories")
    return lance_store(rows, tmp_path / "memories.lance")


def files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file()}


def sorted_rows(store: Path) -> pa.Table:
    if (store / "_versions").is_dir():
        return lance.dataset(str(store)).to_table().sort_by("id")
    return pq.read_table(store).select(LEGACY_SCHEMA.names).sort_by("id")


def in_place(store: Path, fmt: str) -> Path:
    report = run_offline(OfflineConfig(source=store, target=store, in_place=True,
                                       target_format=fmt, batch_size=500))  # type: ignore[arg-type]
    assert report.status == "done" and report.verified
    return store.with_name(store.name + ".run")


def journal_get(run_dir: Path, key: str) -> Any:
    journal = Journal.open(run_dir)
    try:
        return journal.state if key == "state" else journal.values[key]
    finally:
        journal.close()


# -- the legacy Lance store as a source ----------------------------------------------------------


def test_lance_legacy_source_reads_like_parquet(rows_small: Path, tmp_path: Path) -> None:
    store = lance_store(rows_small, tmp_path / "m.lance")
    source = open_source(store)
    assert source.kind == "lance" and source.total_rows == 2000
    assert source.describe()["version"] == 2
    rows = [b.batch.column("_row").to_pylist() for b in source.batches(300)]
    assert [r for chunk in rows for r in chunk] == list(range(2000))
    assert all(len(chunk) <= 300 for chunk in rows)
    assert scan_source(store, batch_size=300).snapshot_digest == \
        scan_source(rows_small).snapshot_digest


def test_a_converted_store_is_no_legacy_source(rows_small: Path, tmp_path: Path) -> None:
    for fmt in ("lance", "parquet"):
        target = tmp_path / f"nodes-{fmt}"
        run_offline(OfflineConfig(source=rows_small, target=target, target_format=fmt))  # type: ignore[arg-type]
        with pytest.raises(SourceError, match="already a DualMemoryNode store"):
            open_source(target)
        done = cli("convert", target, tmp_path / f"again-{fmt}")
        assert done.returncode == 3 and "already a DualMemoryNode store" in done.stderr


# -- rollback of in-place runs -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "lance"])
def test_rollback_restores_the_store(rows_small: Path, tmp_path: Path, fmt: str) -> None:
    store = make_store(fmt, rows_small, tmp_path)
    before_files, before_rows = files(store), sorted_rows(store)
    digest = scan_source(store).snapshot_digest
    done = cli("convert", store, "--in-place", "--target-format", fmt, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["target_digest"] == digest
    run_dir = store.with_name(store.name + ".run")
    assert run_status(run_dir).rollback_possible

    done = cli("rollback", run_dir, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "in-place" and report["store_format"] == fmt
    assert report["proven_digest"] == report["snapshot_digest"] == digest
    assert scan_source(store).snapshot_digest == digest
    assert sorted_rows(store).equals(before_rows)
    if fmt == "parquet":
        assert report["restored_from"].startswith("the backup")
        assert files(store) == before_files  # the very files, renamed back
        assert not store.with_name(".memories.dualmem-legacy").exists()
    else:
        assert report["restored_from"] == "version 2"
        ds = lance.dataset(str(store))
        assert ds.schema.names == LEGACY_SCHEMA.names and TAG not in ds.tags.list()
    assert journal_get(run_dir, "state") == "rolled-back"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([store.name, run_dir.name])


@pytest.mark.parametrize("fmt", ["parquet", "lance"])
def test_rollback_after_sigkill_mid_conversion(rows_large: Path, tmp_path: Path,
                                               fmt: str) -> None:
    store = make_store(fmt, rows_large, tmp_path)
    digest = scan_source(store).snapshot_digest
    run_dir = store.with_name(store.name + ".run")
    args = ["convert", str(store), "--in-place", "--target-format", fmt, "--batch-size", "1000"]
    # killed once the store is the converted one (Parquet: renamed into place, the legacy
    # store moved to its backup; Lance: its commit published), before the journal knew
    fault = "store-swap" if fmt == "parquet" else "in-place-publish"
    killed = subprocess.run([sys.executable, "-m", "dualmem_bulk", *args],
                            capture_output=True, stdin=subprocess.DEVNULL, timeout=300,
                            env={**os.environ, "DUALMEM_FAULT": f"{fault}:1:SIGKILL"})
    assert killed.returncode == -9, killed.stderr
    assert "node_type" in TargetStore(store).schema.names  # the converted store, in place
    done = cli("rollback", run_dir, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["state_before"] == "converting"
    assert report["proven_digest"] == report["snapshot_digest"] == digest
    assert scan_source(store).snapshot_digest == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([store.name, run_dir.name])


def test_parquet_store_rebuilt_from_the_snapshot_when_the_backup_is_gone(
    rows_small: Path, tmp_path: Path
) -> None:
    bad = legacy_table([{"id": "broken", "confidence": 3.0}])
    store = parquet_store(rows_small, tmp_path / "memories", extra=bad)
    digest = scan_source(store).snapshot_digest
    run_dir = in_place(store, "parquet")
    backup = Path(journal_get(run_dir, "legacy_backup"))
    assert backup.is_dir()
    os.rename(backup, tmp_path / "lost")  # an operator moved it away
    report = rollback_run(run_dir)
    assert report.restored_from == "the snapshot"
    assert report.proven_digest == digest == scan_source(store).snapshot_digest
    assert any("1 quarantined row(s)" in note for note in report.notes)
    assert pq.read_table(store).schema.names == LEGACY_SCHEMA.names
    assert not any(p.name.startswith(".memories.") for p in tmp_path.iterdir())


def test_lance_store_rebuilt_from_the_snapshot_when_its_version_is_gone(
    rows_small: Path, tmp_path: Path
) -> None:
    store = lance_store(rows_small, tmp_path / "memories.lance")
    before = sorted_rows(store)
    run_dir = in_place(store, "lance")
    ds = lance.dataset(str(store))
    ds.tags.delete(TAG)
    ds.cleanup_old_versions(older_than=timedelta(0), delete_unverified=True)
    assert 2 not in {v["version"] for v in lance.dataset(str(store)).versions()}
    report = rollback_run(run_dir)
    assert report.restored_from == "the snapshot"
    assert report.proven_digest == report.snapshot_digest
    assert sorted_rows(store).equals(before)


def test_a_crashed_parquet_swap_back_is_finished(rows_small: Path, tmp_path: Path) -> None:
    store = parquet_store(rows_small, tmp_path / "memories")
    before = files(store)
    run_dir = in_place(store, "parquet")
    os.replace(store, tmp_path / ".memories.dualmem-trash")  # killed after moving it aside
    journal = Journal.open(run_dir)
    journal.set_state("rolling-back", "rollback from done", rollback_from="done",
                      rollback_target_ours=True, rollback_steps=[])
    journal.close()
    report = rollback_run(run_dir)
    assert report.state_before == "done" and report.proven_digest == report.snapshot_digest
    assert files(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memories", "memories.run"]


def test_a_damaged_snapshot_leaves_the_converted_store(rows_small: Path, tmp_path: Path) -> None:
    store = lance_store(rows_small, tmp_path / "memories.lance")
    run_dir = in_place(store, "lance")
    snapshot = min((run_dir / "snapshot.parquet").glob("part-*.parquet"))  # its first part
    pq.write_table(pq.read_table(snapshot).slice(1), snapshot)
    version = lance.dataset(str(store)).version
    done = cli("rollback", run_dir, "--yes")
    assert done.returncode == 1 and "nothing was changed" in done.stderr
    ds = lance.dataset(str(store))
    assert ds.version == version and TAG in ds.tags.list()
    assert journal_get(run_dir, "state") == "done"


# -- finalize ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "lance"])
def test_finalize_removes_the_backup_then_refuses_rollback(rows_small: Path, tmp_path: Path,
                                                           fmt: str) -> None:
    store = make_store(fmt, rows_small, tmp_path)
    run_dir = in_place(store, fmt)
    report = finalize_run(run_dir)
    if fmt == "parquet":
        backup = tmp_path / ".memories.dualmem-legacy"
        assert report.removed == [str(backup.resolve())] and not backup.exists()
    else:
        assert report.removed == [f"tag {TAG} of {store}"]
        assert TAG not in lance.dataset(str(store)).tags.list()
    assert (run_dir / "snapshot.parquet").exists()
    refused = cli("rollback", run_dir, "--yes")
    assert refused.returncode == 2 and "finalized" in refused.stderr
    with pytest.raises(SourceError, match="already a DualMemoryNode store"):
        open_source(store)  # still the converted store
