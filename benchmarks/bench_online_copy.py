"""The online copy's serial fraction: CPU of the migrator process (the driver) over CPU of its
whole process tree, while an online run copies a ``BENCH_ONLINE_NODES`` (default 100,000) node
MemoryStore in rowid ranges with 0, 1 and 2 worker processes and builds the id index (no
service writes: the copy alone). The run is started with ``postpone_cutover`` and stopped
(SIGTERM, exit 4) once it waits for the cut-over, so the digest comparison of the cut-over is
not counted. Run: ``pytest benchmarks -k online_copy -o python_files='bench_*.py'``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import record, tree_usage

from dualmem_bulk.rundir.journal import Journal

NODES = int(os.environ.get("BENCH_ONLINE_NODES", "100000"))

_MIGRATOR = """
import sys
from pathlib import Path
from dualmem_bulk import OnlineConfig, run_online
from dualmem_bulk.errors import Interrupted
store, target, workers = sys.argv[1:4]
try:
    run_online(OnlineConfig(store=Path(store), target=Path(target), postpone_cutover=True,
                            workers=int(workers), poll_s=0.05))
except Interrupted:
    sys.exit(4)
"""


def _stop_when_waiting(proc: subprocess.Popen[str], run_dir: Path) -> None:
    """SIGTERM the migrator once its copy is done and it waits for the cut-over."""
    while proc.poll() is None:
        if Journal.exists(run_dir):
            journal = Journal.open(run_dir)
            try:
                phase = journal.values["phase"]
            finally:
                journal.close()
            if phase == "awaiting-cutover":
                proc.send_signal(signal.SIGTERM)
                return
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_online_copy_serial_fraction(benchmark: Any, store: Path, fresh: Path,
                                     workers: int) -> None:
    target = fresh / "nodes.lance"
    run_dir = fresh / "nodes.lance.run"
    usage: list[Any] = []

    def run() -> None:
        with subprocess.Popen([sys.executable, "-c", _MIGRATOR, str(store), str(target),
                               str(workers)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) as proc:
            watcher = threading.Thread(target=_stop_when_waiting, args=(proc, run_dir))
            watcher.start()
            usage.append(tree_usage(proc))
            watcher.join()
            assert proc.wait() == 4, proc.stderr.read() if proc.stderr else ""

    benchmark.pedantic(run, rounds=1, iterations=1)
    journal = Journal.open(run_dir)
    try:
        report = journal.values["report"]
    finally:
        journal.close()
    tree = usage[-1]
    record(f"online_copy_{workers}_workers", report["nodes_copied"], report["copy_s"],
           driver_cpu_s=round(tree.driver_cpu_s, 2), tree_cpu_s=round(tree.cpu_s, 2),
           serial_fraction=round(tree.driver_cpu_s / tree.cpu_s, 3) if tree.cpu_s else None,
           peak_rss_mib=tree.peak_rss_kib // 1024)
