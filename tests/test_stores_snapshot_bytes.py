"""A Parquet source's own bytes kept as the snapshot (issue 13, item 4): one copy of each
source file in the snapshot directory plus a sidecar per part. Rollback's check and rebuild,
``verify`` and ``inspect`` read the same rows as a re-encoded snapshot would hold, whatever the
source's looser types; the copy outlives changes to the source and survives a killed run."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal, kill_after_units, legacy_table, read_snapshot

from dualmem_bulk import rollback_run
from dualmem_bulk.errors import VerificationFailed
from dualmem_bulk.generate import write_generated
from dualmem_bulk.offline.export import export_snapshot
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.schema import LEGACY_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.stores.legacy import write_legacy
from dualmem_bulk.stores.snapshot_bytes import copy_part, prepare_copy

_NS_MAX_US = (1 << 63) // 1000
"""Past this many microseconds a timestamp has no nanosecond value: the row is invalid."""


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def _loose(tmp_path: Path) -> Path:
    """Row groups of 10 in looser types than the legacy schema (microsecond timestamps,
    large_string text, list embeddings); ids repeated within and across groups; invalid rows,
    one of them a timestamp no nanosecond type holds."""
    rows: list[dict[str, Any]] = []
    for i in range(95):
        rows.append({"id": f"m{i % 37}", "content": f"row {i} é", "access_count": i,
                     "last_access": i * 1_000_000_007_000, "embedding_bits": [i] * 768})
        if i % 11 == 0:
            rows.append({"id": f"m{i % 37}", "confidence": 2.0})  # invalid, not a duplicate
    table = legacy_table(rows)
    last = table.column("last_access").cast(pa.int64()).to_numpy() // 1000
    last[10] = _NS_MAX_US + 5  # m9's first row: out of the nanosecond range, so i = 46 wins
    loose = {name: table.column(name) for name in LEGACY_SCHEMA.names}
    loose["last_access"] = pa.array(last, pa.timestamp("us", tz="UTC"))
    loose["created_at"] = table.column("created_at").cast(pa.timestamp("us", tz="UTC"))
    loose["id"] = table.column("id").cast(pa.large_string())
    loose["content"] = table.column("content").cast(pa.large_string())
    loose["embedding"] = table.column("embedding").cast(pa.list_(pa.float32()))
    src = tmp_path / "loose.parquet"
    pq.write_table(pa.table(loose), src, row_group_size=10)
    return src


def _serial(src: Path, tmp_path: Path) -> pa.Table:
    """What the serial export re-encodes as the snapshot."""
    out = tmp_path / "serial.parquet"
    export_snapshot(src, out, batch_size=4096)
    return pq.read_table(out).cast(SNAPSHOT_SCHEMA)


def _kept_bytes(snapshot: Path) -> list[dict[bytes, bytes]]:
    """The snapshot is the source's bytes: one copy and sidecars naming it (no row's fields
    re-encoded); each part's metadata."""
    assert sorted(p.name for p in snapshot.glob("source-*")) == ["source-0000.parquet"]
    parts = sorted(snapshot.glob("part-*.parquet"))
    metas = [pq.ParquetFile(p).metadata.metadata for p in parts]
    for part, meta in zip(parts, metas, strict=True):
        assert meta[b"dualmem.snapshot.format"] == b"2"
        assert meta[b"dualmem.snapshot.copy"] == b"source-0000.parquet"
        assert pq.read_schema(part).names == ["row", "space", "id", "checksum", "episode"]
    return metas


