"""Offline conversion against baselines measured in the same run.

- ``lance_floor``: the source read once, the Parquet snapshot and a Lance dataset of the same
  rows written with pyarrow and pylance alone (the tool's writer settings), both fsynced: the I/O
  a run that keeps a snapshot and writes a Lance target cannot avoid. The goal is 0.9x of it.
- ``io_floor_tool_settings``: pyarrow reads the source and writes one copy with the tool's
  Parquet settings (no fsync); ``io_floor``: the same with pyarrow's default settings.
- ``row_by_row``: the seed's design doing the same work as ``convert``, one dict per row
  (``benchmarks/rowwise.py``): validate, full checksum, snapshot + Lance target, verify; its
  target digest is checked against ``convert``'s for the same source.
- ``convert``: the whole ``run_offline`` (partitioned export, conversion, checksums, Lance
  target, verify), with the default workers (one per core), with two, and in one process.
- ``convert_cli_N``: ``dualmem-bulk convert`` in its own process on N nodes; peak RSS is the
  largest sum over the process tree (driver + workers), sampled every 20 ms (the proportional
  set size beside it counts the libraries the processes share once), and the serial fraction
  is the driver's CPU time over the whole tree's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import NODES, ROW_NODES, RSS_SIZES, generated, measured_cli, once, record
from rowwise import migrate_row_by_row

from dualmem_bulk._fs import fsync_path, fsync_tree
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.sources.scan import scan_source
from dualmem_bulk.stores import PARQUET_OPTIONS
from dualmem_bulk.stores.staging import lance_write_schema


def _copy(source: Path, out: Path, **options: Any) -> None:
    """Read ``source`` once and write it to ``out``."""
    with pq.ParquetFile(source) as reader, pq.ParquetWriter(out, reader.schema_arrow,
                                                            **options) as writer:
        for batch in reader.iter_batches(batch_size=16_384):
            writer.write_batch(batch)


def test_io_floor(benchmark: Any, source: Path, fresh: Path) -> None:
    record("io_floor", NODES, once(benchmark, lambda: _copy(source, fresh / "copy.parquet")))


def test_io_floor_tool_settings(benchmark: Any, source: Path, fresh: Path) -> None:
    record("io_floor_tool_settings", NODES, once(
        benchmark, lambda: _copy(source, fresh / "copy.parquet", **PARQUET_OPTIONS)))


def test_lance_floor(benchmark: Any, source: Path, fresh: Path) -> None:
    """The source read once; the snapshot (Parquet) and a Lance dataset of the same rows
    written, both fsynced; nothing validated, converted or hashed."""
    snapshot, target = fresh / "snapshot.parquet", fresh / "target.lance"

    def copy() -> None:
        with pq.ParquetFile(source) as reader, pq.ParquetWriter(
                snapshot, reader.schema_arrow, **PARQUET_OPTIONS) as snap:
            schema = lance_write_schema(reader.schema_arrow)

            def batches() -> Any:
                for batch in reader.iter_batches(batch_size=16_384):
                    snap.write_batch(batch)
                    yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)

            lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()),
                                str(target), schema=schema)
        fsync_path(snapshot)
        fsync_tree(target)

    record("lance_floor", NODES, once(benchmark, copy))


def test_row_by_row(benchmark: Any, row_source: Path, fresh: Path) -> None:
    digests: list[str] = []

    def run() -> None:
        digests.append(migrate_row_by_row(row_source, fresh / "snapshot.parquet",
                                          fresh / "rows.lance")[1])

    seconds = once(benchmark, run)
    assert digests[-1] == scan_source(row_source).snapshot_digest  # convert's, same source
    record("row_by_row", ROW_NODES, seconds, digest=digests[-1][:16])


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
    record(name, NODES, once(benchmark, run), phases_s=reports[-1].phases_s,
           digest=reports[-1].target_digest[:16])


@pytest.mark.parametrize("workers", [None, 0])
@pytest.mark.parametrize("nodes", RSS_SIZES)
def test_peak_rss(benchmark: Any, workdir: Path, fresh: Path, nodes: int, workers: int | None
                  ) -> None:
    """A whole ``dualmem-bulk convert`` in its own process tree: time and peak RSS."""
    src = generated(workdir, nodes)
    args = [sys.executable, "-m", "dualmem_bulk", "convert", str(src), str(fresh / "n.lance"),
            "--json", *([] if workers is None else ["--workers", str(workers)])]
    seconds, tree = measured_cli(benchmark, args)
    name = f"convert_cli_{nodes}" + ("" if workers is None else f"_{workers}_workers")
    record(name, nodes, seconds, peak_rss_mib=tree.peak_rss_kib // 1024,
           peak_pss_mib=tree.peak_pss_kib // 1024,
           driver_peak_rss_mib=tree.driver_peak_rss_kib // 1024,
           driver_cpu_s=round(tree.driver_cpu_s, 2), tree_cpu_s=round(tree.cpu_s, 2),
           serial_fraction=round(tree.driver_cpu_s / tree.cpu_s, 3) if tree.cpu_s else None)
    shutil.rmtree(fresh / "n.lance", ignore_errors=True)
