"""Crash safety with real processes: SIGKILL at seeded points spread over the partitioned export
(Parquet, JSON lines, Engram WAL) and the verification, then resume; SIGINT; a second migrator; a
full disk; a changed config.

Every resumed run must end with the same target digest and the same rows as an uninterrupted
run of the same source.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fingerprint

from dualmem_bulk import StatusReport, run_status
from dualmem_bulk.generate import write_generated
from dualmem_bulk.rundir.journal import Journal

NODES = int(os.environ.get("CRASH_NODES", "200000"))
BATCH = "8192"
pytestmark = pytest.mark.slow


def _cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "dualmem_bulk", *map(str, args)]


def convert_args(src: Path, target: Path, *extra: str) -> list[str]:
    return _cmd("convert", src, target, "--batch-size", BATCH, "--json", *extra)


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Row groups of the batch size: one partition each, 25 of them at 200K nodes."""
    path = tmp_path_factory.mktemp("crash") / "memories.parquet"
    write_generated(path, NODES, seed=11, batch_size=int(BATCH))
    return path


def _baseline(source: Path, target: Path, *extra: str) -> dict[str, Any]:
    done = run(convert_args(source, target, *extra))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    digest, ids, stored, recomputed = fingerprint(target)
    assert digest == report["target_digest"] and stored == recomputed
    return {"report": report, "digest": digest, "ids": ids, "stored": stored,
            "quarantine": _quarantine(target.with_name(target.name + ".run"))}


