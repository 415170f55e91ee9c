"""Offline conversion against two baselines measured in the same run.

- ``io_floor``: pyarrow reads the same Parquet and writes the same bytes, no conversion; the
  least any converter that reads and writes Parquet-sized data must pay.
- ``io_floor_two_durable_copies``: the same read, two copies written and fsynced: the I/O a
  crash-safe run that keeps a snapshot cannot avoid (``io_floor`` leaves its bytes in the page
  cache, unsynced).
- ``row_by_row``: the seed's design doing the same work as ``convert``, one dict per row
  (``benchmarks/rowwise.py``): validate, full checksum, snapshot + Lance target, verify.
- ``convert``: the whole ``run_offline`` (snapshot, conversion, checksums, Lance target, verify),
  with the default workers (one per core but one), with two, and in one process.
- ``convert_cli_N``: ``dualmem-bulk convert`` in its own process on N nodes; peak RSS is the
  largest sum over the process tree (driver + workers), sampled every 20 ms.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import NODES, ROW_NODES, RSS_SIZES, generated, record, tree_peak_rss
from rowwise import migrate_row_by_row

from dualmem_bulk.offline import OfflineConfig, run_offline


def _once(benchmark: Any, fn: Any) -> float:
    started = time.perf_counter()
    benchmark.pedantic(fn, rounds=1, iterations=1)
    return time.perf_counter() - started


def _copy(source: Path, *outs: Path) -> None:
    """Read ``source`` once and write each batch to every file of ``outs``."""
    with pq.ParquetFile(source) as reader, contextlib.ExitStack() as stack:
        writers = [stack.enter_context(pq.ParquetWriter(out, reader.schema_arrow))
                   for out in outs]
        for batch in reader.iter_batches(batch_size=16_384):
            for writer in writers:
                writer.write_batch(batch)


def test_io_floor(benchmark: Any, source: Path, fresh: Path) -> None:
    record("io_floor", NODES, _once(benchmark, lambda: _copy(source, fresh / "copy.parquet")))


def test_io_floor_two_durable_copies(benchmark: Any, source: Path, fresh: Path) -> None:
    """The least I/O of any crash-safe run that keeps a snapshot: the source read once, two
    copies written and fsynced (the snapshot and the target), nothing converted or hashed."""
    outs = (fresh / "snapshot.parquet", fresh / "target.parquet")

    def copy() -> None:
        _copy(source, *outs)
        for out in outs:
            with out.open("rb") as written:
                os.fsync(written.fileno())

    record("io_floor_two_durable_copies", NODES, _once(benchmark, copy))


def test_row_by_row(benchmark: Any, row_source: Path, fresh: Path) -> None:
    def run() -> None:
        migrate_row_by_row(row_source, fresh / "snapshot.parquet", fresh / "rows.lance")

    record("row_by_row", ROW_NODES, _once(benchmark, run))


@pytest.mark.parametrize(("fmt", "workers"), [("lance", None), ("lance", 2), ("lance", 0),
                                              ("parquet", None)])
def test_convert(benchmark: Any, source: Path, fresh: Path, fmt: str, workers: int | None
                 ) -> None:
    reports = []

    def run() -> None:
        reports.append(run_offline(OfflineConfig(
            source=source, target=fresh / "nodes.out", target_format=fmt,  # type: ignore[arg-type]
            workers=workers)))

    name = f"convert_{fmt}" + ("" if workers is None else f"_{workers}_workers")
    record(name, NODES, _once(benchmark, run), phases_s=reports[-1].phases_s,
           digest=reports[-1].target_digest[:16])


@pytest.mark.parametrize("workers", [None, 0])
@pytest.mark.parametrize("nodes", RSS_SIZES)
def test_peak_rss(benchmark: Any, workdir: Path, fresh: Path, nodes: int, workers: int | None
                  ) -> None:
    """A whole ``dualmem-bulk convert`` in its own process tree: time and peak RSS."""
    src = generated(workdir, nodes)
    args = [sys.executable, "-m", "dualmem_bulk", "convert", str(src), str(fresh / "n.lance"),
            "--json", *([] if workers is None else ["--workers", str(workers)])]
    peaks: list[tuple[int, int]] = []

    def run() -> None:
        with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as proc:
            peaks.append(tree_peak_rss(proc))
            assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""

    seconds = _once(benchmark, run)
    total, driver = peaks[-1]
    name = f"convert_cli_{nodes}" + ("" if workers is None else f"_{workers}_workers")
    record(name, nodes, seconds, peak_rss_mib=total // 1024,
           driver_peak_rss_mib=driver // 1024)
    shutil.rmtree(fresh / "n.lance", ignore_errors=True)
