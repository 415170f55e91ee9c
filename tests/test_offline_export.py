"""The export phase (``dualmem_bulk.offline.export``) on real Parquet files: the snapshot holds the
valid rows with their checksums in bounded row groups and records its digest, rejected rows go to
the quarantine beside it with their codes (a duplicate found in a later chunk included), a strict
or refused export leaves nothing, and ``scan_source`` (``dualmem_bulk.sources.scan``) gives the
same digest writing nothing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal, legacy_table

from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.errors import InvalidRows, TargetExists, UsageError
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.offline.export import export_snapshot
from dualmem_bulk.schema import LEGACY_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.sources.scan import SAMPLE, scan_source

BATCH = 16
"""Rows per chunk in these tests: the 40 generated rows span three chunks."""


def _valid() -> pa.Table:
    return pa.Table.from_batches(list(generate_batches(40, seed=5, batch_size=40)))


def _source(tmp_path: Path) -> tuple[Path, pa.Table]:
    """40 valid rows, then (rows 40-42) a confidence out of range, an empty id and a repeat of
    row 0's id, in one Parquet file; and the valid rows alone."""
    valid = _valid()
    bad = legacy_table([{"id": "too-sure", "confidence": 3.0}, {"id": ""},
                        {"id": valid.column("id")[0].as_py()}])
    path = tmp_path / "memories.parquet"
    pq.write_table(pa.concat_tables([valid, bad]), path, row_group_size=BATCH)
    return path, valid


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_snapshot_holds_the_valid_rows_and_their_checksums(tmp_path: Path) -> None:
    source, valid = _source(tmp_path)
    snapshot = tmp_path / "out" / "snapshot.parquet"
    snapshot.parent.mkdir()
    report = export_snapshot(source, snapshot, batch_size=BATCH)
    assert report.status == "done" and report.source_kind == "parquet"
    assert (report.nodes_in, report.snapshot_rows, report.quarantined) == (43, 40, 3)
    written = pq.read_table(snapshot)
    assert written.schema.names == SNAPSHOT_SCHEMA.names
    assert_bit_equal(written.drop_columns(["checksum"]).cast(LEGACY_SCHEMA), valid)
    sums = row_checksums(valid)
    assert written.column("checksum").combine_chunks().equals(sums)
    meta = pq.read_metadata(snapshot)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [16, 16, 8]
    assert meta.metadata[b"dualmem.snapshot.rows"] == b"40"
    digest = TableDigest.of(sums).hex
    assert meta.metadata[b"dualmem.snapshot.digest"].decode() == report.snapshot_digest == digest


def test_rejected_rows_go_to_the_quarantine_beside_the_snapshot(tmp_path: Path) -> None:
    source, valid = _source(tmp_path)
    snapshot = tmp_path / "out" / "snapshot.parquet"
    snapshot.parent.mkdir()
    report = export_snapshot(source, snapshot, batch_size=BATCH)
    quarantine = tmp_path / "out" / "snapshot.quarantine.parquet"
    assert report.quarantine_path == str(quarantine)
    assert _listing(snapshot.parent) == ["snapshot.parquet", "snapshot.quarantine.parquet"]
    rows = pq.read_table(quarantine).to_pylist()
    first = valid.column("id")[0].as_py()
    assert [(r["row"], r["id"], r["reason_code"]) for r in rows] == [
        (40, "too-sure", "out_of_unit_range"), (41, "", "empty_id"), (42, first, "duplicate_id")]
    assert report.quarantine_codes == {"out_of_unit_range": 1, "empty_id": 1, "duplicate_id": 1}
    assert [s["id"] for s in report.quarantine_sample] == ["too-sure", "", first]


def test_a_clean_source_has_no_quarantine(tmp_path: Path) -> None:
    source = tmp_path / "clean.parquet"
    pq.write_table(_valid(), source)
    report = export_snapshot(source, tmp_path / "s.parquet", batch_size=BATCH)
    assert report.quarantined == 0 and report.quarantine_path is None
    assert _listing(tmp_path) == ["clean.parquet", "s.parquet"]


def test_strict_refuses_invalid_rows_and_leaves_nothing(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    with pytest.raises(InvalidRows) as refused:
        export_snapshot(source, tmp_path / "s.parquet", batch_size=BATCH, strict=True)
    assert f"first: {source} row 40: confidence" in str(refused.value)
    assert _listing(tmp_path) == ["memories.parquet"]


def test_an_existing_snapshot_is_refused_and_kept(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    snapshot = tmp_path / "s.parquet"
    snapshot.write_bytes(b"someone's file")
    with pytest.raises(TargetExists):
        export_snapshot(source, snapshot)
    assert snapshot.read_bytes() == b"someone's file"
    assert _listing(tmp_path) == ["memories.parquet", "s.parquet"]


def test_a_batch_size_below_one_names_the_field(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    with pytest.raises(UsageError) as refused:
        export_snapshot(source, tmp_path / "s.parquet", batch_size=0)
    assert refused.value.field == "batch_size"
    assert _listing(tmp_path) == ["memories.parquet"]


def test_scan_source_writes_nothing_and_gives_the_snapshot_digest(tmp_path: Path) -> None:
    source, valid = _source(tmp_path)
    scanned = scan_source(source, batch_size=BATCH)
    assert _listing(tmp_path) == ["memories.parquet"]
    assert scanned.snapshot_digest == TableDigest.of(row_checksums(valid)).hex
    assert (scanned.nodes_in, scanned.nodes_converted, scanned.quarantined) == (43, 40, 3)
    exported = export_snapshot(source, tmp_path / "s.parquet", batch_size=BATCH)
    assert exported.snapshot_digest == scanned.snapshot_digest


def test_the_report_samples_the_first_rejected_rows_counting_a_row_once_per_code(
        tmp_path: Path) -> None:
    """Every row here is out of range twice (confidence and activation): one code, once."""
    rows = [{"id": f"bad-{i}", "confidence": 2.0, "activation": -1.0} for i in range(SAMPLE + 5)]
    source = tmp_path / "bad.parquet"
    pq.write_table(legacy_table(rows), source)
    report = export_snapshot(source, tmp_path / "s.parquet", batch_size=BATCH)
    assert report.quarantined == SAMPLE + 5 and report.snapshot_rows == 0
    assert report.quarantine_codes == {"out_of_unit_range": SAMPLE + 5}
    assert [s["id"] for s in report.quarantine_sample] == [f"bad-{i}" for i in range(SAMPLE)]
    assert pq.read_table(tmp_path / "s.quarantine.parquet").num_rows == SAMPLE + 5
