"""``dualmem-bulk index`` and vector search through Lance: the adapter's ``search`` goes through
the ANN index, agrees with the exact search (recall@10), and sees rows added after the build:
pending writes, applied rows not in the index yet, removed rows gone."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pytest

from dualmem_bulk import CompatibilityAdapter, MemoryStore, OnlineConfig, run_online
from dualmem_bulk.stores.pending import ApplyPolicy
from dualmem_bulk.stores.search import VECTOR_INDEX, has_vector_index, nearest
from tests.online_workload import new_memory
from tests.test_online_run import _store

ROOT = Path(__file__).parents[1]


def _index(target: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", "index", str(target), "--json"],
                          capture_output=True, cwd=ROOT)


def test_search_goes_through_the_index_and_sees_new_rows(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def spy(ds: lance.LanceDataset, *args: Any, **kwargs: Any) -> list[tuple[str, float]]:
        calls.append(ds.version)
        return nearest(ds, *args, **kwargs)

    monkeypatch.setattr("dualmem_bulk.stores.pending.nearest", spy)
    path = _store(tmp_path / "m.sqlite", 3_000)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    done = _index(config.target)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["rows"] == 3_000 and report["index"] == VECTOR_INDEX
    assert has_vector_index(lance.dataset(str(config.target)))

    rng = np.random.default_rng(3)
    with MemoryStore(path, create=False) as legacy, \
            CompatibilityAdapter(path, config.resolved_run_dir,
                                 apply=ApplyPolicy(rows=10_000, age_s=600)) as adapter:
        ids = legacy.all_ids()
        recall = []
        for memory_id in rng.choice(ids, 20, replace=False):
            memory = legacy.retrieve(str(memory_id))
            assert memory is not None
            query = np.frombuffer(memory.embedding, "<f4").copy()
            query += rng.standard_normal(768).astype("<f4") * 0.01
            exact = {i for i, _ in legacy.search(query, 10)}
            recall.append(len(exact & {i for i, _ in adapter.search(query, 10)}) / 10)
        assert np.mean(recall) >= 0.95, recall
        assert len(calls) == 20  # through Lance's nearest, not a scan

        query = rng.standard_normal(768).astype("<f4")
        near = replace(new_memory(14, 0, "near"), embedding=query.tobytes())
        adapter.store(near)  # pending: served from the legacy store
        assert adapter.search(query, 3)[0][0] == "near"
        adapter.flush()  # applied, not in the index: searched flat by Lance
        ds = lance.dataset(str(config.target))
        assert ds.stats.index_stats(VECTOR_INDEX)["num_unindexed_rows"] >= 1
        assert adapter.search(query, 3)[0][0] == "near"
        second = adapter.search(query, 3)[1][0]
        assert adapter.remove("near")  # pending removal hides the indexed row...
        assert adapter.search(query, 3)[0][0] == second
        adapter.flush()  # ...and so does the applied one
        assert "near" not in {i for i, _ in adapter.search(query, 10)}


def test_index_refuses_what_it_cannot_index(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 100)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    small = _index(config.target)
    assert small.returncode == 3 and b"too few" in small.stderr
    missing = _index(tmp_path / "nothing.lance")
    assert missing.returncode == 3
