"""``finalize`` of an online run: the service writes to the new store alone (through the run's
pending store), the change log is trimmed, the legacy store is kept or, when the operator
confirms, removed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dualmem_bulk import CompatibilityAdapter, MemoryStore, OnlineConfig, run_online
from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.stores.dual import DualStore
from dualmem_bulk.stores.pending import ApplyPolicy
from dualmem_bulk.stores.pending_store import PENDING
from tests.online_workload import digest, new_memory
from tests.test_online_run import _store

ROOT = Path(__file__).parents[1]


def _finalize(run_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", "finalize", str(run_dir),
                           "--json", *args], capture_output=True, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def _lance_digest(target: Path) -> TableDigest:
    recomputed, stored, _identity = DualStore(target).digests(1000)
    assert recomputed == stored
    return recomputed


def test_after_finalize_writes_go_to_the_new_store_alone(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 150)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    run_dir = config.resolved_run_dir
    with CompatibilityAdapter(path, run_dir, apply=ApplyPolicy(rows=10_000, age_s=60)) as adapter:
        ids = adapter.all_ids()
        adapter.store(new_memory(12, 0, "before-finalize"))  # pending when finalize runs
        done = _finalize(run_dir, "--yes")
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout)["legacy_kept"] == str(path)
        with MemoryStore(path, create=False) as legacy:
            frozen = digest(legacy)
            assert legacy.changes(0, 10) == ([], 0)  # trimmed
        assert _lance_digest(config.target) == frozen  # finalize applied the pending write
        adapter.store(new_memory(12, 1, "after-finalize"))
        assert adapter.update_activation(ids[0], 0.5) and adapter.remove(ids[1])
        assert adapter.update_activation("before-finalize", 0.25)
        assert not adapter.remove("never") and not adapter.update_activation("never", 0.1)
        assert not adapter.legacy_mode
        got = adapter.retrieve(ids[0])
        assert got is not None and got.activation == 0.5
        assert adapter.retrieve(ids[1]) is None and adapter.contains("after-finalize")
        assert adapter.count() == 151 and len(adapter.all_ids()) == 151
    with MemoryStore(path, create=False) as legacy:
        assert digest(legacy) == frozen  # the legacy store took no write after finalize
        # the same writes on the legacy store give the new store's content
        legacy.store(new_memory(12, 1, "after-finalize"))
        legacy.update_activation(ids[0], 0.5)
        legacy.remove(ids[1])
        legacy.update_activation("before-finalize", 0.25)
        assert _lance_digest(config.target) == digest(legacy)
    assert (run_dir / PENDING).is_file()
    verify = subprocess.run([sys.executable, "-m", "dualmem_bulk", "verify", str(run_dir)],
                            capture_output=True, cwd=ROOT)
    assert verify.returncode == 2 and b"finalized" in verify.stderr


def test_remove_legacy_asks_or_needs_yes(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 100)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    run_dir = config.resolved_run_dir
    with MemoryStore(path, create=False) as legacy:
        kept = digest(legacy)
    refused = _finalize(run_dir, "--remove-legacy")  # no terminal, no --yes
    assert refused.returncode == 2 and b"--yes" in refused.stderr
    assert path.is_file() and (run_dir / "journal.sqlite").is_file()
    done = _finalize(run_dir, "--remove-legacy", "--yes")
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert str(path) in report["removed"] and report["legacy_kept"] is None
    assert not path.exists() and not Path(f"{path}-wal").exists()
    with CompatibilityAdapter(path, run_dir) as adapter:  # serves without the legacy store
        assert adapter.count() == 100
        adapter.store(new_memory(13, 0, "new"))
        assert adapter.count() == 101
    assert not path.exists()
    assert _lance_digest(config.target).rows == kept.rows + 1
