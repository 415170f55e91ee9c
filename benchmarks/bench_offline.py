"""Offline conversion against two baselines measured in the same run.

- ``io_floor``: pyarrow reads the same Parquet and writes the same bytes, no conversion; the
  least any converter that reads and writes Parquet-sized data must pay.
- ``row_by_row``: what the seed's design would do: one Python dict per row, uuid5, a BLAKE3 of a
  struct-packed encoding, rows collected and written at the end.
- ``convert``: the whole ``run_offline`` (snapshot, conversion, checksums, Lance target, verify).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from blake3 import blake3
from conftest import NODES, ROW_NODES, RSS_SIZES, generated, record

from dualmem_bulk.offline import OfflineConfig, run_offline

_NS = uuid.uuid5(uuid.NAMESPACE_URL, "engram:memory-id")


def _once(benchmark: Any, fn: Any) -> float:
    started = time.perf_counter()
    benchmark.pedantic(fn, rounds=1, iterations=1)
    return time.perf_counter() - started


def test_io_floor(benchmark: Any, source: Path, fresh: Path) -> None:
    def copy() -> None:
        with pq.ParquetFile(source) as reader, pq.ParquetWriter(
            fresh / "copy.parquet", reader.schema_arrow
        ) as writer:
            for batch in reader.iter_batches(batch_size=16_384):
                writer.write_batch(batch)

    record("io_floor", NODES, _once(benchmark, copy))


def _row_by_row(source: Path, out: Path) -> None:
    rows_out: list[dict[str, Any]] = []
    table = pq.read_table(source)
    for name in ("last_access", "created_at"):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 table[name].cast(pa.int64()))
    for row in table.to_pylist():
        ident = row["id"]
        try:
            node_id = uuid.UUID(ident).bytes if len(ident) == 36 else uuid.uuid5(_NS, ident).bytes
        except ValueError:
            node_id = uuid.uuid5(_NS, ident).bytes
        encoded = struct.pack("<I", len(ident.encode())) + ident.encode()
        encoded += struct.pack("<768f", *row["embedding"])
        encoded += struct.pack("<ff", row["activation"], row["confidence"])
        encoded += (row["content"] or "").encode()
        rows_out.append({
            "id": node_id, "node_type": "Episode", "episode_id": ident,
            "strength": row["activation"], "consolidation_score": 0.0,
            "embedding": row["embedding"], "activation": row["activation"],
            "confidence": row["confidence"], "content": row["content"],
            "checksum": blake3(encoded).digest(),
        })
    pq.write_table(pa.Table.from_pylist(rows_out), out / "rows.parquet")


def test_row_by_row(benchmark: Any, row_source: Path, fresh: Path) -> None:
    record("row_by_row", ROW_NODES, _once(benchmark, lambda: _row_by_row(row_source, fresh)))


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_convert(benchmark: Any, source: Path, fresh: Path, fmt: str) -> None:
    def run() -> None:
        run_offline(OfflineConfig(source=source, target=fresh / "nodes.out",
                                  target_format=fmt))  # type: ignore[arg-type]

    record(f"convert_{fmt}", NODES, _once(benchmark, run))


@pytest.mark.parametrize("nodes", RSS_SIZES)
def test_peak_rss(benchmark: Any, workdir: Path, fresh: Path, nodes: int) -> None:
    """Peak RSS of a whole ``dualmem-bulk convert`` run in its own process."""
    src = generated(workdir, nodes)
    args = ["dualmem-bulk", "convert", str(src), str(fresh / "n.lance"), "--json"]
    code = ("import resource, runpy, sys\n"
            f"sys.argv = {args!r}\n"
            "try:\n    runpy.run_module('dualmem_bulk', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    stderr: list[str] = []

    def run() -> None:
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True)
        stderr.append(done.stderr)

    seconds = _once(benchmark, run)
    peak_kib = int(stderr[-1].strip().splitlines()[-1])
    record(f"convert_cli_{nodes}", nodes, seconds, peak_rss_mib=round(peak_kib / 1024))
    shutil.rmtree(fresh / "n.lance", ignore_errors=True)
