"""The online copy in rowid ranges run as tasks: the same target rows and digests as the page
copy it replaced (with 0 and 2 worker processes), an id stored again at a later rowid copied
once, and a migrator SIGKILLed mid-copy while a service writes: its resume goes on at the first
range not recorded and ends equal to the replay of every acknowledged write."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import journal_value

import tests.test_e2e_online_stress as stress
from dualmem_bulk import MemoryStore, OnlineConfig, run_online
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.rundir.journal import JOURNAL
from dualmem_bulk.schema import DUAL_SCHEMA
from dualmem_bulk.stores.dual import DualStore
from tests.online_workload import digests, new_memory
from tests.test_online_run import Hooks

NODES = 3_000


def _store(path: Path, nodes: int = NODES) -> Path:
    """A store whose rowids have gaps and whose ids are not in rowid order: some rows removed,
    some removed and stored again (a new, later rowid)."""
    with MemoryStore(path) as store:
        for batch in generate_batches(nodes, 5, 500):
            store.store_batch(batch)
        ids = store.all_ids()
        for i, memory_id in enumerate(ids[::97]):
            store.remove(memory_id)
            if i % 2:
                store.store(new_memory(9, i, memory_id))
    return path


def _page_copy(store_path: Path, target: Path, page: int) -> None:
    """The copy this module replaced: keyset pages of ids, one append each."""
    dual = DualStore(target)
    with MemoryStore(store_path, create=False) as store:
        for batch in store.scan(page):
            dual.append(batch)


def _sorted(target: Path) -> pa.Table:
    return lance.dataset(str(target)).to_table().sort_by("episode_id")


def _assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    """Every column of every row, bit for bit (the embeddings by their float32 bits)."""
    assert got.num_rows == want.num_rows
    for name in DUAL_SCHEMA.names:
        a, b = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        if name == "embedding":
            assert np.array_equal(np.asarray(a.flatten()).view("<u4"),
                                  np.asarray(b.flatten()).view("<u4"))
        else:
            assert a.equals(b), name


def _ranges(run_dir: Path) -> list[dict[str, Any]]:
    """The journal's range records, in unit order."""
    conn = sqlite3.connect(run_dir / JOURNAL)
    try:
        rows = conn.execute("SELECT value FROM meta WHERE key LIKE 'online_range.%' "
                            "ORDER BY key").fetchall()
    finally:
        conn.close()
    return [json.loads(value) for (value,) in rows]


def _assert_tiled(ranges: list[dict[str, Any]], plan: list[int]) -> None:
    """Units 0..n-1, each range starting right after the previous one, from the first rowid
    to the last: every rowid in exactly one range."""
    assert [r["unit"] for r in ranges] == list(range(len(ranges)))
    assert ranges[0]["first"] == plan[0] and ranges[-1]["last"] == plan[1]
    assert all(b["first"] == a["last"] + 1 for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize("workers", [0, 2])
def test_ranges_copy_the_rows_of_the_page_copy(tmp_path: Path, workers: int) -> None:
    path = _store(tmp_path / "m.sqlite")
    _page_copy(path, tmp_path / "pages.lance", 700)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance", batch_size=400,
                          target_batch_s=1000, workers=workers)
    report = run_online(config)
    assert report.verified and report.nodes_copied == report.rows
    _assert_same_rows(_sorted(config.target), _sorted(tmp_path / "pages.lance"))
    assert DualStore(config.target).digests(1000) == DualStore(tmp_path / "pages.lance").digests(
        1000)
    with MemoryStore(path, create=False) as store:
        source, _ = digests(store)
        plan = [*store.rowid_bounds()]  # type: ignore[misc]
    ranges = _ranges(config.resolved_run_dir)
    assert len(ranges) >= 3
    _assert_tiled(ranges, plan)
    copied = journal_value(config.resolved_run_dir, "online_copied")
    assert copied["plan"] == plan and copied["ranges"] == len(ranges)
    assert (copied["rows"], copied["digest"]) == (source.rows, source.hex)
    assert sum(r["rows"] for r in ranges) == source.rows


