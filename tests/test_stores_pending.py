"""The write path after the cut-over, with real processes: a writer and a reader use the
CompatibilityAdapter while ``migrate --online`` cuts over; the writer is SIGKILLed with its
acknowledged writes not applied to the Lance store yet, a second writer is SIGKILLed by its
applier between a Lance commit and the journal (mid-batch), a third finishes; readers see every
acknowledged write meanwhile, and the Lance store ends equal to the replay of every
acknowledged write. ``finalize`` while the service writes switches it to the new store alone."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import journal_value

import tests.test_e2e_online_stress as stress
from dualmem_bulk import CompatibilityAdapter, MemoryStore
from dualmem_bulk.checksum import row_checksums
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.stores.dual import DualStore
from dualmem_bulk.stores.memory_store import memories_to_batch
from dualmem_bulk.stores.pending import pending_ids
from tests.online_workload import digest, replay

NODES = 10_000


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10K-node MemoryStore."""
    path = tmp_path_factory.mktemp("served") / "original.sqlite"
    with MemoryStore(path) as store:
        for batch in generate_batches(NODES, stress.SEED, 5_000):
            store.store_batch(batch)
        store.trim_changes(store.change_position())
    return path


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Kill the scenario's processes if it fails (they would go on writing)."""
    yield
    while stress._SPAWNED:
        proc = stress._SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _writer(service: stress._Service) -> None:
    service.procs["writer"] = stress._spawn([
        str(stress.WORKLOAD), "writer", str(service.store), str(service.run_dir),
        str(service.original), str(stress.SEED), str(service.stop),
        str(service.tmp / "writer.json")])


def _acked(service: stress._Service) -> int:
    return (service.tmp / "writer.acked").stat().st_size


def _check_reads_with_pending(service: stress._Service) -> int:
    """An adapter that does not apply answers every read as the legacy store does, while
    writes are pending; the number of pending ids."""
    with MemoryStore(service.store, create=False) as legacy, \
            CompatibilityAdapter(service.store, service.run_dir, apply=None) as adapter:
        assert not adapter.legacy_mode
        with legacy.snapshot():  # the writer is dead: nothing changes but the reader's reads
            pending = pending_ids(legacy, journal_value(service.run_dir, "online_applied"))
            assert adapter.count() == legacy.count()
            assert adapter.all_ids() == legacy.all_ids()
            for memory_id in pending[:200]:
                got, want = adapter.retrieve(memory_id), legacy.retrieve(memory_id)
                assert (got is None) == (want is None), memory_id
                if got is not None and want is not None:
                    assert row_checksums(memories_to_batch([got])) == row_checksums(
                        memories_to_batch([want]))
            for memory_id in pending[:20]:  # a pending write as the query: found first
                want = legacy.retrieve(memory_id)
                if want is not None:
                    query = np.frombuffer(want.embedding, "<f4").copy()
                    query[~np.isfinite(query)] = 0.0
                    got_hits, want_hits = adapter.search(query, 10), legacy.search(query, 10)
                    assert [i for i, _ in got_hits] == [i for i, _ in want_hits]
                    # the overlay and the store sum the same float32 products in another order
                    assert np.allclose([d for _, d in got_hits], [d for _, d in want_hits],
                                       rtol=1e-5, atol=1e-7)
        return len(pending)


def test_killed_writers_lose_and_double_nothing(tmp_path: Path, original: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUALMEM_TEST_APPLY", "none")  # writer 1 and the reader never apply
    service = stress._Service(tmp_path, original)
    stress._wait("the service to start writing", lambda: service.ops()[0] >= 200)
    assert stress._report(stress._migrate(service.store, service.target))["verified"]
    stress._wait("writes after the cut-over", lambda: service.ops()[1] >= 300)
    stress._kill(service.procs["writer"])  # acknowledged, not applied
    assert _check_reads_with_pending(service) >= 100
    applied = journal_value(service.run_dir, "online_applied")
    version = journal_value(service.run_dir, "online_version")

    monkeypatch.delenv("DUALMEM_TEST_APPLY")
    monkeypatch.setenv("DUALMEM_FAULT", "pending-applied:1:SIGKILL")
    _writer(service)  # its applier dies after its first Lance commit, before the journal
    _, err = service.procs["writer"].communicate(timeout=120)
    assert service.procs["writer"].returncode == -signal.SIGKILL, err.decode()
    assert journal_value(service.run_dir, "online_applied") == applied
    assert DualStore(service.target).dataset().version > version  # committed, not journalled

    monkeypatch.delenv("DUALMEM_FAULT")
    acked = _acked(service)
    _writer(service)
    stress._wait("writes by the third writer", lambda: service.ops()[0] >= max(acked + 300, 1_200))
    writer, reader = service.finish()  # the third writer applies what is pending on close
    assert writer["ops"] == _acked(service)
    service.check(writer, reader)
    service.check_dual()
    assert journal_value(service.run_dir, "online_applied") == MemoryStore(
        service.store, create=False).change_position()


def test_finalize_during_writes_switches_to_the_new_store_alone(tmp_path: Path,
                                                                original: Path) -> None:
    service = stress._Service(tmp_path, original)
    stress._wait("the service to start writing", lambda: service.ops()[0] >= 200)
    assert stress._report(stress._migrate(service.store, service.target))["verified"]
    stress._wait("writes after the cut-over", lambda: service.ops()[1] >= 100)
    done = subprocess.run([sys.executable, "-m", "dualmem_bulk", "finalize",
                           str(service.run_dir), "--yes", "--json"], capture_output=True,
                          cwd=stress.ROOT)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["legacy_kept"] == str(service.store)
    with MemoryStore(service.store, create=False) as legacy:
        frozen = digest(legacy)
        assert legacy.changes(0, 10) == ([], 0)  # the change log is trimmed
    ops = service.ops()[0]
    stress._wait("writes after finalize", lambda: service.ops()[0] >= ops + 300)
    writer, reader = service.finish()
    assert writer["errors"] == [] and reader["error_count"] == reader["missing"] == 0
    assert reader["wrong"] == 0
    with MemoryStore(service.store, create=False) as legacy:
        assert digest(legacy) == frozen  # no write reached the legacy store after finalize
    replayed = tmp_path / "replayed.sqlite"
    shutil.copy(original, replayed)
    service.expected = replay(original, replayed, stress.SEED, writer["ops"])
    service.check_dual()  # every acknowledged write, before and after finalize, once
    assert journal_value(service.run_dir, "serving") == "lance"
