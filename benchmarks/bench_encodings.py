"""Encodings and knobs behind the defaults, measured on the same generated nodes.

- ``parquet_<codec>[_dict]``: write + read of the snapshot (legacy schema + checksum) with each
  codec, with and without dictionaries; file size in the record.
- ``parquet_binary_embedding``: the embedding stored as fixed_size_binary(3072) instead of
  fixed_size_list<float32, 768> (no repetition levels to encode and decode).
- ``lance_default`` / ``lance_uncompressed``: a Lance write + read of the converted nodes with
  Lance's default encodings and with the ones chosen (``lance_write_schema``).
- ``batch_<n>``: the whole ``run_offline`` at each batch size; every run must give one digest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import NODES, record

from dualmem_bulk.checksum import row_checksums
from dualmem_bulk.convert import to_dual
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.stores.staging import lance_write_schema, unsliced

SAMPLE = min(NODES, 50_000)
DIGESTS: set[str] = set()


@pytest.fixture(scope="module")
def snapshot_batches(source: Path) -> list[pa.RecordBatch]:
    handle = pq.ParquetFile(source)
    out: list[pa.RecordBatch] = []
    for batch in handle.iter_batches(batch_size=16_384, columns=LEGACY_SCHEMA.names):
        legacy = pa.RecordBatch.from_arrays(batch.columns, schema=LEGACY_SCHEMA)
        out.append(legacy.append_column(SNAPSHOT_SCHEMA.field("checksum"),
                                        row_checksums(legacy)))
        if sum(b.num_rows for b in out) >= SAMPLE:
            break
    return out


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file())


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _parquet_round_trip(benchmark: Any, name: str, batches: list[pa.RecordBatch],
                        path: Path, **options: Any) -> None:
    schema = batches[0].schema

    def write() -> None:
        with pq.ParquetWriter(path, schema, **options) as writer:
            for batch in batches:
                writer.write_batch(batch)

    def read() -> None:
        for _batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(
                batch_size=16_384, use_threads=False):
            pass

    written = _timed(lambda: benchmark.pedantic(write, rounds=1, iterations=1))
    rows = sum(b.num_rows for b in batches)
    record(name, rows, written + _timed(read), write_s=round(written, 3),
           size_mb=round(_size(path) / 1e6, 1))


@pytest.mark.parametrize("codec", ["none", "snappy", "zstd"])
@pytest.mark.parametrize("dictionary", [False, True])
def test_parquet_codec(benchmark: Any, snapshot_batches: list[pa.RecordBatch], fresh: Path,
                       codec: str, dictionary: bool) -> None:
    _parquet_round_trip(benchmark, f"parquet_{codec}" + ("_dict" if dictionary else ""),
                        snapshot_batches, fresh / "s.parquet", compression=codec,
                        use_dictionary=dictionary, write_statistics=False)


def test_parquet_binary_embedding(benchmark: Any, snapshot_batches: list[pa.RecordBatch],
                                  fresh: Path) -> None:
    def as_binary(batch: pa.RecordBatch) -> pa.RecordBatch:
        emb = batch.column("embedding")
        raw = pa.FixedSizeBinaryArray.from_buffers(pa.binary(3072), len(emb),
                                                   [None, emb.values.buffers()[1]])
        i = batch.schema.get_field_index("embedding")
        return batch.set_column(i, pa.field("embedding", pa.binary(3072)), raw)

    _parquet_round_trip(benchmark, "parquet_binary_embedding",
                        [as_binary(b) for b in snapshot_batches], fresh / "b.parquet",
                        compression="none", use_dictionary=False, write_statistics=False)


@pytest.mark.parametrize("chosen", [False, True])
def test_lance_encoding(benchmark: Any, snapshot_batches: list[pa.RecordBatch], fresh: Path,
                        chosen: bool) -> None:
    schema = lance_write_schema(DUAL_SCHEMA) if chosen else DUAL_SCHEMA
    duals = [pa.RecordBatch.from_arrays(
        unsliced(to_dual(pa.RecordBatch.from_arrays(b.columns[:-1], schema=LEGACY_SCHEMA),
                         b.column("checksum"))).columns, schema=schema)
        for b in snapshot_batches]
    path = fresh / "n.lance"

    def write() -> None:
        for i, batch in enumerate(duals):
            lance.write_dataset(pa.RecordBatchReader.from_batches(schema, [batch]), str(path),
                                schema=schema, mode="append" if i else "create")

    def read() -> None:
        for _batch in lance.dataset(str(path)).to_batches(batch_size=4096):
            pass

    written = _timed(lambda: benchmark.pedantic(write, rounds=1, iterations=1))
    rows = sum(b.num_rows for b in duals)
    record("lance_" + ("uncompressed" if chosen else "default"), rows, written + _timed(read),
           write_s=round(written, 3), size_mb=round(_size(path) / 1e6, 1))


@pytest.mark.parametrize("batch_size", [4_096, 16_384, 65_536])
def test_batch_size(benchmark: Any, source: Path, fresh: Path, batch_size: int) -> None:
    reports = []

    def run() -> None:
        reports.append(run_offline(OfflineConfig(source=source, target=fresh / "n.lance",
                                                 batch_size=batch_size)))

    seconds = _timed(lambda: benchmark.pedantic(run, rounds=1, iterations=1))
    DIGESTS.add(reports[-1].target_digest)
    assert len(DIGESTS) == 1, "the batch size changed the output"
    record(f"batch_{batch_size}", NODES, seconds, phases_s=reports[-1].phases_s)