def test_rollback_from_kept_bytes_restores_exactly(tmp_path: Path) -> None:
    src = _loose(tmp_path)
    serial = _serial(src, tmp_path)
    target, run_dir = tmp_path / "nodes.lance", tmp_path / "nodes.lance.run"
    done = cli("convert", src, target, "--batch-size", "10", "--json")
    assert done.returncode == 0, done.stderr
    report = as_json(done)
    snapshot = run_dir / "snapshot.parquet"
    assert len(_kept_bytes(snapshot)) == 11  # 104 rows, row groups of 10
    assert serial.num_rows == 37 and report["quarantined"] == 104 - 37
    quarantine = pq.read_table(run_dir / "quarantine.parquet").column("reason").to_pylist()
    assert sum("duplicate id" in r for r in quarantine) == 95 - 1 - 37
    assert_bit_equal(read_snapshot(snapshot), serial)
    rebuilt = tmp_path / "rebuilt"
    write_legacy(snapshot, rebuilt, "parquet")  # what an in-place rollback would rebuild
    assert_bit_equal(pq.read_table(rebuilt).cast(LEGACY_SCHEMA),
                     serial.select(LEGACY_SCHEMA.names))

    checked = cli("verify", run_dir, "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    described = as_json(cli("inspect", snapshot, "--json"))
    assert (described["nodes"], described["digest"]) == (37, report["snapshot_digest"])
    back = cli("rollback", run_dir, "--yes", "--json")
    assert back.returncode == 0, back.stderr
    assert as_json(back)["snapshot_checked"] is True and not target.exists()


def test_a_source_changed_in_place_leaves_the_snapshot(tmp_path: Path) -> None:
    """The copy is its own file: rewriting the source in the same inode (as a truncating
    writer does, and a hard link would follow) changes nothing the snapshot holds."""
    src = _loose(tmp_path)
    serial = _serial(src, tmp_path)
    target, run_dir = tmp_path / "nodes.lance", tmp_path / "nodes.lance.run"
    assert cli("convert", src, target, "--batch-size", "10").returncode == 0
    original, inode = src.read_bytes(), src.stat().st_ino
    with open(src, "r+b") as f:  # the same inode, other rows
        pq.write_table(pq.read_table(src).slice(3), f, row_group_size=7)
        f.truncate()
    assert src.stat().st_ino == inode and src.read_bytes() != original
    assert_bit_equal(read_snapshot(run_dir / "snapshot.parquet"), serial)
    with pytest.raises(VerificationFailed, match=r"loose\.parquet: the source holds"):
        rollback_run(run_dir)  # the snapshot passed its check; the source's proof did not
    assert json.loads((run_dir / "rollback.json").read_text())["snapshot_checked"] is True
    src.write_bytes(original)
    assert rollback_run(run_dir).source_untouched is True


def _killed_run(tmp_path: Path) -> tuple[Path, list[str], Path, Path]:
    """A conversion of 16 partitions killed after 2 were recorded: source, its arguments, run
    directory and the source's kept copy."""
    src = tmp_path / "memories.parquet"
    write_generated(src, 8000, seed=5, batch_size=500)
    target, run_dir = tmp_path / "nodes.lance", tmp_path / "nodes.lance.run"
    args = ["convert", str(src), str(target), "--batch-size", "500"]
    kill_after_units(args, run_dir, 2)
    return src, args, run_dir, run_dir / "snapshot.parquet" / "source-0000.parquet"


def test_a_killed_run_resumes_and_keeps_the_copy(tmp_path: Path) -> None:
    src, args, run_dir, copy = _killed_run(tmp_path)
    journal = Journal.open(run_dir)
    recorded = len(journal.batches())
    journal.close()
    assert 2 <= recorded < 16
    inode = copy.stat().st_ino
    meta = pq.ParquetFile(copy).metadata
    end = meta.row_group(recorded - 1).column(meta.num_columns - 1)
    kept = os.pread(os.open(copy, os.O_RDONLY), end.data_page_offset, 0)

    done = cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    assert copy.stat().st_ino == inode  # kept, not made again
    with open(copy, "rb") as f:
        assert f.read(len(kept)) == kept
    assert_bit_equal(read_snapshot(run_dir / "snapshot.parquet"), _serial(src, tmp_path))
    assert len(_kept_bytes(run_dir / "snapshot.parquet")) == 16
    assert cli("verify", run_dir).returncode == 0
    assert np.array_equal(np.frombuffer(src.read_bytes(), np.uint8),
                          np.frombuffer(copy.read_bytes(), np.uint8))


def test_a_resume_refuses_a_copy_whose_tail_is_not_the_sources(tmp_path: Path) -> None:
    """The kept copy's footer no longer the source's (damaged since the kill): the resume stops
    with exit 3 naming the source file, and leaves the copy and the recorded parts as they
    were (the killed attempt's temporary files may go)."""
    src, args, run_dir, copy = _killed_run(tmp_path)
    damaged = bytearray(copy.read_bytes())
    damaged[-9] ^= 0xFF  # the last byte of the footer's metadata, before its length and magic
    copy.write_bytes(bytes(damaged))
    parts = sorted(p.name for p in (run_dir / "snapshot.parquet").iterdir()
                   if not p.name.startswith("."))

    resumed = cli(*args, "--json")
    assert resumed.returncode == 3, resumed.stderr
    report = json.loads(resumed.stdout)
    assert f"{src} changed" in report["error"]
    assert copy.read_bytes() == bytes(damaged)
    assert sorted(p.name for p in (run_dir / "snapshot.parquet").iterdir()) == parts


@pytest.mark.parametrize("refuse", [None, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS])
def test_row_groups_are_copied_at_their_offsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                refuse: int | None) -> None:
    """A part's row groups land at the same offsets, by ``copy_file_range`` or, where the
    filesystem refuses it, by reads and writes; the rest of the copy stays a hole but the
    footer, so the part reads back alone."""
    src = tmp_path / "memories.parquet"
    write_generated(src, 3000, seed=6, batch_size=1000)
    copy = tmp_path / "copy.parquet"
    assert prepare_copy(src, copy) and prepare_copy(src, copy)  # again: found unchanged
    if refuse is not None:
        def refused(*_args: Any) -> int:
            raise OSError(refuse, os.strerror(refuse))
        monkeypatch.setattr(os, "copy_file_range", refused)
    copy_part(src, copy, 1, 2)
    meta = pq.ParquetFile(src).metadata
    group = [meta.row_group(1).column(c) for c in range(meta.num_columns)]
    start = min(c.dictionary_page_offset or c.data_page_offset for c in group)
    end = max(c.data_page_offset + c.total_compressed_size for c in group)
    data, kept = src.read_bytes(), copy.read_bytes()
    assert len(kept) == len(data) and kept[start:end] == data[start:end]
    assert kept[:start].strip(b"\0") == b"PAR1" and not kept[end:end + 4096].strip(b"\0")
    assert_bit_equal(pq.ParquetFile(copy).read_row_group(1), pq.ParquetFile(src).read_row_group(1))
