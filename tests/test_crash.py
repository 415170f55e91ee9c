"""Crash safety with real processes: SIGKILL at points spread over export, conversion and
verification, then resume; SIGINT; a second migrator; a full disk; a changed config.

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
import pytest
from conftest import fingerprint

from dualmem_bulk.generate import write_generated
from dualmem_bulk.journal import Journal
from dualmem_bulk.status import run_status

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
    path = tmp_path_factory.mktemp("crash") / "memories.parquet"
    write_generated(path, NODES, seed=11)
    return path


@pytest.fixture(scope="module")
def baseline(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    target = tmp_path_factory.mktemp("base") / "nodes.lance"
    done = run(convert_args(source, target))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    digest, ids, stored, recomputed = fingerprint(target)
    assert digest == report["target_digest"] and stored == recomputed
    return {"report": report, "digest": digest, "ids": ids, "stored": stored}


def wait_for(proc: subprocess.Popen[str], run_dir: Path, ready: Callable[[dict[str, Any]], bool],
             timeout: float = 300) -> dict[str, Any]:
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


def _in_export(rng: random.Random) -> Callable[[dict[str, Any]], bool]:
    started: list[float] = []

    def ready(s: dict[str, Any]) -> bool:
        if s["state"] != "exporting":
            return False
        started.append(time.monotonic())
        return time.monotonic() - started[0] > rng.uniform(0.2, 2.0)
    return ready


def _in_convert(rng: random.Random, total_groups: int) -> Callable[[dict[str, Any]], bool]:
    goal = rng.randint(1, max(1, total_groups - 2))
    return lambda s: s["state"] == "converting" and s["batches_done"] >= goal


def _in_verify(rng: random.Random) -> Callable[[dict[str, Any]], bool]:
    started: list[float] = []

    def ready(s: dict[str, Any]) -> bool:
        if s["state"] != "verifying":
            return False
        started.append(time.monotonic())
        return time.monotonic() - started[0] > rng.uniform(0.0, 1.0)
    return ready


def test_sigkill_anywhere_then_resume_is_identical(
    source: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    groups = -(-NODES // int(BATCH))
    landed: list[str] = []
    for chain in range(3):
        target = tmp_path / f"chain{chain}" / "nodes.lance"
        target.parent.mkdir()
        run_dir = target.with_name("nodes.lance.run")
        plan = [_in_export(rng), _in_convert(rng, groups), _in_convert(rng, groups),
                _in_verify(rng)]
        for ready in plan:
            proc = start(convert_args(source, target))
            try:
                status = wait_for(proc, run_dir, ready)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
            landed.append(f"{status['state']}@{status['batches_done']}")
            after = run_status(run_dir)
            assert not after["running"] and after["rollback_possible"]
        done = run(convert_args(source, target))
        assert done.returncode == 0, done.stderr
        assert "resuming" in done.stderr
        report = json.loads(done.stdout)
        assert report["status"] == "done" and report["verified"]
        assert report["target_digest"] == baseline["digest"]
        digest, ids, stored, recomputed = fingerprint(target)
        assert digest == baseline["digest"]
        assert ids == baseline["ids"] and stored == baseline["stored"] == recomputed
        assert not target.with_name(".nodes.lance.dualmem-partial").exists()
    phases = {entry.split("@")[0] for entry in landed}
    assert phases == {"exporting", "converting", "verifying"}, landed
    assert len(landed) >= 12
    print("kill points:", landed)  # reported in the closing note (pytest -s)


def test_sigint_checkpoints_and_exits_4(source: Path, baseline: dict[str, Any],
                                        tmp_path: Path) -> None:
    target = tmp_path / "nodes.lance"
    run_dir = tmp_path / "nodes.lance.run"
    proc = start(convert_args(source, target))
    wait_for(proc, run_dir, lambda s: s["state"] == "converting" and s["units_committed"] >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "interrupted by SIGINT" in err and "again to resume" in err
    assert json.loads(out)["status"] == "error"
    status = run_status(run_dir)
    assert status["state"] == "converting" and not status["running"]
    assert 0 < status["nodes_done"] < NODES
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
        wait_for(first, run_dir, lambda s: s["running"])
        started = time.monotonic()
        second = run(convert_args(source, target))
        assert second.returncode == 5
        assert f"pid {first.pid}" in second.stderr and "another migrator" in second.stderr
        assert time.monotonic() - started < 30
        assert run_status(run_dir)["lock_holder"]["pid"] == first.pid
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
    assert status["state"] == "failed" and status["units_committed"] == 2
    assert not target.exists()
    done = run(args)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verified"] and report["nodes_converted"] == report["snapshot_rows"]


def test_changed_config_or_source_refuses_resume(tmp_path: Path) -> None:
    src = tmp_path / "m.parquet"
    write_generated(src, 3000, seed=5)
    target = tmp_path / "n.lance"
    run_dir = tmp_path / "n.lance.run"
    proc = start(_cmd("convert", src, target, "--batch-size", "100"))
    wait_for(proc, run_dir, lambda s: s["units_committed"] >= 1)
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
    write_generated(src, 2500, seed=6)
    done = run(_cmd("convert", src, tmp_path / "n.lance", "--batch-size", "100",
                    "--checkpoint-every", "1000"))
    assert done.returncode == 0, done.stderr
    journal = Journal.open(tmp_path / "n.lance.run")
    assert [r.rows for r in journal.batches()] == [1000, 1000, 500]
    assert pa.array([r.version for r in journal.batches()]).null_count == 0
    journal.close()
