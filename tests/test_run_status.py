"""``status`` in every phase, offline and online, through real subprocesses: the same keys as
numbers (``None`` only before the first checkpoint), ISO 8601 times, the lock holder, whether
rollback is possible; the text form shows the same figures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import journal_value

from dualmem_bulk.generate import generate_batches
from dualmem_bulk.stores.memory_store import MemoryStore

KEYS = ("state", "phase", "nodes_done", "nodes_total", "rate_nodes_per_s", "eta_s",
        "last_checkpoint", "lock_holder", "rollback_possible")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def cli(*args: str | Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
                          env=env)


def status(run_dir: Path) -> tuple[dict[str, Any], str]:
    """``status --json`` and the text form of the same run."""
    as_json, text = cli("status", run_dir, "--json"), cli("status", run_dir)
    assert as_json.returncode == 0 and text.returncode == 0, as_json.stderr + text.stderr
    info = json.loads(as_json.stdout)
    for key in KEYS:
        assert key in info, key
    assert "export not finished" not in text.stdout and "- nodes/s" not in text.stdout
    return info, text.stdout


def checkpointed(info: dict[str, Any], text: str) -> None:
    """After a checkpoint every figure is a number, and the text shows them."""
    for key in ("nodes_done", "nodes_total", "rate_nodes_per_s", "eta_s"):
        assert isinstance(info[key], (int, float)) and not isinstance(info[key], bool), key
    assert info["nodes_done"] <= info["nodes_total"]
    assert ISO.match(info["last_checkpoint"])
    assert f"{info['nodes_done']:,} of {info['nodes_total']:,}" in text
    assert info["last_checkpoint"] in text and "nodes/s" in text


def frozen_while(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    """Wait until ``ready()``, then stop the process where it is (it keeps its lock)."""
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("status") / "m.jsonl"
    done = cli("generate", path, "--nodes", "3000", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    return path


def test_status_while_exporting_holds_no_figures_yet(source: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "n.lance.run"
    proc = subprocess.Popen([sys.executable, "-m", "dualmem_bulk", "convert", str(source),
                             str(tmp_path / "n.lance"), "--quiet"], stdin=subprocess.DEVNULL)
    try:
        frozen_while(proc, lambda: journal_value(run_dir, "state") == "exporting")
        info, text = status(run_dir)
    finally:
        proc.kill()
        proc.wait()
    assert info["state"] == info["phase"] == "exporting" and info["rollback_possible"]
    assert info["lock_holder"]["pid"] == proc.pid and ISO.match(info["lock_holder"]["started"])
    assert all(info[k] is None for k in ("rate_nodes_per_s", "eta_s", "last_checkpoint"))
    assert (info["nodes_done"], info["nodes_total"]) in ((None, None), (0, 3000))  # planned?
    assert "no checkpoint yet" in text and f"held by pid {proc.pid}" in text


def test_status_after_units_were_committed(source: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "n.lance.run"
    env = {**os.environ, "DUALMEM_FAULT": "target-write:3:ENOSPC"}  # a full disk at unit 3
    stopped = cli("convert", source, tmp_path / "n.lance", "--batch-size", "500", "--workers",
                  "0", "--quiet", env=env)
    assert stopped.returncode == 4, stopped.stderr
    info, text = status(run_dir)
    assert info["state"] == "failed" and info["phase"] == "exporting"
    assert info["nodes_done"] == 1000 and info["nodes_total"] == 3000  # 2 partitions of 3
    assert info["rate_nodes_per_s"] > 0 and info["eta_s"] > 0
    assert info["lock_holder"] is None and "free" in text
    checkpointed(info, text)
    assert cli("convert", source, tmp_path / "n.lance", "--batch-size", "500",
               "--quiet").returncode == 0
    info, text = status(run_dir)
    assert info["state"] == "done" and info["nodes_done"] == info["nodes_total"] == 3000
    assert info["eta_s"] == 0
    checkpointed(info, text)


@pytest.fixture()
def live_store(tmp_path: Path) -> Path:
    path = tmp_path / "m.sqlite"
    with MemoryStore(path) as store:
        for batch in generate_batches(300, 5, 100):
            store.store_batch(batch)
    return path


def test_status_of_an_online_run_copying_then_cut_over(live_store: Path,
                                                       tmp_path: Path) -> None:
    target, run_dir = tmp_path / "n.lance", tmp_path / "n.lance.run"
    args = ["migrate", "--online", live_store, target, "--batch-size", "50",
            "--target-batch-s", "100", "--max-rate", "200", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                            stdin=subprocess.DEVNULL)
    try:
        frozen_while(proc, lambda: int((journal_value(run_dir, "online_copied") or {})
                                       .get("rows", 0)) >= 100)
        info, text = status(run_dir)
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait()
    assert info["mode"] == "online" and info["phase"] == "copying" and info["running"]
    assert 100 <= info["nodes_done"] < 300 and info["nodes_total"] == 300
    assert info["eta_s"] > 0 and info["rollback_possible"]
    checkpointed(info, text)
    assert "export" not in text
    info, text = status(run_dir)
    assert info["state"] == "done" and info["nodes_done"] == info["nodes_total"] == 300
    assert info["eta_s"] == 0 and info["lock_holder"] is None
    checkpointed(info, text)
    assert "export" not in text and "serving          dual" in text
