"""The online driver on a live Engram data root: copy the replay at a pinned WAL position, catch
up with records appended meanwhile (new ids, duplicates, deletes, re-adds, a record still being
written, a new file), cut over only when equal to the replay; verify, rollback; the shared
real-format fixtures; the WAL feed's position rules."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from dualmem_bulk import OnlineConfig, rollback_run, run_online, run_status, verify_run
from dualmem_bulk.errors import Interrupted, SourceError
from dualmem_bulk.generate import write_generated
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.sources.engram_wal import read_engram_wal
from dualmem_bulk.sources.engram_wal_feed import WalFeed
from tests.test_online_run import Hooks
from tests.wal_appender import Appender, assert_same_nodes, reference

FIXTURE_ROOT = Path(__file__).resolve().parents[2] / "shared/fixtures/engram-wal/engram-data"
"""The shared fixture, reached as ``../shared`` from the repository root."""
LOCAL_FIXTURE_ROOT = Path(__file__).parent.parent / "data/fixtures/engram-wal/engram-data"


def _root(tmp_path: Path, nodes: int = 3_000) -> Path:
    root = tmp_path / "engram-data"
    write_generated(root, nodes, 7, fmt="engram-wal")
    return root


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_online_wal_catches_up_with_appended_records(tmp_path: Path) -> None:
    root = _root(tmp_path)
    present = [(r.space, r.id) for r in read_engram_wal(root, 1_000).winners()]
    spaces = sorted({s for s, _ in present})
    assert len(spaces) >= 2
    w = Appender(root)
    (s0, a), (s1, b), (_, c), (s3, d) = present[0], present[-1], present[1], present[2]

    def during_copy() -> None:  # after the pin: all of it reaches the target by catching up
        w.store(spaces[0], "new_in_copy_0")
        w.store(spaces[1], "new_in_copy_1")
        w.store(s0, a, what="a duplicate store: the replay keeps the first")
        w.delete(s1, b)
        w.delete(s0, c)
        w.store(s0, c, what="re-added after its delete")
        w.start_torn(spaces[0], "torn_then_whole")

    def during_catch_up() -> None:
        w.finish_torn()
        w.delete(spaces[1], "new_in_copy_1")
        w.store(spaces[1], "new_in_copy_1", what="back")
        w.delete(s3, d)
        w.store(s3, d, what="back once")
        w.delete(s3, d)  # ... and gone for good
        w.new_file(spaces[1], 2_000_000_000)
        for i in range(300):
            w.store(spaces[1], f"rotated_{i}")
        w.delete(spaces[1], "rotated_7")

    hooks = Hooks(copy=during_copy, catch_up=during_catch_up)
    target = tmp_path / "nodes.lance"
    report = run_online(OnlineConfig(store=root, target=target, batch_size=500, cutover_lag=0,
                                     poll_s=0.01), hooks)
    assert report.status == "done" and report.verified and report.notes == []
    assert report.nodes_copied == len(present)
    assert report.changes_applied >= 300 + 6

    digest, expected = reference(root, tmp_path / "ref.lance")
    assert (report.digest, report.rows) == (digest, expected.num_rows)
    assert_same_nodes(target, expected)
    ids = set(expected.column("episode_id").to_pylist())
    assert {"torn_then_whole", "new_in_copy_1", c, "rotated_0"} <= ids
    assert not {b, d, "rotated_7"} & ids

    run_dir = target.with_name("nodes.lance.run")
    assert verify_run(run_dir).ok
    assert run_status(run_dir).state == "done"
    before = _files(root)
    rolled = rollback_run(run_dir)
    assert rolled.as_dict()["status"] == "rolled-back" and not target.exists()
    assert _files(root) == before  # the WAL was only read


def test_online_wal_resumes_after_an_unrecorded_catch_up_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root(tmp_path, 1_000)
    w = Appender(root)
    target = tmp_path / "nodes.lance"
    config = OnlineConfig(store=root, target=target, batch_size=300, cutover_lag=0, poll_s=0.01)

    def append() -> None:
        for i in range(50):
            w.store("default", f"late_{i}")
        w.delete("default", "late_3")

    monkeypatch.setenv("DUALMEM_FAULT", "wal-applied:1:EIO")  # dies between commit and journal
    with pytest.raises(Interrupted):
        run_online(config, Hooks(catch_up=append))
    monkeypatch.delenv("DUALMEM_FAULT")
    w.store("default", "after_the_crash")
    report = run_online(config)
    assert report.status == "done" and report.resumed == 1
    digest, expected = reference(root, tmp_path / "ref.lance")
    assert (report.digest, report.rows) == (digest, expected.num_rows)
    assert_same_nodes(target, expected)


@pytest.mark.parametrize("fixture_root", [FIXTURE_ROOT, LOCAL_FIXTURE_ROOT],
                         ids=["shared", "local"])
def test_online_wal_fixture_equals_offline_replay(fixture_root: Path, tmp_path: Path) -> None:
    if not fixture_root.is_dir():
        pytest.fail(f"{fixture_root} is missing")
    root = tmp_path / "engram-data"
    shutil.copytree(fixture_root, root)
    target = tmp_path / "nodes.lance"
    report = run_online(OnlineConfig(store=root, target=target))
    source = read_engram_wal(root, 1_000)
    assert report.status == "done" and report.rows == source.memories
    assert report.notes == source.damage()  # damage reported as the offline reader does
    digest, expected = reference(root, tmp_path / "ref.lance")
    assert report.digest == digest
    assert_same_nodes(target, expected)
    if fixture_root == FIXTURE_ROOT:
        lines = (fixture_root.parent / "expected-memories.jsonl").read_text().splitlines()
        assert report.rows == len(lines)
    run_dir = target.with_name("nodes.lance.run")
    journal = Journal.open(run_dir)
    try:
        position = journal.values["cutover_position"]
    finally:
        journal.close()
    feed = WalFeed(root)
    feed.advance()
    assert position == feed.position  # every whole record, not the torn tail


def test_wal_feed_waits_for_a_whole_record(tmp_path: Path) -> None:
    root = _root(tmp_path, 200)
    feed = WalFeed(root)
    read, _ = feed.advance()
    assert read > 0 and feed.tail_issues() == []
    w = Appender(root)
    w.start_torn("default", "slow")
    assert feed.advance() == (0, set())
    assert [i.kind for i in feed.tail_issues()] == ["torn_tail"]
    w.finish_torn()
    assert feed.advance() == (1, {("default", "slow")})
    rows, deletes = feed.outcome({("default", "slow"), ("default", "never_stored")})
    assert rows.column("id").to_pylist() == ["slow"] and deletes == [("default", "never_stored")]


def test_wal_feed_refuses_a_rewritten_wal(tmp_path: Path) -> None:
    root = _root(tmp_path, 200)
    feed = WalFeed(root)
    feed.advance()
    newest = sorted((root / "default" / "wal").glob("wal-*.log"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(SourceError, match="shrank below the migrated position"):
        feed.advance()
    newest.unlink()
    with pytest.raises(SourceError, match="vanished from the live WAL"):
        feed.advance()