def test_an_id_stored_again_at_a_later_rowid_is_copied_once(tmp_path: Path) -> None:
    """After the first range is copied, one of its ids is removed and stored again; with the
    last row removed first, SQLite gives it the last rowid, in a range still to copy. The
    ranges leave out ids changed after the pin, so it is not copied twice (two rows of one id
    would fail the cut-over's comparison)."""
    path = _store(tmp_path / "m.sqlite", 1_200)
    conn = sqlite3.connect(path)
    moved, last_id = (conn.execute(f"SELECT id FROM memories ORDER BY rowid {order} LIMIT 1")
                      .fetchone()[0] for order in ("ASC", "DESC"))
    conn.close()
    writer = MemoryStore(path)

    class AfterTheFirstRange(Hooks):
        def advance(self, nodes: int) -> None:
            if nodes and not self.advanced:  # the first range is copied and recorded
                writer.remove(last_id)
                writer.remove(moved)
                writer.store(new_memory(4, 1, moved))
            self.advanced += nodes

    config = OnlineConfig(store=path, target=tmp_path / "n.lance", batch_size=200,
                          target_batch_s=1000, workers=0, cutover_lag=0)
    report = run_online(config, AfterTheFirstRange())
    writer.close()
    assert report.verified and report.status == "done"
    ids = lance.dataset(str(config.target)).to_table(columns=["episode_id"]).column(0)
    assert ids.to_pylist().count(moved) == 1 and last_id not in ids.to_pylist()
    with MemoryStore(path, create=False) as store:
        assert report.rows == store.count() == len(ids)
    conn = sqlite3.connect(path)
    rowid = conn.execute("SELECT rowid FROM memories WHERE id = ?", (moved,)).fetchone()[0]
    conn.close()
    assert rowid <= journal_value(config.resolved_run_dir, "online_copied")["plan"][1]


_MIGRATOR = """
import sys
from pathlib import Path
from dualmem_bulk import OnlineConfig, run_online
store, target, rate = sys.argv[1], sys.argv[2], sys.argv[3]
run_online(OnlineConfig(store=Path(store), target=Path(target), workers=2, batch_size=500,
                        target_batch_s=1000, max_rate=float(rate) if rate != "-" else None))
"""


def test_killed_mid_copy_resumes_at_the_first_unrecorded_range(
        tmp_path: Path, original: Path) -> None:
    service = stress._Service(tmp_path, original)
    stress._wait("the service to start writing", lambda: service.ops()[0] >= 100)
    args = ["-c", _MIGRATOR, str(service.store), str(service.target)]
    proc = stress._spawn([*args, "4000"])
    stress._wait("three ranges", lambda: ((journal_value(service.run_dir, "online_copied")
                                           or {}).get("ranges") or 0) >= 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = _ranges(service.run_dir)
    copied = journal_value(service.run_dir, "online_copied")
    assert journal_value(service.run_dir, "phase") == "copying"
    assert copied["plan"][0] <= before[-1]["last"] < copied["plan"][1]  # killed mid-copy

    done = stress._spawn([*args, "-"])
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()
    report = journal_value(service.run_dir, "report")
    assert report["status"] == "done" and report["verified"] and report["resumed"] == 1
    after = _ranges(service.run_dir)
    assert after[:len(before)] == before  # recorded ranges: not redone, not recommitted
    assert {r["invocation"] for r in before} == {0}
    assert {r["invocation"] for r in after[len(before):]} == {1}
    _assert_tiled(after, copied["plan"])
    assert report["nodes_copied_this_invocation"] == sum(r["rows"] for r in after[len(before):])
    versions = [r["version"] for r in after]
    assert versions == sorted(set(versions))
    stress._after_cutover(service, 20)
    writer, reader = service.finish()
    service.check(writer, reader)  # the legacy store: the replay of every acknowledged write
    service.check_dual()  # the new store: the same, each id once


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12K-node MemoryStore (rowids 1..12,000)."""
    path = tmp_path_factory.mktemp("copy") / "original.sqlite"
    with MemoryStore(path) as store:
        for batch in generate_batches(12_000, stress.SEED, 4_000):
            store.store_batch(batch)
        store.trim_changes(store.change_position())
    return path


@pytest.fixture(autouse=True)
def _no_leftovers() -> Any:
    """Kill the scenario's processes if it fails (they would go on writing)."""
    yield
    while stress._SPAWNED:
        proc = stress._SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()



def test_the_cli_copies_with_the_workers_it_is_given(tmp_path: Path) -> None:
    """``migrate --online --workers N`` reaches the copy: the report names the workers and the
    rows are the page copy's."""
    path = _store(tmp_path / "m.sqlite")
    _page_copy(path, tmp_path / "pages.lance", 700)
    target = tmp_path / "n.lance"
    done = subprocess.run(
        [sys.executable, "-m", "dualmem_bulk", "migrate", "--online", str(path), str(target),
         "--workers", "2", "--batch-size", "400", "--target-batch-s", "1000", "--json"],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["workers"] == 2 and report["verified"]
    _assert_same_rows(_sorted(target), _sorted(tmp_path / "pages.lance"))
