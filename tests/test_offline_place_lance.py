"""An in-place conversion of a legacy Lance store runs partitioned: its tasks read the store's
pre-migration version and write their fragments into the store, where no version refers to them,
and one commit publishes them once the snapshot is whole.

The result equals the serial export's (snapshot, quarantine and target rows, bit for bit) for 0
and 2 workers; the store shows only its pre-migration version until the publish; a SIGKILL
anywhere in the export (five seeded points, and between the publish and its journal record)
resumes at the first partition not recorded, never redoing a recorded one; a rollback or
``--restart`` leaves the store's files exactly as they were.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fingerprint, legacy_table, read_snapshot
from test_e2e_crash import _in_export, wait_for
from test_e2e_crash import _recorded as recorded
from test_offline_partitioned import _same, _serial

from dualmem_bulk.generate import generate_batches
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.schema import LEGACY_SCHEMA, schema_identity
from dualmem_bulk.sources.lance_legacy import cut_rows
from dualmem_bulk.stores import TargetStore
from dualmem_bulk.stores.staging import data_files, unsliced

NODES = 9000
"""Generated rows, in fragments of 4,000, 3,000 and 2,000 (plus the rows added below)."""
TAG = "dualmem-pre-migration"


def lance_store(path: Path) -> Path:
    """A legacy Lance store of four versions: three fragments of generated rows, then one of a
    row out of range and two repeating earlier ids (duplicates across partitions)."""
    batches = [unsliced(b) for b in generate_batches(NODES, 31, 1000)]
    first_id = batches[0].column("id")[0].as_py()
    later_id = batches[5].column("id")[7].as_py()
    bad = legacy_table([{"id": first_id}, {"id": "broken", "confidence": 3.0},
                        {"id": later_id}]).cast(LEGACY_SCHEMA)
    pieces = [batches[:4], batches[4:7], batches[7:], bad.to_batches()]
    for i, piece in enumerate(pieces):
        lance.write_dataset(pa.RecordBatchReader.from_batches(LEGACY_SCHEMA, iter(piece)),
                            str(path), schema=LEGACY_SCHEMA, mode="append" if i else "create")
    return path


def files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file()}


def journal_get(run_dir: Path, *keys: str) -> list[Any]:
    journal = Journal.open(run_dir)
    try:
        return [journal.state if key == "state" else journal.values[key] for key in keys]
    finally:
        journal.close()


def published_files(store: Path) -> list[str]:
    return sorted(f.path for fragment in lance.dataset(str(store)).get_fragments()
                  for f in fragment.metadata.files)


def test_lance_partitions_are_runs_of_rows_cut_inside_fragments() -> None:
    assert cut_rows([(7, 5), (9, 5)], 4) == [((7, 0, 4),), ((7, 4, 1), (9, 0, 3)), ((9, 3, 2),)]
    assert cut_rows([(0, 4), (1, 4)], 4) == [((0, 0, 4),), ((1, 0, 4),)]
    assert cut_rows([(3, 2), (4, 0), (5, 1)], 10) == [((3, 0, 2), (5, 0, 1))]
    assert cut_rows([], 10) == [()]  # an empty dataset is one empty partition


@pytest.mark.parametrize("workers", [0, 2])
def test_in_place_lance_equals_the_serial_export(tmp_path: Path, workers: int) -> None:
    store = lance_store(tmp_path / "store.lance")
    serial = _serial(store, tmp_path)  # what the serial, in-driver export gave
    before = data_files(store)
    report = run_offline(OfflineConfig(source=store, target=store, in_place=True,
                                       target_format="lance", batch_size=1000,
                                       workers=workers))
    assert report.verified and report.workers == workers
    assert report.units == 10  # 9,003 rows in runs of 1,000, cut inside the fragments
    assert report.nodes_this_invocation == report.phases["export"]["nodes"] == NODES + 3
    assert report.quarantined == 3 and report.quarantine_codes["duplicate_id"] == 2
    run_dir = store.with_name(store.name + ".run")
    quarantine = pq.read_table(run_dir / "quarantine.parquet").to_pylist()
    target = pa.Table.from_batches(list(TargetStore(store).batches(4096)))
    _same(serial, (read_snapshot(run_dir / "snapshot.parquet"), quarantine, target, 10))
    base, published, swapped = journal_get(run_dir, "pre_migration_version",
                                           "published_version", "swapped")
    assert base == 4 and published == 5 and swapped is True
    ds = lance.dataset(str(store))
    assert ds.version == 5  # one version: every fragment (the last part kept no row)
    assert len(ds.get_fragments()) == 9
    assert schema_identity(ds.schema) == ("engram.DualMemoryNode", "1")
    assert ds.tags.list()[TAG]["version"] == 4
    assert lance.dataset(str(store), version=TAG).count_rows() == NODES + 3
    assert sorted(data_files(store)) == sorted(before + published_files(store))  # no strays


def _args(store: Path) -> list[str]:
    return [sys.executable, "-m", "dualmem_bulk", "convert", str(store), "--in-place",
            "--target-format", "lance", "--batch-size", "700", "--workers", "2", "--json"]


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_sigkill_in_an_in_place_export_then_resume_is_identical(tmp_path: Path) -> None:
    store = lance_store(tmp_path / "store.lance")
    run_dir = store.with_name(store.name + ".run")
    done = subprocess.run(_args(store), capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    base = json.loads(done.stdout)
    base_rows = fingerprint(store)
    base_quarantine = pq.read_table(run_dir / "quarantine.parquet").to_pylist()
    parts = base["units"]
    assert parts == 13
    shutil.rmtree(store)  # the same store again, at the same path, for the killed run
    shutil.rmtree(run_dir)
    lance_store(store)
    before_files = data_files(store)
    rng = random.Random(20261207)
    goals = sorted(rng.sample(range(1, parts - 3), 5))
    before: dict[int, tuple[Any, ...]] = {}
    landed = []
    for goal in goals:
        proc = _start(_args(store))
        try:
            status = wait_for(proc, run_dir, _in_export(goal, rng.uniform(0.0, 0.15)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        now = recorded(run_dir)
        assert {unit: now[unit] for unit in before} == before  # nothing recorded was redone
        before = now
        landed.append(f"{status.state}@{len(now)}/{parts}")
        ds = lance.dataset(str(store))  # the readers still see the pre-migration version
        assert ds.version == 4 and ds.schema.names == LEGACY_SCHEMA.names
    # Killed between the publishing commit and its journal record: the resume finds it.
    killed = subprocess.run(_args(store), capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL,
                            env={**os.environ, "DUALMEM_FAULT": "in-place-publish:1:SIGKILL"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert journal_get(run_dir, "published_version") == [None]
    assert lance.dataset(str(store)).version == 5
    assert {unit: recorded(run_dir)[unit] for unit in before} == before
    resumed = subprocess.run(_args(store), capture_output=True, text=True, timeout=600,
                             stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["status"] == "done" and report["verified"]
    for key in ("target_digest", "snapshot_digest", "nodes_in", "quarantined",
                "quarantine_codes", "quarantine_sample"):
        assert report[key] == base[key], key
    assert journal_get(run_dir, "published_version") == [5]
    assert lance.dataset(str(store)).version == 5  # published once
    assert fingerprint(store) == base_rows
    assert pq.read_table(run_dir / "quarantine.parquet").to_pylist() == base_quarantine
    assert sorted(data_files(store)) == sorted(before_files + published_files(store))
    print("kill points (in-place lance):", landed)  # reported in the closing note (pytest -s)


@pytest.mark.parametrize("undo", ["rollback", "restart"])
def test_rollback_or_restart_mid_export_leaves_the_store_as_it_was(tmp_path: Path,
                                                                   undo: str) -> None:
    store = lance_store(tmp_path / "store.lance")
    run_dir = store.with_name(store.name + ".run")
    before = files(store)
    proc = _start(_args(store))
    try:
        wait_for(proc, run_dir, _in_export(3, 0.1))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert set(data_files(store)) > {name.split("/")[-1] for name in before
                                      if name.startswith("data/")}  # fragments written
    if undo == "rollback":
        done = subprocess.run([sys.executable, "-m", "dualmem_bulk", "rollback", str(run_dir),
                               "--yes", "--json"], capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        rolled = json.loads(done.stdout)
        assert rolled["state_before"] == "exporting" and rolled["source_untouched"]
        assert files(store) == before  # the very files: no stray fragment, no tag
        return
    again = subprocess.run([*_args(store), "--restart", "--yes"], capture_output=True,
                           text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    assert "discarded" in again.stderr and json.loads(again.stdout)["verified"]
    kept = {name.split("/")[-1] for name in before if name.startswith("data/")}
    assert set(data_files(store)) == kept | set(published_files(store))
