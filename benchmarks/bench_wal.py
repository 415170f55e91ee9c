"""Engram WAL decode against a Parquet read of the same memories, measured in the same run.

- ``wal_generate``: ``generate --format engram-wal`` of ``NODES`` episodes (the session fixture).
- ``wal_decode``: iterate ``read_engram_wal(root, batch_size)``: pass 1 reads, checks and
  decodes every record into the replay index, pass 2 decodes the winners into Arrow batches.
- ``wal_parquet_read``: pyarrow reads the Parquet file of the same memories into Arrow batches
  of the same size (the baseline: what reading these nodes costs from a columnar file).
- ``wal_convert_lance``: the whole ``run_offline`` from the data root to a verified Lance target;
  ``wal_parquet_convert_lance``: the same run from the Parquet file of the same memories.
- ``wal_index_N_workers``: pass 1 alone (the replay index) with its file scans on N started
  worker processes (0: in this process): CPU seconds of this process, the driver, against those
  of the workers (from /proc), and the driver's share. CPU time, not wall-clock: the machine is
  shared.
- ``wal_convert_cli_N_workers``: ``dualmem-bulk convert`` of the data root in its own process
  tree: the driver's CPU seconds over the whole tree's (the serial fraction), as
  ``bench_offline.py`` measures it for Parquet.

Both inputs were just written, so both are read from the page cache.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import NODES, _children, _cpu_s, measured_cli, once, record

from dualmem_bulk.engines.local import WorkerPool
from dualmem_bulk.generate import generate_wal_batches, write_generated
from dualmem_bulk.offline.run import DEFAULT_BATCH_SIZE, OfflineConfig, run_offline
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources._wal_scan import WalFileScan, scan_wal_file
from dualmem_bulk.sources.engram_wal import read_engram_wal


@pytest.fixture(scope="session")
def wal_data(workdir: Path) -> tuple[Path, Path]:
    """A generated data root of ``NODES`` episodes (seed 7) and the same memories as Parquet."""
    root, parquet = workdir / f"engram-data-{NODES}", workdir / f"wal-memories-{NODES}.parquet"
    started = time.perf_counter()
    write_generated(root, NODES, seed=7, fmt="engram-wal")
    record("wal_generate", NODES, time.perf_counter() - started,
           wal_mib=round(sum(p.stat().st_size for p in root.rglob("*.log")) / 2**20))
    with pq.ParquetWriter(parquet, LEGACY_SCHEMA, use_dictionary=False) as writer:
        for batch in generate_wal_batches(NODES, seed=7):
            writer.write_batch(batch)
    return root, parquet


def test_wal_decode(benchmark: Any, wal_data: tuple[Path, Path]) -> None:
    root, _ = wal_data
    rows: list[int] = []
    index_s: list[float] = []

    def decode() -> None:
        started = time.perf_counter()
        source = read_engram_wal(root, DEFAULT_BATCH_SIZE)
        index_s.append(time.perf_counter() - started)
        rows.append(sum(b.batch.num_rows for b in source))

    seconds = once(benchmark, decode)
    assert rows == [NODES]
    record("wal_decode", NODES, seconds, pass1_s=round(index_s[0], 3))


def test_wal_parquet_read(benchmark: Any, wal_data: tuple[Path, Path]) -> None:
    _, parquet = wal_data
    rows: list[int] = []

    def read() -> None:
        with pq.ParquetFile(parquet) as reader:
            rows.append(sum(b.num_rows for b in reader.iter_batches(DEFAULT_BATCH_SIZE)))

    seconds = once(benchmark, read)
    assert rows == [NODES]
    record("wal_parquet_read", NODES, seconds)


@pytest.mark.parametrize("kind", ["wal", "wal_parquet"])
def test_wal_convert(benchmark: Any, wal_data: tuple[Path, Path], fresh: Path,
                     kind: str) -> None:
    source = wal_data[0] if kind == "wal" else wal_data[1]
    reports = []

    def run() -> None:
        reports.append(run_offline(OfflineConfig(source=source, target=fresh / "nodes.lance")))

    seconds = once(benchmark, run)
    [report] = reports
    assert report.verified and report.nodes_converted == NODES
    record(f"{kind}_convert_lance", NODES, seconds)


@pytest.mark.parametrize("workers", [0, 2])
def test_wal_index_driver_cpu(benchmark: Any, wal_data: tuple[Path, Path], workers: int) -> None:
    """Pass 1 on started workers: the driver's CPU (merge and replay) against the workers'."""
    root, _ = wal_data
    usage: list[tuple[float, float]] = []
    with WorkerPool(workers) as pool:
        first = WalFileScan("default", min(root.rglob("wal-*.log")), 0)
        for warm in [pool.submit(scan_wal_file, first) for _ in range(workers)]:
            warm.result()  # every worker started, its imports done, idle before the clock

        def index() -> None:
            kids = _children(os.getpid())
            before = {pid: _cpu_s(pid) for pid in kids}
            started = time.process_time()
            source = read_engram_wal(root, DEFAULT_BATCH_SIZE, pool=pool if workers else None)
            driver = time.process_time() - started
            usage.append((driver, sum(_cpu_s(pid) - cpu for pid, cpu in before.items())))
            assert source.memories == NODES

        seconds = once(benchmark, index)
    driver, tasks = usage[-1]
    record(f"wal_index_{workers}_workers", NODES, seconds, driver_cpu_s=round(driver, 2),
           workers_cpu_s=round(tasks, 2), serial_fraction=round(driver / (driver + tasks), 3))


@pytest.mark.parametrize("workers", [0, 2])
def test_wal_convert_cli(benchmark: Any, wal_data: tuple[Path, Path], fresh: Path,
                         workers: int) -> None:
    """A whole ``dualmem-bulk convert`` of the data root: the driver's share of the CPU."""
    args = [sys.executable, "-m", "dualmem_bulk", "convert", str(wal_data[0]),
            str(fresh / "n.lance"), "--json", "--workers", str(workers)]
    seconds, tree = measured_cli(benchmark, args)
    record(f"wal_convert_cli_{workers}_workers", NODES, seconds,
           driver_cpu_s=round(tree.driver_cpu_s, 2), tree_cpu_s=round(tree.cpu_s, 2),
           serial_fraction=round(tree.driver_cpu_s / tree.cpu_s, 3) if tree.cpu_s else None,
           peak_rss_mib=tree.peak_rss_kib // 1024)
