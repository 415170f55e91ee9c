"""Benchmark data (generated once per session) and a summary of nodes/s and ratios.

Sizes: ``BENCH_NODES`` (default 200,000) for the throughput runs, ``BENCH_ROW_NODES`` (20,000)
for the row-by-row baseline, ``BENCH_RSS_SIZES`` (``200000,1000000``) for peak-RSS runs.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dualmem_bulk.generate import write_generated

NODES = int(os.environ.get("BENCH_NODES", "200000"))
ROW_NODES = int(os.environ.get("BENCH_ROW_NODES", "20000"))
RSS_SIZES = [int(s) for s in
             os.environ.get("BENCH_RSS_SIZES", "100000,1000000,2000000").split(",") if s]
RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


def generated(workdir: Path, nodes: int) -> Path:
    """A generated legacy Parquet file of ``nodes`` nodes (seed 7), made once."""
    path = workdir / f"memories-{nodes}.parquet"
    if not path.exists():
        write_generated(path, nodes, seed=7)
    return path


@pytest.fixture(scope="session")
def source(workdir: Path) -> Path:
    return generated(workdir, NODES)


@pytest.fixture(scope="session")
def row_source(workdir: Path) -> Path:
    return generated(workdir, ROW_NODES)


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as kids:
            return [int(k) for k in kids.read().split()]
    except OSError:
        return []


def tree_peak_rss(proc: subprocess.Popen[str], every: float = 0.02) -> tuple[int, int]:
    """Sample a running process and its descendants until it exits: (largest sum of their
    RSS, largest RSS of the process itself), in KiB."""
    total_peak = own_peak = 0
    while proc.poll() is None:
        tree, todo = [], [proc.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += _children(pid)
        sizes = [_rss_kib(p) for p in tree]
        total_peak = max(total_peak, sum(sizes))
        own_peak = max(own_peak, sizes[0])
        time.sleep(every)
    return total_peak, own_peak


def record(name: str, nodes: int, seconds: float, **extra: Any) -> None:
    """Keep one measurement for the summary."""
    RESULTS[name] = {"nodes": nodes, "seconds": round(seconds, 3),
                     "nodes_per_s": round(nodes / seconds), **extra}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("dualmem-bulk throughput (nodes/s, same run)")
    floor = RESULTS.get("io_floor", {}).get("nodes_per_s")
    rowwise = RESULTS.get("row_by_row", {}).get("nodes_per_s")
    for name, r in RESULTS.items():
        ratios = []
        if floor and name != "io_floor":
            ratios.append(f"{r['nodes_per_s'] / floor:.2f}x floor")
        if rowwise and name != "row_by_row":
            ratios.append(f"{r['nodes_per_s'] / rowwise:.1f}x row-by-row")
        extra = {k: v for k, v in r.items() if k not in ("nodes", "seconds", "nodes_per_s")}
        tr.write_line(f"{name:<24} {r['nodes']:>9,} nodes {r['seconds']:>8.2f} s "
                      f"{r['nodes_per_s']:>9,} nodes/s  {', '.join(ratios)} {extra or ''}")
    out = Path(__file__).with_name("last-run.json")
    out.write_text(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cpus, "
                               f"{platform.python_version()}", "results": RESULTS}, indent=2))


@pytest.fixture
def fresh(workdir: Path) -> Iterator[Path]:
    """A fresh output directory per benchmark round."""
    import shutil
    import uuid

    path = workdir / f"out-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
