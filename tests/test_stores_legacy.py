"""The legacy store written back from a run's snapshot (``dualmem_bulk.stores.legacy``), as
rollback rebuilds it: the snapshot's rows exactly, as a new Parquet directory (never over an
existing path) or as a new version of a Lance dataset (earlier versions kept), with the
snapshot's digest; and a legacy store's digest through the export's validation
(``dualmem_bulk.sources.scan``)."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal, legacy_table

from dualmem_bulk.errors import SourceError
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.offline.export import export_snapshot
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources.scan import legacy_digest
from dualmem_bulk.stores.legacy import write_legacy


def _exported(tmp_path: Path) -> tuple[Path, pa.Table, str]:
    """A source of 60 valid rows and 2 invalid ones exported: the snapshot, the valid rows and
    the snapshot's digest."""
    valid = pa.Table.from_batches(list(generate_batches(60, seed=29, batch_size=60)))
    bad = legacy_table([{"id": ""}, {"id": "too-sure", "confidence": 2.0}]).cast(LEGACY_SCHEMA)
    source = tmp_path / "m.parquet"
    pq.write_table(pa.concat_tables([valid, bad]), source)
    snapshot = tmp_path / "snapshot.parquet"
    digest = export_snapshot(source, snapshot, batch_size=16).snapshot_digest
    assert digest is not None
    return snapshot, valid, digest


def test_a_parquet_store_is_rebuilt_with_the_snapshots_rows(tmp_path: Path) -> None:
    snapshot, valid, digest = _exported(tmp_path)
    store = tmp_path / "store"
    write_legacy(snapshot, store, "parquet", batch_size=16)
    assert_bit_equal(pq.read_table(store).cast(LEGACY_SCHEMA), valid)
    scan = legacy_digest(store)
    assert scan.digest.hex == digest and scan.digest.rows == 60 and scan.quarantined == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.parquet", "snapshot.parquet", "snapshot.quarantine.parquet", "store"]  # no temporary


def test_an_existing_path_is_never_written_over(tmp_path: Path) -> None:
    snapshot, _valid, _digest = _exported(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    (store / "kept.parquet").write_bytes(b"someone's")
    with pytest.raises(FileExistsError):
        write_legacy(snapshot, store, "parquet")
    assert [p.name for p in store.iterdir()] == ["kept.parquet"]


def test_a_lance_store_gets_a_new_version_and_keeps_the_old(tmp_path: Path) -> None:
    snapshot, valid, digest = _exported(tmp_path)
    store = tmp_path / "store.lance"
    write_legacy(snapshot, store, "lance", batch_size=16)
    assert lance.dataset(str(store)).version == 1
    write_legacy(snapshot, store, "lance")
    ds = lance.dataset(str(store))
    assert ds.version == 2 and lance.dataset(str(store), version=1).count_rows() == 60
    assert_bit_equal(ds.to_table(), valid)
    assert legacy_digest(store).digest.hex == digest


def test_the_source_digest_leaves_invalid_rows_out(tmp_path: Path) -> None:
    _snapshot, _valid, digest = _exported(tmp_path)
    scan = legacy_digest(tmp_path / "m.parquet")
    assert scan.digest.hex == digest and scan.quarantined == 2


def test_an_unreadable_snapshot_is_named(tmp_path: Path) -> None:
    damaged = tmp_path / "snapshot.parquet"
    damaged.write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match="not a readable snapshot"):
        write_legacy(damaged, tmp_path / "store", "parquet")
    assert not (tmp_path / "store").exists()
