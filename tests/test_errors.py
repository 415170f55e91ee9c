"""The error tree crosses process boundaries intact: a worker's error is the driver's."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dualmem_bulk.errors import (
    DualmemError,
    InvalidRows,
    RunChanged,
    RunLocked,
    SchemaMismatch,
    SourceDamaged,
    SourceError,
    TargetExists,
    UsageError,
)

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"


@pytest.mark.parametrize("error", [
    SourceError("/data/a.parquet", "truncated"),
    SchemaMismatch("/data/a.parquet", "embedding", "list<float>", "string"),
    InvalidRows(3, "/data/a.parquet row 7: embedding has 767 values"),
    SourceDamaged(["wal/a.log offset 12: bad CRC"]),
    TargetExists("/data/t.lance"),
    RunChanged("/data/t.lance.run", "the source changed"),
    RunLocked("/data/t.lance.run", {"pid": 7, "host": "h", "started": "now"}),
    UsageError("workers must be at least 0, got -1", "workers"),
], ids=lambda e: type(e).__name__)
def test_every_error_pickles_as_itself(error: DualmemError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back.__dict__ == error.__dict__
    assert back.exit_code == error.exit_code


def test_an_invalid_row_found_by_a_worker_is_exit_3_not_a_dead_worker(tmp_path: Path) -> None:
    """``--strict`` with the invalid rows in the last of 7 partitions, two worker processes:
    the worker's InvalidRows reaches the CLI (it used to fail to unpickle, which the pool
    reported as a dead worker: exit 4, 'run again to resume')."""
    bad = pq.read_table(FIXTURES / "invalid.parquet")
    good = pq.read_table(FIXTURES / "clean.parquet").cast(bad.schema)
    source = tmp_path / "strict.parquet"
    pq.write_table(pa.concat_tables([good, bad]), source, row_group_size=10)
    target = tmp_path / "nodes.lance"
    done = subprocess.run(
        [sys.executable, "-m", "dualmem_bulk", "convert", str(source), str(target), "--strict",
         "--workers", "2", "--batch-size", "10", "--json"],
        capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 3, done.stderr
    assert report["error_type"] == "InvalidRows"
    assert f"{source} row 41:" in report["error"]  # the first invalid row, named by the worker
    assert not target.exists()
