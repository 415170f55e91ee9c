"""The run directory has one owner: every file that a conversion (copy and in place), an online
migration, a rollback and a finalize leave in it, and the backup an in-place run keeps beside
its store, is named by :mod:`dualmem_bulk.rundir.files`."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dualmem_bulk import finalize_run, rollback_run
from dualmem_bulk.generate import generate_batches, write_generated
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.online.run import OnlineConfig, run_online
from dualmem_bulk.rundir import files
from dualmem_bulk.stores.memory_store import MemoryStore

OWNED = {files.LOCK, files.JOURNAL, files.SNAPSHOT, files.QUARANTINE, files.REPORT,
         files.ROLLBACK_REPORT, files.DUAL_LOCK, files.PENDING, files.PAUSE}


def entries(run_dir: Path) -> set[str]:
    """The run directory's entries, a SQLite database's ``-wal`` and ``-shm`` files counted as
    the database."""
    return {p.name.removesuffix("-wal").removesuffix("-shm") for p in run_dir.iterdir()}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "memories.parquet"
    write_generated(path, 2000, seed=5)
    return path


def test_a_copy_run_and_its_rollback(rows: Path, tmp_path: Path) -> None:
    target = tmp_path / "nodes.lance"
    report = run_offline(OfflineConfig(source=rows, target=target, batch_size=500))
    run_dir = files.default_run_dir(target)
    assert report.status == "done" and report.run_dir == str(run_dir)
    assert {files.LOCK, files.JOURNAL, files.SNAPSHOT, files.REPORT} <= entries(run_dir) <= OWNED
    assert not files.staging_path(target).exists()
    rollback_run(run_dir)
    assert files.ROLLBACK_REPORT in entries(run_dir) <= OWNED


def test_an_in_place_run_keeps_its_backup_where_finalize_looks(rows: Path,
                                                               tmp_path: Path) -> None:
    store = tmp_path / "memories"
    store.mkdir()
    pq.write_table(pq.read_table(rows), store / "memories-a.parquet")
    run_offline(OfflineConfig(source=store, target=store, in_place=True,
                              target_format="parquet", batch_size=500))
    run_dir = files.default_run_dir(store)
    assert entries(run_dir) <= OWNED
    backup = files.legacy_backup(store).resolve()
    assert (backup / "memories-a.parquet").is_file()
    report = finalize_run(run_dir)
    assert report.removed == [str(backup)] and not backup.exists()
    assert entries(run_dir) <= OWNED


def test_an_online_run_and_its_finalize(tmp_path: Path) -> None:
    live = tmp_path / "m.sqlite"
    with MemoryStore(live) as store:
        for batch in generate_batches(300, 5, 100):
            store.store_batch(batch)
    target = tmp_path / "nodes.lance"
    report = run_online(OnlineConfig(store=live, target=target, batch_size=100))
    run_dir = files.default_run_dir(target)
    assert report.status == "done" and report.run_dir == str(run_dir)
    assert {files.LOCK, files.JOURNAL, files.DUAL_LOCK, files.REPORT} <= entries(run_dir)
    assert entries(run_dir) <= OWNED
    finalize_run(run_dir)
    assert entries(run_dir) <= OWNED
