"""Honest figures, through real subprocesses on real files: each phase's rate is its own nodes
over its own wall time, a resumed run tells this invocation's nodes from the run's total, a
throttled copy counts its sleeps, and a dry run measures a real sample conversion, checks the
free space and says go or no-go, leaving nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import kill_after_units

from dualmem_bulk import run_status
from dualmem_bulk.generate import generate_batches, write_generated
from dualmem_bulk.offline.dry_run import HEADROOM, NO_GO_EXIT, SAMPLE_ROWS
from dualmem_bulk.rundir.files import PAUSE
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.stores.memory_store import MemoryStore


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)


def _json(done: subprocess.CompletedProcess[str], code: int = 0) -> dict[str, Any]:
    assert done.returncode == code, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1  # exactly one object
    return json.loads(lines[0])  # type: ignore[no-any-return]


def _close(rate: float, seconds: float, nodes: int) -> bool:
    """rate * seconds == nodes, up to the rounding of both (0.1 node/s, 1 ms)."""
    return abs(rate * seconds - nodes) <= 0.05 * seconds + rate * 0.0005 + 1e-6


def _assert_phases_add_up(report: dict[str, Any]) -> None:
    for name, phase in report["phases"].items():
        assert report["phases_s"][name] == phase["seconds"]
        if phase["nodes"]:
            assert _close(phase["nodes_per_s"], phase["seconds"], phase["nodes"]), name
        else:
            assert phase["nodes_per_s"] is None, name
        assert phase["nodes"] <= report["nodes_total"], name
    assert sum(p["seconds"] for p in report["phases"].values()) <= report["elapsed_s"] + 0.002
    assert report["nodes_this_invocation"] <= report["nodes_total"]
    assert _close(report["nodes_per_s"], report["elapsed_s"], report["nodes_this_invocation"])


def test_each_phase_rate_is_its_nodes_over_its_own_time(tmp_path: Path) -> None:
    src = tmp_path / "m.parquet"
    write_generated(src, 6000, seed=4, batch_size=1000)
    report = _json(_cli("convert", src, tmp_path / "n.lance", "--batch-size", "1000", "--json"))
    assert report["nodes_total"] == report["nodes_this_invocation"] == report["nodes_in"] == 6000
    assert list(report["phases"]) == ["export", "place", "verify"]
    assert report["phases"]["export"]["nodes"] == 6000
    # every fragment was read back by its task: the verify phase re-read no row, and says so
    # instead of dividing 6,000 nodes by the time of a digest comparison
    assert report["phases"]["verify"] == {**report["phases"]["verify"], "nodes": 0,
                                          "nodes_per_s": None}
    _assert_phases_add_up(report)
    check = _json(_cli("verify", tmp_path / "n.lance.run", "--json"))
    assert check["ok"] and check["read_back"] == 6000  # verify alone reads every row
    text = _cli("convert", src, tmp_path / "t.lance", "--batch-size", "1000", "--quiet")
    assert text.returncode == 0, text.stderr
    export = next(line for line in text.stdout.splitlines() if line.strip().startswith("export"))
    assert "6,000 nodes" in export and "nodes/s" in export


def test_an_in_place_run_converts_in_its_export_tasks(tmp_path: Path) -> None:
    """An in-place run of a Parquet store is partitioned like a copy run: its export tasks
    convert and write, and its store is only renamed into place afterwards."""
    store = tmp_path / "store"
    store.mkdir()
    write_generated(store / "part-0.parquet", 3000, seed=8, batch_size=1000)
    report = _json(_cli("convert", store, "--in-place", "--target-format", "parquet",
                        "--batch-size", "1000", "--json"))
    assert report["phases"]["export"]["nodes"] == 3000 and report["units"] == 3
    assert report["phases"]["place"]["nodes"] == 0 and "convert" not in report["phases"]
    assert report["nodes_this_invocation"] == 3000
    _assert_phases_add_up(report)


def test_a_resumed_run_reports_this_invocation_and_the_total_apart(tmp_path: Path) -> None:
    src = tmp_path / "m.parquet"
    write_generated(src, 20_000, seed=6, batch_size=1000)
    target, run_dir = tmp_path / "n.lance", tmp_path / "n.lance.run"
    args = ["convert", str(src), str(target), "--batch-size", "1000", "--workers", "0",
            "--json"]
    kill_after_units(args, run_dir, 5)
    journal = Journal.open(run_dir)
    try:
        recorded = sum(stats["nodes_in"] for stats in journal.exported())
    finally:
        journal.close()
    assert 5000 <= recorded < 20_000
    done = _cli(*args)
    report = _json(done)
    assert "resuming" in done.stderr
    assert report["nodes_total"] == report["nodes_in"] == 20_000
    assert report["nodes_this_invocation"] == 20_000 - recorded
    assert report["phases"]["export"]["nodes"] == 20_000 - recorded
    _assert_phases_add_up(report)
    again = _json(_cli(*args))  # a finished run, asked again: its report, unchanged
    assert again["nodes_this_invocation"] == 20_000 - recorded


def test_a_throttled_copy_counts_its_sleeps(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    with MemoryStore(path) as store:
        for batch in generate_batches(1200, 5, 400):
            store.store_batch(batch)
    report = _json(_cli("migrate", "--online", path, tmp_path / "n.lance", "--batch-size",
                        "300", "--target-batch-s", "1000", "--max-rate", "2000", "--json"))
    assert report["nodes_copied"] == report["nodes_copied_this_invocation"] == 1200
    assert report["copy_s"] >= 1200 / 2000
    assert report["copy_nodes_per_s"] <= 2000
    assert report["elapsed_s"] >= report["copy_s"]


def test_a_resumed_online_copy_reports_this_invocation_and_the_total_apart(
        tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    with MemoryStore(path) as store:
        for batch in generate_batches(2000, 5, 500):
            store.store_batch(batch)
    run_dir = tmp_path / "n.lance.run"
    args = ["migrate", "--online", str(path), str(tmp_path / "n.lance"), "--batch-size", "100",
            "--max-rate", "1000", "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "dualmem_bulk", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def copied() -> int:
        journal = Journal.open(run_dir)
        try:
            return int((journal.values["online_copied"] or {}).get("rows", 0))
        finally:
            journal.close()

    while not (Journal.exists(run_dir) and copied() >= 100):
        assert proc.poll() is None
        time.sleep(0.01)
    (run_dir / PAUSE).touch()  # held between two batches, then stopped there
    while (run_status(run_dir).last_event or {}).get("detail", "")[:6] != "paused":
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 4
    before = copied()
    assert 100 <= before < 2000
    (run_dir / PAUSE).unlink()
    report = _json(_cli(*args))
    assert report["nodes_copied"] == 2000 and report["resumed"] == 1
    assert report["nodes_copied_this_invocation"] == 2000 - before
    assert report["copy_nodes_per_s"] <= 1000  # over every invocation's copy time


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_dry_run_measures_a_sample_and_says_go(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / f"m.{fmt}"
    write_generated(src, SAMPLE_ROWS + 2000, seed=9, fmt=fmt)  # type: ignore[arg-type]
    before = _listing(tmp_path)
    report = _json(_cli("convert", src, tmp_path / "n.lance", "--dry-run", "--json"))
    assert _listing(tmp_path) == before  # nothing left behind
    assert report["decision"] == "go" and report["status"] == "dry-run"
    est = report["estimate"]
    assert est["sample_rows"] == SAMPLE_ROWS
    assert est["basis"] == {"parquet": "parquet rows of the source",
                            "jsonl": "json lines of the source"}[fmt]
    assert report["phases"]["sample"]["nodes"] == SAMPLE_ROWS
    scale = report["nodes_total"] / SAMPLE_ROWS
    assert est["target_bytes"] == int(est["sample_target_bytes"] * scale)
    assert report["estimated_disk_bytes"] == est["target_bytes"] + est["run_dir_bytes"]
    assert report["estimated_s"] == pytest.approx(est["sample_s"] * scale, abs=0.06)
    [fs] = est["filesystems"]  # target and run directory on one filesystem: counted once
    assert fs["for"] == ["target", "run directory"]
    assert fs["needed_bytes"] >= report["estimated_disk_bytes"] * (1 + HEADROOM) - 2
    assert fs["free_bytes"] == pytest.approx(shutil.disk_usage(tmp_path).free, rel=0.05)
    _assert_phases_add_up(report)
    # the estimate is what a real run then writes
    _json(_cli("convert", src, tmp_path / "n.lance", "--json", "--quiet"))
    written = sum(p.stat().st_size for folder in ("n.lance", "n.lance.run")
                  for p in (tmp_path / folder).rglob("*") if p.is_file())
    assert 0.8 < written / report["estimated_disk_bytes"] < 1.25


def test_dry_run_says_no_go_when_the_space_is_short(tmp_path: Path) -> None:
    src = tmp_path / "m.parquet"
    write_generated(src, 500, seed=2)
    run_dir = tmp_path / "elsewhere" / "run"
    before = _listing(tmp_path)
    keep = shutil.disk_usage(tmp_path).free * 2
    done = _cli("convert", src, tmp_path / "n.lance", "--run-dir", run_dir, "--dry-run",
                "--keep-free", str(keep), "--json")
    report = _json(done, NO_GO_EXIT)
    assert _listing(tmp_path) == before
    assert report["decision"] == "no-go" and str(tmp_path) in report["decision_reason"]
    assert report["estimate"]["keep_free_bytes"] == keep
    [fs] = report["estimate"]["filesystems"]
    assert fs["needed_bytes"] > fs["free_bytes"]
    text = _cli("convert", src, tmp_path / "n.lance", "--dry-run", "--keep-free", str(keep))
    assert text.returncode == NO_GO_EXIT
    assert text.stdout.splitlines()[-1].startswith("no-go: ")
    enough = _json(_cli("convert", src, tmp_path / "n.lance", "--run-dir", run_dir,
                        "--dry-run", "--keep-free", "0", "--json"))
    assert enough["decision"] == "go"
    assert not os.path.exists(run_dir)
