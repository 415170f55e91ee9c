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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dualmem_bulk.generate import write_generated

NODES = int(os.environ.get("BENCH_NODES", "200000"))
ROW_NODES = int(os.environ.get("BENCH_ROW_NODES", "20000"))
ONLINE_NODES = int(os.environ.get("BENCH_ONLINE_NODES", "100000"))
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


def _kib(path: str, key: str) -> int:
    """A ``key: N kB`` line of a /proc file (0 once the process is gone)."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kib(pid: int) -> int:
    return _kib(f"/proc/{pid}/status", "VmRSS:")


def _pss_kib(pid: int) -> int:
    """Proportional set size: each shared page (the libraries every worker maps) counted once
    over the processes sharing it, where RSS counts it in each."""
    return _kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as kids:
            return [int(k) for k in kids.read().split()]
    except OSError:
        return []


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class TreeUsage:
    """What a process tree used: peak RSS (of the tree, of the root) and CPU time."""

    peak_rss_kib: int = 0
    peak_pss_kib: int = 0
    driver_peak_rss_kib: int = 0
    driver_cpu_s: float = 0.0
    cpu_s: float = 0.0
    """CPU of the whole tree: the last reading of every process seen."""


def tree_usage(proc: subprocess.Popen[str], every: float = 0.02) -> TreeUsage:
    """Sample a running process and its descendants until it exits: the largest sum of their
    RSS, the root's largest RSS, and the CPU time of the root and of the whole tree (each
    process's last reading before it ended; the serial fraction is driver / tree)."""
    usage = TreeUsage()
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        tree, todo = [], [proc.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += _children(pid)
        sizes = [_rss_kib(p) for p in tree]
        usage.peak_rss_kib = max(usage.peak_rss_kib, sum(sizes))
        usage.peak_pss_kib = max(usage.peak_pss_kib, sum(_pss_kib(p) for p in tree))
        usage.driver_peak_rss_kib = max(usage.driver_peak_rss_kib, sizes[0])
        for pid in tree:
            cpu[pid] = max(cpu.get(pid, 0.0), _cpu_s(pid))
        time.sleep(every)
    usage.driver_cpu_s = cpu.get(proc.pid, 0.0)
    usage.cpu_s = sum(cpu.values())
    return usage


def once(benchmark: Any, fn: Any) -> float:
    """Run ``fn`` once under pytest-benchmark; its wall time."""
    started = time.perf_counter()
    benchmark.pedantic(fn, rounds=1, iterations=1)
    return time.perf_counter() - started


def measured_cli(benchmark: Any, args: list[str]) -> tuple[float, TreeUsage]:
    """Run a command once in its own process tree (it must exit 0): wall time and usage."""
    usage: list[TreeUsage] = []

    def run() -> None:
        with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as proc:
            usage.append(tree_usage(proc))
            assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""

    seconds = once(benchmark, run)
    return seconds, usage[-1]


def record(name: str, nodes: int, seconds: float, **extra: Any) -> None:
    """Keep one measurement for the summary."""
    RESULTS[name] = {"nodes": nodes, "seconds": round(seconds, 3),
                     "nodes_per_s": round(nodes / seconds), **extra}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("dualmem-bulk throughput (nodes/s, same run)")
    floor = RESULTS.get("lance_floor", {}).get("nodes_per_s")
    rowwise = RESULTS.get("row_by_row", {}).get("nodes_per_s")
    for name, r in RESULTS.items():
        ratios = []
        if floor and name != "lance_floor":
            ratios.append(f"{r['nodes_per_s'] / floor:.2f}x Lance floor")
        if rowwise and name != "row_by_row":
            ratios.append(f"{r['nodes_per_s'] / rowwise:.1f}x row-by-row")
        extra = {k: v for k, v in r.items() if k not in ("nodes", "seconds", "nodes_per_s")}
        tr.write_line(f"{name:<24} {r['nodes']:>9,} nodes {r['seconds']:>8.2f} s "
                      f"{r['nodes_per_s']:>9,} nodes/s  {', '.join(ratios)} {extra or ''}")
    out = Path(__file__).with_name("last-run.json")
    out.write_text(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cpus, "
                               f"{platform.python_version()}", "results": RESULTS}, indent=2))


@pytest.fixture(scope="module")
def store(workdir: Path) -> Path:
    """A MemoryStore of ``BENCH_ONLINE_NODES`` generated memories, built once."""
    from dualmem_bulk import MemoryStore
    from dualmem_bulk.generate import generate_batches

    path = workdir / f"online-{ONLINE_NODES}.sqlite"
    if not path.exists():
        with MemoryStore(path) as built:
            for batch in generate_batches(ONLINE_NODES, 7, 20_000):
                built.store_batch(batch)
            built.trim_changes(built.change_position())
    return path


@pytest.fixture
def fresh(workdir: Path) -> Iterator[Path]:
    """A fresh output directory per benchmark round."""
    import shutil
    import uuid

    path = workdir / f"out-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
