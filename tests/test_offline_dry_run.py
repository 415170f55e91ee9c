"""``convert --dry-run`` estimates the bytes a run writes, and a Parquet source's snapshot keeps
the source's own bytes: the estimate counts the source files' sizes for them, not the sample's
copies scaled, so a source encoded unlike the sample (here: uncompressed, with long repetitive
content that the sample's Snappy shrinks) is not underestimated."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dualmem_bulk.generate import generate_batches
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.schema import LEGACY_SCHEMA

NODES = 24_000
TOLERANCE = 0.05
"""Estimate against the run's bytes: the journal, report and last partial partition do not
scale with the rows."""


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _source(path: Path, compression: str) -> Path:
    """Generated rows whose content is 2 KB of repeated text, in row groups of 4,000."""
    with pq.ParquetWriter(path, LEGACY_SCHEMA, compression=compression,
                          use_dictionary=False) as writer:
        for batch in generate_batches(NODES, 41, 4000):
            content = pa.array([f"memory {i} " * 200 for i in range(batch.num_rows)])
            i = batch.schema.get_field_index("content")
            writer.write_batch(batch.set_column(i, LEGACY_SCHEMA.field("content"), content))
    return path


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_the_estimate_is_within_tolerance_of_a_real_run(tmp_path: Path,
                                                        compression: str) -> None:
    src = _source(tmp_path / "memories.parquet", compression)
    target = tmp_path / "nodes.lance"
    dry = run_offline(OfflineConfig(source=src, target=target, dry_run=True, workers=0))
    assert dry.decision == "go" and not target.exists()
    estimate = dry.estimate
    assert estimate["kept_bytes"] == src.stat().st_size  # the copies are the source's bytes
    done = run_offline(OfflineConfig(source=src, target=target, workers=0))
    assert done.verified
    run_dir = target.with_name(target.name + ".run")
    actual_target, actual_run = _du(target), _du(run_dir)
    print(f"estimate vs run ({compression}): target {estimate['target_bytes']:,} vs "
          f"{actual_target:,}, run directory {estimate['run_dir_bytes']:,} vs {actual_run:,}, "
          f"{dry.estimated_s} s vs {done.elapsed_s} s")
    assert abs(estimate["target_bytes"] - actual_target) <= TOLERANCE * actual_target
    assert abs(estimate["run_dir_bytes"] - actual_run) <= TOLERANCE * actual_run
    total = actual_target + actual_run
    assert abs(dry.estimated_disk_bytes - total) <= TOLERANCE * total
