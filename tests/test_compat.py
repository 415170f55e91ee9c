"""CompatibilityAdapter in both modes: the switch at the cut-over without a restart, writes to
both stores, exact reads from the dual store, recovery of an unapplied write, rollback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

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
from tests.online_workload import new_memory
from tests.test_online import _check_equal, _store


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
    _check_equal(path, config.target)  # the legacy store has every write too
    adapter.close()


def test_a_write_left_unapplied_is_applied_by_the_next(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 100)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    with MemoryStore(path, create=False) as store:  # a process died after its legacy write
        store.store(new_memory(4, 1, "orphan"))
    with CompatibilityAdapter(path, config.resolved_run_dir) as adapter:
        assert adapter.retrieve("orphan") is None
        adapter.store(new_memory(4, 2, "next"))
        assert adapter.contains("orphan") and adapter.contains("next")
    _check_equal(path, config.target)


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
    monkeypatch.setattr("dualmem_bulk.stores.dual._MAINTAIN_EVERY", 8)
    monkeypatch.setattr("dualmem_bulk.stores.dual._KEEP_VERSIONS_FOR", timedelta(0))
    path = _store(tmp_path / "m.sqlite", 50)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    with CompatibilityAdapter(path, config.resolved_run_dir) as adapter:
        ids = adapter.all_ids()
        for i in range(30):
            adapter.store(new_memory(8, i, f"w{i % 12}"))
            if i % 5 == 0:
                adapter.remove(ids[i])
        _exact(adapter.retrieve("w5"), new_memory(8, 29, "w5"))  # its last write
    ds = DualStore(config.target).dataset()
    assert len(ds.get_fragments()) < 12 and len(ds.versions()) < 12
    _check_equal(path, config.target)