def _quarantine(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "quarantine.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


@pytest.fixture(scope="module")
def baseline(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _baseline(source, tmp_path_factory.mktemp("base") / "nodes.lance")


def wait_for(proc: subprocess.Popen[str], run_dir: Path, ready: Callable[[StatusReport], bool],
             timeout: float = 300) -> StatusReport:
    """Poll the run's journal until ``ready(status)`` (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (f"migrator ended early: {proc.returncode}",
                                     proc.communicate()[1])
        if Journal.exists(run_dir):
            try:
                status = run_status(run_dir)
            except Exception:  # the journal may be in its first transaction
                status = None
            if status and ready(status):
                return status
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def _in_export(goal: int, delay: float) -> Callable[[StatusReport], bool]:
    """``delay`` seconds after at least ``goal`` partitions are recorded: anywhere in the
    export, mid-partition included."""
    reached: list[float] = []

    def ready(s: StatusReport) -> bool:
        if s.state != "exporting" or s.units_committed < goal:
            return False
        reached.append(time.monotonic())
        return time.monotonic() - reached[0] >= delay
    return ready


def _in_verify(rng: random.Random) -> Callable[[StatusReport], bool]:
    delay = rng.uniform(0.0, 0.5)
    started: list[float] = []

    def ready(s: StatusReport) -> bool:
        if s.state != "verifying":
            return False
        started.append(time.monotonic())
        return time.monotonic() - started[0] >= delay
    return ready


def _recorded(run_dir: Path) -> dict[int, tuple[Any, ...]]:
    """Each recorded partition: its unit row and what its export found, as journalled."""
    journal = Journal.open(run_dir)
    try:
        return {r.unit: (r, stats) for r, stats in zip(journal.batches(), journal.exported(),
                                                        strict=True)}
    finally:
        journal.close()


def kill_and_resume(source: Path, target: Path, base: dict[str, Any], kills: int, seed: int,
                    *extra: str) -> list[str]:
    """SIGKILL the conversion ``kills`` times in its export (after a seeded number of recorded
    partitions each, in increasing order, and a seeded delay) and once in its verification, then
    resume it: every partition recorded before a kill stays as recorded (it was not redone),
    and the result equals the uninterrupted run's."""
    rng = random.Random(seed)
    run_dir = target.with_name(target.name + ".run")
    partitions = base["report"]["units"]
    landed: list[str] = []
    before: dict[int, tuple[Any, ...]] = {}
    goals = sorted(rng.sample(range(partitions - 1), min(kills, partitions - 1)))
    plan = [*(_in_export(goal, rng.uniform(0.0, 0.4)) for goal in goals), _in_verify(rng)]
    for ready in plan:
        proc = start(convert_args(source, target, *extra))
        try:
            status = wait_for(proc, run_dir, ready)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        now = _recorded(run_dir)
        assert {unit: now[unit] for unit in before} == before  # nothing recorded was redone
        before = now
        landed.append(f"{status.state}@{len(now)}/{partitions}")
        after = run_status(run_dir)
        assert not after.running and after.rollback_possible
    done = run(convert_args(source, target, *extra))
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    assert {unit: _recorded(run_dir)[unit] for unit in before} == before
    report = json.loads(done.stdout)
    assert report["status"] == "done" and report["verified"]
    for key in ("target_digest", "snapshot_digest", "nodes_in", "quarantined",
                "quarantine_codes", "quarantine_sample"):
        assert report[key] == base["report"][key], key
    digest, ids, stored, recomputed = fingerprint(target)
    assert digest == base["digest"]
    assert ids == base["ids"] and stored == base["stored"] == recomputed
    assert _quarantine(run_dir) == base["quarantine"]
    assert not target.with_name(f".{target.name}.dualmem-partial").exists()
    return landed


def test_sigkill_anywhere_in_a_parquet_export_then_resume_is_identical(
    source: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    landed = kill_and_resume(source, tmp_path / "nodes.lance", baseline, 6, 20261206)
    assert len({entry for entry in landed if entry.startswith("exporting")}) >= 4, landed
    print("kill points (parquet):", landed)  # reported in the closing note (pytest -s)


@pytest.mark.parametrize("fmt", ["jsonl", "engram-wal"])
def test_sigkill_in_a_jsonl_or_wal_export_then_resume_is_identical(
    tmp_path: Path, fmt: str
) -> None:
    src = tmp_path / ("memories.jsonl" if fmt == "jsonl" else "engram-data")
    write_generated(src, 40_000, seed=13, fmt=fmt)  # type: ignore[arg-type]
    base = _baseline(src, tmp_path / "base" / "nodes.lance", "--batch-size", "4096")
    assert base["report"]["units"] >= 3
    landed = kill_and_resume(src, tmp_path / "nodes.lance", base, 3, 7, "--batch-size", "4096")
    print(f"kill points ({fmt}):", landed)


def test_sigint_checkpoints_and_exits_4(source: Path, baseline: dict[str, Any],
                                        tmp_path: Path) -> None:
    target = tmp_path / "nodes.lance"
    run_dir = tmp_path / "nodes.lance.run"
    proc = start(convert_args(source, target))
    wait_for(proc, run_dir, lambda s: s.state == "exporting" and s.units_committed >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "interrupted by SIGINT" in err and "again to resume" in err
    assert json.loads(out)["status"] == "error"
    status = run_status(run_dir)
    assert status.state == "exporting" and not status.running
    assert 0 < status.nodes_done < NODES
    done = run(convert_args(source, target))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["target_digest"] == baseline["digest"]


def test_second_migrator_gets_exit_5_and_dead_lock_is_taken_over(
    source: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "nodes.lance"
    run_dir = tmp_path / "nodes.lance.run"
    first = start(convert_args(source, target))
    try:
        wait_for(first, run_dir, lambda s: s.running)
        started = time.monotonic()
        second = run(convert_args(source, target))
        assert second.returncode == 5
        assert f"pid {first.pid}" in second.stderr and "another migrator" in second.stderr
        assert time.monotonic() - started < 30
        assert run_status(run_dir).lock_holder["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    third = run(convert_args(source, target))
    assert third.returncode == 0, third.stderr
    assert f"took over the lock of a dead migrator (pid {first.pid}" in third.stderr
    assert json.loads(third.stdout)["target_digest"] == baseline["digest"]


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_full_disk_fails_cleanly_and_resumes(source: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / "nodes.out"
    args = convert_args(source, target, "--target-format", fmt)
    failed = run(args, env={"DUALMEM_FAULT": "target-write:3:ENOSPC"})
    assert failed.returncode == 4, failed.stderr
    assert "No space left on device" in failed.stderr
    status = run_status(tmp_path / "nodes.out.run")
    assert status.state == "failed" and status.units_committed == 2
    assert not target.exists()
    done = run(args)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verified"] and report["nodes_converted"] == report["snapshot_rows"]


def test_changed_config_or_source_refuses_resume(tmp_path: Path) -> None:
    src = tmp_path / "m.parquet"
    write_generated(src, 3000, seed=5, batch_size=100)
    target = tmp_path / "n.lance"
    run_dir = tmp_path / "n.lance.run"
    proc = start(_cmd("convert", src, target, "--batch-size", "100"))
    wait_for(proc, run_dir, lambda s: s.units_committed >= 1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    changed = run(_cmd("convert", src, target, "--batch-size", "200"))
    assert changed.returncode == 3
    assert "configuration changed" in changed.stderr and "batch_size: 100 -> 200" in changed.stderr
    assert "--restart" in changed.stderr
    os.utime(src, ns=(time.time_ns(), time.time_ns()))
    moved = run(_cmd("convert", src, target, "--batch-size", "100"))
    assert moved.returncode == 3 and "source" in moved.stderr and "changed" in moved.stderr
    restarted = run(_cmd("convert", src, target, "--batch-size", "200", "--restart", "--yes",
                         "--json"))
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads(restarted.stdout)["nodes_converted"] == 3000
    again = run(_cmd("convert", src, target, "--batch-size", "200", "--json"))
    assert again.returncode == 0 and "already done" in again.stderr


def test_checkpoint_every_groups_batches(tmp_path: Path) -> None:
    src = tmp_path / "m.parquet"
    write_generated(src, 2500, seed=6, batch_size=100)  # row groups of 100: partitions of 1000
    done = run(_cmd("convert", src, tmp_path / "n.lance", "--batch-size", "100",
                    "--checkpoint-every", "1000"))
    assert done.returncode == 0, done.stderr
    journal = Journal.open(tmp_path / "n.lance.run")
    assert [r.rows for r in journal.batches()] == [1000, 1000, 500]
    assert pa.array([r.version for r in journal.batches()]).null_count == 0
    journal.close()
