"""The online driver in-process on small stores: copy, catch-up with collapsed changes, cut-over,
resume after a crash, pause file, postponed cut-over, refusals, rollback and finalize."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lance
import pytest

from dualmem_bulk import (
    MemoryStore,
    OnlineConfig,
    finalize_run,
    rollback_run,
    run_online,
    run_status,
    verify_run,
)
from dualmem_bulk.errors import Interrupted, RunChanged, SourceError, TargetExists, UsageError
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.online.cutover import request_cutover
from dualmem_bulk.rundir.files import PAUSE
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.stores.dual import DualStore
from tests.online_workload import digests, new_memory

NODES = 1_200


class Hooks:
    """A Progress that runs ``actions[event]`` once when that phase starts or message starts
    with that text."""

    def __init__(self, **actions: Callable[[], None]) -> None:
        self.actions, self.messages, self.advanced = actions, list[str](), 0

    def _fire(self, key: str) -> None:
        for name, action in list(self.actions.items()):
            if key.replace("-", " ").startswith(name.replace("_", " ")):
                del self.actions[name]
                action()

    def phase(self, name: str, total: int | None) -> None:
        self._fire(name)

    def advance(self, nodes: int) -> None:
        self.advanced += nodes
        self._fire("advance")

    def message(self, text: str) -> None:
        self.messages.append(text)
        self._fire(text)

    def done(self) -> None:
        pass


def _store(path: Path, nodes: int = NODES) -> Path:
    with MemoryStore(path) as store:
        for batch in generate_batches(nodes, 5, 500):
            store.store_batch(batch)
    return path


def _check_equal(store_path: Path, target: Path) -> None:
    with MemoryStore(store_path, create=False) as store:
        expected, expected_identity = digests(store)
    recomputed, stored, identity = DualStore(target).digests(1000)
    assert recomputed == stored == expected and identity == expected_identity
    ids = lance.dataset(str(target)).to_table(columns=["episode_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == expected.rows


def test_copy_catch_up_and_cutover(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite")
    writer = MemoryStore(path)
    ids = writer.all_ids()

    def churn() -> None:  # during the catch-up: every kind of change, several per id
        writer.remove(ids[0])
        writer.store(new_memory(1, 1, ids[1]))
        writer.store(new_memory(1, 2, ids[1]))
        writer.store(new_memory(1, 3, "added-then-removed"))
        writer.remove("added-then-removed")
        writer.remove(ids[2])
        writer.store(new_memory(1, 4, ids[2]))
        writer.update_activation(ids[3], 0.125)
        writer.store(new_memory(1, 5, "added"))

    config = OnlineConfig(store=path, target=tmp_path / "n.lance", batch_size=300)
    report = run_online(config, Hooks(catch_up=churn))
    writer.close()
    assert report.status == "done" and report.verified and report.nodes_copied == NODES
    assert report.changes_applied >= 6 and report.pause_ms is not None
    assert report.rows == NODES  # one removed, one added
    _check_equal(path, config.target)
    assert any(i.field_names == ["episode_id"] for i in lance.dataset(str(config.target))
               .describe_indices())
    journal = Journal.open(config.resolved_run_dir)
    assert journal.state == "done" and journal.values["serving"] == "dual"
    journal.close()
    status = run_status(config.resolved_run_dir)
    assert status.state == "done" and status.rollback_possible
    again = run_online(config)
    assert again.status == "done" and again.resumed == 0


def test_resume_redoes_an_unrecorded_commit(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite")
    config = OnlineConfig(store=path, target=tmp_path / "n.lance", batch_size=200,
                          target_batch_s=1000)

    class CrashAfterTwoBatches(Hooks):
        def advance(self, nodes: int) -> None:
            self.advanced += nodes
            if self.advanced >= 200:
                raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        run_online(config, CrashAfterTwoBatches())
    journal = Journal.open(config.resolved_run_dir)
    copied = journal.values["online_copied"]["rows"]
    journal.close()
    assert copied == 200
    with MemoryStore(path, create=False) as store:  # a commit the journal never recorded
        DualStore(config.target).append(store.batch_after(None, 300))
    report = run_online(config)
    assert report.verified and report.resumed == 1 and report.nodes_copied == NODES
    _check_equal(path, config.target)


def test_pause_file_holds_the_copy(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 300)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance", poll_s=0.01)
    run_dir = config.resolved_run_dir
    run_dir.mkdir()
    (run_dir / PAUSE).touch()
    hooks = Hooks(paused=lambda: (run_dir / PAUSE).unlink())
    report = run_online(config, hooks)
    assert any(m.startswith("paused") for m in hooks.messages)
    assert report.verified and report.nodes_copied == 300


def test_postponed_cutover_waits_for_the_request(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 300)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance", postpone_cutover=True,
                          poll_s=0.01)
    run_dir = config.resolved_run_dir
    requested = []

    def ask() -> None:
        journal = Journal.open(run_dir)
        assert journal.values["serving"] == "legacy"
        assert journal.values["phase"] == "awaiting-cutover"
        journal.close()
        requested.append(request_cutover(run_dir))

    report = run_online(config, Hooks(caught_up=ask))
    assert requested[0].status == "requested" and report.verified
    assert request_cutover(run_dir).as_dict() == {"status": "done", "run_dir": str(run_dir),
                                                  "detail": "already cut over"}


def test_refusals(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 10)
    (tmp_path / "taken.lance").mkdir()
    with pytest.raises(TargetExists):
        run_online(OnlineConfig(store=path, target=tmp_path / "taken.lance"))
    assert not (tmp_path / "taken.lance.run").exists()
    with pytest.raises(SourceError, match="no such MemoryStore"):
        run_online(OnlineConfig(store=tmp_path / "absent.sqlite", target=tmp_path / "x.lance"))
    assert not (tmp_path / "x.lance.run").exists()
    with pytest.raises(UsageError):
        run_online(OnlineConfig(store=path, target=tmp_path / "y.lance", max_rate=0))
    run_dir = tmp_path / "shared.run"
    run_online(OnlineConfig(store=path, target=tmp_path / "a.lance", run_dir=run_dir))
    with pytest.raises(RunChanged):
        run_online(OnlineConfig(store=path, target=tmp_path / "b.lance", run_dir=run_dir))


def test_rollback_before_and_after_finalize(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 300)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    run_online(config)
    finalize_run(config.resolved_run_dir)
    with pytest.raises(UsageError, match="finalized"):
        rollback_run(config.resolved_run_dir)
    assert config.target.exists()

    other = OnlineConfig(store=path, target=tmp_path / "m.lance")
    run_online(other)
    with MemoryStore(path, create=False) as store:
        store.store(new_memory(2, 2, "written-after-the-cut-over"))  # not yet in the dual store
    report = rollback_run(other.resolved_run_dir)
    assert report.status == "rolled-back" and report.proven_rows == 301
    assert not other.target.exists()
    with pytest.raises(UsageError, match="rolled-back"):
        run_online(other)


def test_cli_migrate_and_cutover(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 50)

    def cli(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                              capture_output=True, text=True)

    assert cli("migrate", path, tmp_path / "n.lance").returncode == 2
    done = cli("migrate", "--online", path, tmp_path / "n.lance", "--json")
    assert done.returncode == 0, done.stderr
    assert '"verified": true' in done.stdout
    missing = cli("migrate", "--online", tmp_path / "nope.sqlite", tmp_path / "o.lance")
    assert missing.returncode == 3 and "nope.sqlite" in missing.stderr
    assert cli("cutover", tmp_path / "n.lance.run").returncode == 0
    cut = cli("cutover", tmp_path / "n.lance.run", "--json")
    assert cut.returncode == 0 and '"detail": "already cut over"' in cut.stdout
    assert '"status": "done"' in cut.stdout
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for command in ("migrate", "cutover"):
        help_text = cli(command, "--help")
        assert help_text.returncode == 0 and "Example" in help_text.stdout
        assert f"dualmem-bulk {command}" in readme


def test_max_rate_sleeps_between_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    path = _store(tmp_path / "m.sqlite", 300)
    slept: list[float] = []
    monkeypatch.setattr("dualmem_bulk.online.run.time.sleep", slept.append)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance", batch_size=150,
                          target_batch_s=1000, max_rate=1)
    assert run_online(config).nodes_copied == 300
    assert len(slept) == 2 and all(100 < s <= 150 for s in slept)  # 150 nodes at 1 node/s


def test_sigterm_stops_between_batches_and_resumes(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 300)
    run_dir = tmp_path / "n.lance.run"
    run_dir.mkdir()
    (run_dir / PAUSE).touch()  # the migrator waits before its first batch
    args = [sys.executable, "-m", "dualmem_bulk", "migrate", "--online", str(path),
            str(tmp_path / "n.lance")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (Journal.exists(run_dir) and (run_status(run_dir).last_event or {})
               .get("detail", "").startswith("paused")):
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "run the same command again" in err
    (run_dir / PAUSE).unlink()
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    journal = Journal.open(run_dir)
    assert journal.state == "done" and journal.values["report"]["resumed"] == 1
    journal.close()


def test_failure_inside_the_pause_keeps_legacy_and_resumes(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    path = _store(tmp_path / "m.sqlite", 300)
    config = OnlineConfig(store=path, target=tmp_path / "n.lance")
    writer = MemoryStore(path)
    monkeypatch.setenv("DUALMEM_FAULT", "cutover-pause:1:EIO")
    with pytest.raises(Interrupted, match="run the same command again"):
        run_online(config, Hooks(verify=lambda: writer.store(new_memory(7, 1, "late"))))
    journal = Journal.open(config.resolved_run_dir)
    assert journal.state == "failed" and journal.values["serving"] == "legacy"
    journal.close()
    writer.store(new_memory(7, 2, "after-the-failure"))  # the store's lock was released
    writer.close()
    monkeypatch.delenv("DUALMEM_FAULT")
    report = run_online(config)
    assert report.verified and report.resumed == 1 and report.rows == 302
    _check_equal(path, config.target)


def test_status_and_verify_of_an_online_run(tmp_path: Path) -> None:
    path = _store(tmp_path / "m.sqlite", 120)
    target, run_dir = tmp_path / "n.lance", tmp_path / "n.lance.run"
    run_online(OnlineConfig(store=path, target=target, batch_size=50))
    info = run_status(run_dir)
    assert info.mode == "online" and info.serving == "dual" and info.nodes_done == 120
    assert info.cutover_pause_ms is not None
    with MemoryStore(path, create=False) as store:  # a write the dual store has not seen yet
        store.store(new_memory(7, 1, "late-1"))
    report = verify_run(run_dir)  # applies the change log up to its pin, then compares
    assert report.ok and report.snapshot_rows == report.target_rows == 121
    assert report.snapshot_digest == report.target_digest == report.recomputed_digest
    first = DualStore(target).dataset().to_table().slice(0, 1)
    lance.write_dataset(first, str(target), mode="append")  # one node twice
    report = verify_run(run_dir)
    assert not report.ok and report.target_rows == 122
    assert str(target) in report.mismatches[0]["problem"]
