"""Worker processes: the same output whatever their number, and failures surfaced in order."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal, legacy_table

from dualmem_bulk import verify_run
from dualmem_bulk.engines.local import WorkerPool
from dualmem_bulk.errors import VerificationFailed
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.sources import plan_runs
from dualmem_bulk.stores import TargetStore


def _square_or_fail(n: int) -> int:
    if n == 3:
        raise ValueError("three")
    return n * n


def _pid(_n: int) -> int:
    return os.getpid()


def test_pool_yields_in_order_and_raises_in_place() -> None:
    with WorkerPool(2) as pool:
        out = pool.ordered(_square_or_fail, range(6))
        assert [next(out) for _ in range(3)] == [(0, 0), (1, 1), (2, 4)]
        with pytest.raises(ValueError, match="three"):
            next(out)
        pids = {pid for _n, pid in pool.ordered(_pid, range(8))}
        assert os.getpid() not in pids
        assert pool.submit(_square_or_fail, 5).result() == 25


def test_no_worker_runs_in_this_process_and_one_does_not() -> None:
    with WorkerPool(0) as pool:
        assert {pid for _n, pid in pool.ordered(_pid, range(3))} == {os.getpid()}
        failed = pool.submit(_square_or_fail, 3)
        assert isinstance(failed.exception(), ValueError)
    with WorkerPool(1) as pool:
        pids = {pid for _n, pid in pool.ordered(_pid, range(3))}
        assert len(pids) == 1 and os.getpid() not in pids
    with pytest.raises(ValueError):
        WorkerPool(-1)


def test_plan_runs_cover_every_group_once() -> None:
    assert plan_runs([5, 5, 5, 2], 1) == [(0, 1, 5), (1, 2, 5), (2, 3, 5), (3, 4, 2)]
    assert plan_runs([5, 5, 5, 2], 8) == [(0, 2, 10), (2, 4, 7)]
    assert plan_runs([5, 5, 5, 2], 100) == [(0, 4, 17)]
    assert plan_runs([], 1) == []


def _convert(src: Path, target: Path, fmt: str, workers: int) -> tuple[str, pa.Table]:
    report = run_offline(OfflineConfig(source=src, target=target, target_format=fmt,  # type: ignore[arg-type]
                                       batch_size=700, workers=workers))
    assert report.verified
    rows = pa.Table.from_batches(list(TargetStore(target).batches(1000)))
    return report.target_digest, rows


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_output_is_the_same_for_any_number_of_workers(tmp_path: Path, fmt: str,
                                                      sample_rows: list[dict[str, Any]]) -> None:
    rows = sample_rows + [{"id": f"m{i}", "content": f"c{i}"} for i in range(3000)]
    src = tmp_path / "src.parquet"
    pq.write_table(legacy_table(rows), src, row_group_size=1000)
    none = _convert(src, tmp_path / "none.out", fmt, 0)
    for workers in (1, 2):
        other = _convert(src, tmp_path / f"{workers}.out", fmt, workers)
        assert none[0] == other[0]
        assert_bit_equal(none[1], other[1])
    assert none[1].num_rows == len(rows)
    if fmt == "lance":  # one fragment (and one version) per partition: a source row group
        ds = lance.dataset(str(tmp_path / "2.out"))
        assert len(ds.get_fragments()) == -(-len(rows) // 1000)
        assert ds.version == len(ds.get_fragments())


def test_workers_find_a_changed_row(tmp_path: Path, sample_rows: list[dict[str, Any]]) -> None:
    rows = [{"id": f"m{i}"} for i in range(2000)]
    src = tmp_path / "src.parquet"
    pq.write_table(legacy_table(rows), src)
    target = tmp_path / "nodes.lance"
    run_offline(OfflineConfig(source=src, target=target, batch_size=500, workers=2))
    table = lance.dataset(str(target)).to_table()
    emb = table.column("embedding").combine_chunks()
    bits = np.frombuffer(emb.values.buffers()[1], dtype=np.uint32).copy()
    bits[1234 * 768] ^= 1  # one bit of row 1234's embedding
    changed = pa.FixedSizeListArray.from_arrays(pa.array(bits.view(np.float32)), 768)
    table = table.set_column(table.schema.get_field_index("embedding"),
                             table.schema.field("embedding"), changed)
    lance.write_dataset(table, str(target), mode="overwrite")
    run_dir = target.with_name("nodes.lance.run")
    with WorkerPool(2) as pool:
        report = verify_run(run_dir, pool=pool)
    assert not report.ok and report.mismatched == 1
    assert report.mismatches[0]["id"] == "m1234"
    own = verify_run(run_dir, workers=2)  # the library opens and closes its own pool
    assert own.mismatches == report.mismatches and own.read_back == report.read_back


def test_a_snapshot_part_unlike_the_written_rows_fails_verification(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition's task verifies its fragment against its snapshot part as read back from
    disk; a part that does not hold the rows the fragment was written from must fail the run.
    Here the snapshot writer changes one row's space (a field the row checksum leaves out)."""
    import dualmem_bulk.offline.partition_task as partition_task

    class Tampering(pq.ParquetWriter):  # type: ignore[misc]
        def write_batch(self, batch: pa.RecordBatch, *args: Any, **kwargs: Any) -> None:
            if batch.num_rows and batch.column("id")[0].as_py() == "m0":
                space = pa.array(["elsewhere", *batch.column("space").to_pylist()[1:]],
                                 batch.schema.field("space").type)
                batch = pa.RecordBatch.from_arrays(
                    [space if n == "space" else batch.column(n) for n in batch.schema.names],
                    schema=batch.schema)
            super().write_batch(batch, *args, **kwargs)

    monkeypatch.setattr(partition_task.pq, "ParquetWriter", Tampering)
    src = tmp_path / "src.parquet"
    pq.write_table(legacy_table([{"id": f"m{i}"} for i in range(2000)]), src)
    with pytest.raises(VerificationFailed):  # tasks in this process: the tampering applies
        run_offline(OfflineConfig(source=src, target=tmp_path / "nodes.lance", batch_size=500,
                                  workers=0))
    report = json.loads((tmp_path / "nodes.lance.run" / "report.json").read_text())
    assert report["status"] == "verify-failed"
    monkeypatch.undo()
    again = verify_run(tmp_path / "nodes.lance.run")  # re-reads everything: names the row
    assert not again.ok and {m["id"] for m in again.mismatches} == {"m0"}
