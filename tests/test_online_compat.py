"""CompatibilityAdapter in both modes: the switch at the cut-over without a restart, writes to
both stores, exact reads from the dual store, recovery of an unapplied write, rollback."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import journal_value

from dualmem_bulk import (
    CompatibilityAdapter,
    Memory,
    MemoryStore,
    OnlineConfig,
    rollback_run,
    run_online,
)
from dualmem_bulk.checksum import row_checksums
from dualmem_bulk.stores.dual import DualStore
from dualmem_bulk.stores.memory_store import memories_to_batch
from dualmem_bulk.stores.pending import ApplyPolicy
from tests.online_workload import new_memory
from tests.test_online_run import _check_equal, _store


def _exact(a: Memory | None, b: Memory) -> None:
    assert a is not None
    assert row_checksums(memories_to_batch([a])) == row_checksums(memories_to_batch([b]))


def test_serves_legacy_then_dual_without_restart(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 300)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    adapter = CompatibilityAdapter(path, config.resolved_run_dir)
    before = new_memory(3, 1, "before")
    adapter.store(before)
    assert adapter.legacy_mode and adapter.count() == 301
    legacy_ids = adapter.all_ids()
    query = np.frombuffer(before.embedding, "<f4")
    legacy_search = adapter.search(query, 3)

    run_online(config)
    assert not adapter.legacy_mode
    _exact(adapter.retrieve("before"), before)
    assert adapter.count() == 301 and adapter.all_ids() == legacy_ids
    assert [i for i, _ in adapter.search(query, 3)] == [i for i, _ in legacy_search]

    after = new_memory(3, 2, "after")
    adapter.store(after)
    assert adapter.update_activation("before", 0.75)
    assert adapter.remove(legacy_ids[0]) and not adapter.remove("never")
    assert adapter.contains("after") and not adapter.contains(legacy_ids[0])
    got = adapter.retrieve("before")
    assert got is not None and got.activation == 0.75
    _exact(adapter.retrieve("after"), after)
    assert adapter.retrieve(legacy_ids[0]) is None
    adapter.close()  # applies what is pending
    _check_equal(path, config.target)  # the legacy store has every write too


def test_a_write_left_unapplied_is_applied_by_the_next(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 100)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    with MemoryStore(path, create=False) as store:  # a process died after its legacy write
        store.store(new_memory(4, 1, "orphan"))
    with CompatibilityAdapter(path, config.resolved_run_dir) as adapter:
        _exact(adapter.retrieve("orphan"), new_memory(4, 1, "orphan"))  # pending, yet served
        assert adapter.count() == 101
        adapter.store(new_memory(4, 2, "next"))
        assert adapter.contains("orphan") and adapter.contains("next")
    _check_equal(path, config.target)  # the next applier applied both


def test_rollback_switches_back_and_keeps_writes(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 100)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    with CompatibilityAdapter(path, config.resolved_run_dir) as adapter:
        adapter.store(new_memory(5, 1, "kept"))
        assert not adapter.legacy_mode
        report = rollback_run(config.resolved_run_dir)
        assert report.proven_rows == 101 and not config.target.exists()
        assert adapter.legacy_mode
        _exact(adapter.retrieve("kept"), new_memory(5, 1, "kept"))
        adapter.store(new_memory(5, 2, "later"))
        assert adapter.count() == 102


def test_dual_writes_keep_one_row_per_id(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 50)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    with CompatibilityAdapter(path, config.resolved_run_dir) as one, \
            CompatibilityAdapter(path, config.resolved_run_dir) as two:
        for i in range(5):
            (one if i % 2 else two).store(new_memory(6, i, "same"))
    ids = DualStore(config.target).dataset().to_table(columns=["episode_id"]).column(0)
    assert ids.to_pylist().count("same") == 1
    _check_equal(path, config.target)


def test_dual_store_compacts_itself_after_many_writes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dualmem_bulk.stores.dual._MAINTAIN_AFTER", 3)
    monkeypatch.setattr("dualmem_bulk.stores.dual._KEEP_VERSIONS_FOR", timedelta(0))
    path = _store(tmp_path / "m.sqlite", 50)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    with CompatibilityAdapter(path, config.resolved_run_dir, apply=None) as adapter:
        ids = adapter.all_ids()
        for i in range(30):  # one batch per write: 30 small fragments without compaction
            adapter.store(new_memory(8, i, f"w{i % 12}"))
            if i % 5 == 0:
                adapter.remove(ids[i])
            adapter.flush()
        _exact(adapter.retrieve("w5"), new_memory(8, 29, "w5"))  # its last write
    ds = DualStore(config.target).dataset()
    assert len(ds.get_fragments()) < 12 and len(ds.versions()) < 12
    _check_equal(path, config.target)


def _legacy_view(path: Path, query: np.ndarray) -> tuple[int, list[str], list[str]]:
    with MemoryStore(path, create=False) as store:
        return store.count(), store.all_ids(), [i for i, _ in store.search(query, 10)]


def test_pending_writes_are_served_before_they_are_applied(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 200)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    version = DualStore(config.target).dataset().version
    with CompatibilityAdapter(path, config.resolved_run_dir, apply=None) as adapter:
        ids = adapter.all_ids()
        query = np.random.default_rng(9).standard_normal(768).astype("<f4")
        near = replace(new_memory(9, 1, "near"), embedding=query.tobytes())
        adapter.store(near)
        adapter.store(new_memory(9, 2, ids[5]))  # replaced
        assert adapter.update_activation(ids[6], 0.125)
        assert adapter.remove(ids[7])
        assert DualStore(config.target).dataset().version == version  # nothing applied yet
        _exact(adapter.retrieve("near"), near)
        _exact(adapter.retrieve(ids[5]), new_memory(9, 2, ids[5]))
        got = adapter.retrieve(ids[6])
        assert got is not None and got.activation == 0.125
        assert adapter.retrieve(ids[7]) is None and not adapter.contains(ids[7])
        assert adapter.contains("near") and adapter.contains(ids[8])
        count, all_ids, best = _legacy_view(path, query)
        assert adapter.count() == count == 200 and adapter.all_ids() == all_ids
        found = [i for i, _ in adapter.search(query, 10)]
        assert found == best and found[0] == "near"
        adapter.flush()
        assert DualStore(config.target).dataset().version > version
        assert [i for i, _ in adapter.search(query, 10)] == best
    _check_equal(path, config.target)


def test_writes_are_applied_in_batches(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 100)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    version = DualStore(config.target).dataset().version
    policy = ApplyPolicy(rows=40, age_s=30)
    with CompatibilityAdapter(path, config.resolved_run_dir, apply=policy) as adapter:
        for i in range(100):
            adapter.store(new_memory(10, i, f"b{i}"))
        deadline = time.monotonic() + 30
        while journal_value(config.resolved_run_dir, "online_applied") < 80:
            assert time.monotonic() < deadline, "the applier did not apply 2 batches"
            time.sleep(0.05)
    # 100 writes in a few batches (by size, the rest on close), each one merge commit and
    # at times an index refresh: one commit per write made 100 versions
    assert DualStore(config.target).dataset().version - version <= 10
    _check_equal(path, config.target)
