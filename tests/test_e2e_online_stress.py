"""Online migration under load, with real processes: a writer and a reader use the
CompatibilityAdapter while ``dualmem-bulk migrate --online`` migrates a 100K-node store; the
migrator is killed and resumed, and a rollback follows a cut-over."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import journal_value

from dualmem_bulk import MemoryStore
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.stores.dual import DualStore
from tests.online_workload import digest, digests, replay

pytestmark = pytest.mark.slow

NODES = 100_000
SEED = 11
WORKLOAD = Path(__file__).with_name("online_workload.py")
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 100K-node MemoryStore, built once (bulk inserts of generated batches)."""
    path = tmp_path_factory.mktemp("online") / "original.sqlite"
    with MemoryStore(path) as store:
        for batch in generate_batches(NODES, SEED, 20_000):
            store.store_batch(batch)
        store.trim_changes(store.change_position())
    return path


_SPAWNED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """A failed scenario must not leave its writer, reader or migrator running: they would go
    on writing into the temporary directory."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _SPAWNED.append(proc)
    return proc


def _migrate(store: Path, target: Path, *extra: str) -> subprocess.Popen[bytes]:
    return _spawn(["-m", "dualmem_bulk", "migrate", "--online", str(store), str(target),
                   "--json", *extra])


def _wait(what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _ops(out: Path) -> tuple[int, int]:
    progress = out.with_suffix(".progress")
    if not progress.exists():
        return 0, 0
    done, dual = progress.read_text().split()
    return int(done), int(dual)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def _report(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    return report


class _Service:
    """The writer and reader processes of one scenario."""

    def __init__(self, tmp: Path, original: Path) -> None:
        self.store, self.target = tmp / "memories.sqlite", tmp / "nodes.lance"
        self.run_dir = tmp / "nodes.lance.run"
        self.stop, self.tmp, self.original = tmp / "stop", tmp, original
        shutil.copy(original, self.store)
        self.procs = {
            role: _spawn([str(WORKLOAD), role, str(self.store), str(self.run_dir),
                          str(original), str(SEED), str(self.stop), str(tmp / f"{role}.json")])
            for role in ("writer", "reader")
        }

    def ops(self) -> tuple[int, int]:
        return _ops(self.tmp / "writer.json")

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.stop.touch()
        results = []
        for role, proc in self.procs.items():
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            results.append(json.loads((self.tmp / f"{role}.json").read_text()))
        return results[0], results[1]

    def check(self, writer: dict[str, Any], reader: dict[str, Any]) -> int:
        """The legacy store equals the replay of the writer's operations; the reader saw every
        node it read, unchanged, and no error. Returns the expected digest's row count."""
        assert writer["errors"] == [] and writer["ops"] >= 1_000, writer
        assert reader["error_count"] == 0 and reader["missing"] == 0 and reader["wrong"] == 0, \
            reader
        assert reader["reads"] > 100
        replayed = self.tmp / "replayed.sqlite"
        shutil.copy(self.original, replayed)
        self.expected = replay(self.original, replayed, SEED, writer["ops"])
        with MemoryStore(self.store, create=False) as store:
            assert digest(store) == self.expected
        return self.expected.rows

    def check_dual(self) -> None:
        dual = DualStore(self.target)
        recomputed, stored, identity = dual.digests(8192)
        assert recomputed == stored == self.expected
        with MemoryStore(self.tmp / "replayed.sqlite", create=False) as replayed:
            assert identity == digests(replayed)[1]  # space and episode too
        ids = dual.dataset().to_table(columns=["episode_id"]).column(0)
        assert len(set(ids.to_pylist())) == len(ids) == self.expected.rows


def _after_cutover(service: _Service, ops: int) -> None:
    """Let the writer do ``ops`` operations against the dual store."""
    _wait("writes after the cut-over", lambda: service.ops()[1] >= ops)


def test_online_migration_under_load(tmp_path: Path, original: Path) -> None:
    service = _Service(tmp_path, original)
    _wait("the service to start writing", lambda: service.ops()[0] >= 200)
    report = _report(_migrate(service.store, service.target))
    assert report["status"] == "done" and report["verified"] and report["nodes_copied"] > 0
    assert report["pause_ms"] is not None and report["changes_applied"] > 0
    _after_cutover(service, 50)
    writer, reader = service.finish()
    service.check(writer, reader)
    service.check_dual()
    assert reader["dual_reads"] > 0
    print(f"\nonline under load: {writer['ops']} ops ({writer['dual_ops']} after the cut-over), "
          f"{reader['reads']} reads; copy {report['copy_nodes_per_s']:,.0f} nodes/s, pause "
          f"{report['pause_ms']} ms ({report['changes_in_pause']} changes in it), "
          f"{report['changes_applied']} changes applied")


def test_killed_mid_copy_and_mid_catch_up_resumes(tmp_path: Path, original: Path) -> None:
    service = _Service(tmp_path, original)
    _wait("the service to start writing", lambda: service.ops()[0] >= 200)
    args = ("--postpone-cutover", "--batch-size", "1000", "--target-batch-s", "0.2")
    proc = _migrate(service.store, service.target, *args)
    _wait("a third of the copy", lambda: (journal_value(service.run_dir, "online_copied")
                                         or {"rows": 0})["rows"] >= NODES // 3)
    _kill(proc)
    proc = _migrate(service.store, service.target, *args)
    _wait("the catch-up", lambda: journal_value(service.run_dir, "phase") == "awaiting-cutover")
    applied = journal_value(service.run_dir, "online_applied")
    _wait("more changes applied",
          lambda: journal_value(service.run_dir, "online_applied") > applied)
    _kill(proc)
    proc = _migrate(service.store, service.target, *args)
    _wait("the resumed catch-up", lambda: journal_value(service.run_dir, "report")["resumed"] == 2)
    subprocess.run([sys.executable, "-m", "dualmem_bulk", "cutover", str(service.run_dir)],
                   check=True, capture_output=True)
    report = _report(proc)
    assert report["status"] == "done" and report["verified"] and report["resumed"] == 2
    _after_cutover(service, 20)
    writer, reader = service.finish()
    service.check(writer, reader)
    service.check_dual()


def test_rollback_after_cutover_keeps_every_write(tmp_path: Path, original: Path) -> None:
    service = _Service(tmp_path, original)
    _wait("the service to start writing", lambda: service.ops()[0] >= 200)
    assert _report(_migrate(service.store, service.target))["verified"]
    _after_cutover(service, 20)
    rolled = subprocess.run([sys.executable, "-m", "dualmem_bulk", "rollback",
                             str(service.run_dir), "--yes", "--json"], capture_output=True)
    assert rolled.returncode == 0, rolled.stderr.decode()
    assert json.loads(rolled.stdout)["status"] == "rolled-back"
    assert not service.target.exists()
    ops = service.ops()[0]
    _wait("writes after the rollback", lambda: service.ops()[0] >= ops + 100)
    writer, reader = service.finish()
    service.check(writer, reader)
    finalize = subprocess.run([sys.executable, "-m", "dualmem_bulk", "finalize",
                               str(service.run_dir)], capture_output=True)
    assert finalize.returncode == 2
