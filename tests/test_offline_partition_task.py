"""One partition's task (``dualmem_bulk.offline.partition_task``) run by hand on a real Parquet
source: it writes its snapshot and quarantine parts under its unit's name and its fragment into
the staging store (not committed), verifies the fragment from disk, reports the rows' UUIDs and
origins; rows the driver found in earlier parts are rejected as duplicates naming the first; a
strict task refuses an invalid row and leaves no part behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal, legacy_table

from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import node_uuids, to_legacy
from dualmem_bulk.errors import InvalidRows
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.offline.partition_task import PartitionTask, _runs, export_partition
from dualmem_bulk.rundir.files import QUARANTINE, SNAPSHOT
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA
from dualmem_bulk.sources.detect import open_source
from dualmem_bulk.stores import TargetFormat
from dualmem_bulk.stores.staging import staged_writer


def _source(tmp_path: Path) -> tuple[Path, pa.Table]:
    """Row groups of 20: rows 0-19, then 20-39 where row 25 is invalid, then 40-59."""
    rows = pa.Table.from_batches(list(generate_batches(60, seed=31, batch_size=60)))
    bad = legacy_table([{"id": "too-sure", "confidence": 4.0}]).cast(LEGACY_SCHEMA)
    table = pa.concat_tables([rows.slice(0, 25), bad, rows.slice(26)])
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=20)
    return path, table


def _task(tmp_path: Path, source: Path, fmt: TargetFormat = "lance", strict: bool = False,
          drop: tuple[tuple[int, str | None], ...] = ()) -> PartitionTask:
    """Unit 1: the source's second row group (rows 20-39), in chunks of 8 rows."""
    part = open_source(source).partitions(20)[1]
    run_dir = tmp_path / "n.run"
    run_dir.mkdir(exist_ok=True)
    return PartitionTask(unit=1, part=part, run_dir=run_dir, target_format=fmt,
                         target=tmp_path / f".n.{fmt}", chunk=8, strict=strict, drop=drop)


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_a_task_writes_its_parts_and_a_verified_fragment(tmp_path: Path,
                                                         fmt: TargetFormat) -> None:
    source, table = _source(tmp_path)
    task = _task(tmp_path, source, fmt)
    done = export_partition(task)
    valid = pa.concat_tables([table.slice(20, 5), table.slice(26, 14)])
    assert (done.unit, done.nodes_in, done.rows, done.quarantined) == (1, 20, 19, 1)
    assert done.reasons == {"out_of_unit_range": 1} and done.sample[0]["row"] == 25
    snapshot = pq.read_table(task.run_dir / SNAPSHOT / "part-000001.parquet")
    assert_bit_equal(snapshot.drop_columns(["checksum"]).cast(LEGACY_SCHEMA), valid)
    sums = row_checksums(valid)
    assert snapshot.column("checksum").combine_chunks().equals(sums)
    assert done.digest == TableDigest.of(sums).hex and done.groups == 3  # chunks of 8
    quarantine = pq.read_table(task.run_dir / QUARANTINE / "part-000001.parquet").to_pylist()
    assert [(r["row"], r["id"]) for r in quarantine] == [(25, "too-sure")]
    assert not (task.target / "_versions").exists()  # written, not committed
    fragment = staged_writer(fmt, task.target, DUAL_SCHEMA).read(done.written, 7)
    assert [i for b in fragment for i in to_legacy(b).column("id").to_pylist()] == valid.column(
        "id").to_pylist()
    assert done.verdict.rows == 19 and done.verdict.problems == [] and done.verdict.aligned
    assert done.uuids.equals(node_uuids(valid.column("id").combine_chunks()))
    assert done.stats()["origins"] == {"files": [str(source)], "runs": [[20, 5], [26, 14]]}


def test_rows_found_in_earlier_parts_are_rejected_naming_the_first(tmp_path: Path) -> None:
    source, _table = _source(tmp_path)
    done = export_partition(_task(tmp_path, source, drop=((0, f"{source} row 3"),
                                                          (10, None))))
    assert done.rows == 17 and done.quarantined == 3
    quarantine = pq.read_table(tmp_path / "n.run" / QUARANTINE / "part-000001.parquet")
    rows = {r["row"]: r["reason"] for r in quarantine.to_pylist()}
    assert sorted(rows) == [20, 25, 31]  # the part's valid rows 0 and 10 (the second chunk's)
    assert rows[20].startswith("duplicate id") and rows[20].endswith(f"first at {source} row 3")
    assert rows[31].startswith("duplicate id") and "first at" not in rows[31]
    assert done.stats()["origins"]["runs"] == [[21, 4], [26, 5], [32, 8]]


def test_a_strict_task_refuses_and_leaves_no_part(tmp_path: Path) -> None:
    source, _table = _source(tmp_path)
    task = _task(tmp_path, source, strict=True)
    with pytest.raises(InvalidRows) as refused:
        export_partition(task)
    assert f"first: {source} row 25: confidence is 4.0" in str(refused.value)
    assert list((task.run_dir / SNAPSHOT).iterdir()) == []
    assert not (task.run_dir / QUARANTINE).exists()


def test_origins_are_runs_of_consecutive_rows() -> None:
    assert _runs(np.array([0, 1, 2, 5, 6, 9])) == [[0, 3], [5, 2], [9, 1]]
    assert _runs(np.array([], dtype=np.int64)) == []
