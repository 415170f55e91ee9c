"""The Engram WAL replay index built by tasks: every WAL file scanned on the run's pool, the
driver merging the per-file indexes. The winners, the replay report, the damage, the rows, the
quarantine and the digests are those of the serial reader and of ``dualmem-bulk export``, at 0,
1 and 2 local workers and on Dask, for the shared fixture, a hand-built damaged root and a
generated one; the vectorised merge is checked against the sequential walk it replaces."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pytest
from conftest import assert_bit_equal
from test_offline_partitioned import _partitioned, _same, _serial
from test_sources_engram_wal import HEADER, _episode, _flip, _offsets, _write

from dualmem_bulk.engines.local import WorkerPool
from dualmem_bulk.errors import SourceError
from dualmem_bulk.generate import write_generated
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.sources._wal_index import SpaceIndex, replay
from dualmem_bulk.sources._wal_scan import DELETE, INVALID, STORE, WalFileScan, scan_wal_file
from dualmem_bulk.sources.engram_wal import EngramWalSource, read_engram_wal
from dualmem_bulk.sources.engram_wal_codec import EntryType, encode_episode
from dualmem_bulk.sources.engram_wal_writer import WalEntry, wal_file_name
from dualmem_bulk.stores import TargetStore

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "engram-wal"
"""The shared fixture, reached as ``../shared`` from the repository root."""

S = TypeVar("S")
R = TypeVar("R")


def _sequential(kind: np.ndarray, ids: list[str], sequence: np.ndarray) -> tuple[list[int], int]:
    """The replay as a walk, one entry at a time (the reader's rule before the merge was
    vectorised): stable order by sequence; the first store per id wins, a delete removes."""
    present: dict[str, int] = {}
    duplicates = 0
    for entry in np.argsort(sequence, kind="stable").tolist():
        if kind[entry] == STORE:
            if ids[entry] in present:
                duplicates += 1
            else:
                present[ids[entry]] = entry
        elif kind[entry] == DELETE:
            present.pop(ids[entry], None)
    return sorted(present.values()), duplicates


@pytest.mark.parametrize("seed", range(40))
def test_the_vectorised_replay_is_the_sequential_walk(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    kind = rng.choice([STORE, DELETE, INVALID], n, p=[0.6, 0.25, 0.15]).astype(np.uint8)
    codes = rng.integers(0, max(1, n // int(rng.integers(1, 12))), n)  # many repeats
    sequence = rng.integers(0, max(1, n // 3), n).astype(np.uint64)  # many ties
    want = _sequential(kind, [f"m{c}" for c in codes.tolist()], sequence)
    winners, duplicates = replay(kind, codes, sequence)
    assert (winners.tolist(), duplicates) == want


def _entry(id_: str, sequence: int, **fields: Any) -> WalEntry:
    return WalEntry(EntryType.EpisodeStore, encode_episode(_episode(id_, **fields)), sequence)


def _delete(id_: str, sequence: int) -> WalEntry:
    return WalEntry(EntryType.MemoryDelete, id_.encode(), sequence)


def damaged_root(root: Path) -> Path:
    """Three spaces of several files: sequences that restart and interleave across files, ids
    stored again, deleted and restored across files (and the same id in two spaces), records
    that do not decode or whose timestamps do not parse, an unknown entry type, a bad payload
    CRC, a bad header, torn tails, an empty file and ignored names."""
    rng = random.Random(11)
    _write(root, "default", wal_file_name(1), [
        _entry("a", 5, what="a first"), _entry("b", 6), _delete("a", 7),
        _entry("a", 8, what="a restored"), _entry("c", 9, encoding_confidence=1.5),
        _entry("d", 10, when="2023-02-30T00:00:00Z"), _entry("e", 11),
        WalEntry(EntryType.Checkpoint, struct.pack("<Q", 11), 12), _delete("never", 13),
        WalEntry(42, encode_episode(_episode("f")), 14), _entry("g", 15, last_recall="soon"),
        _entry("h", 16)])
    second = _write(root, "default", wal_file_name(2), [
        _entry("c", 0, what="c valid"), _entry("b", 6, what="b loses the tie"), _entry("a", 9),
        _delete("e", 20), _entry("e", 21, what="e again"), _entry("x", 12), _entry("y", 13),
        WalEntry(EntryType.MemoryDelete, b"\xc3\x28", 14), _entry("d", 15, what="d valid")])
    _flip(second, _offsets(second)[5] + HEADER + 40)  # payload CRC of x
    second.write_bytes(second.read_bytes()[:-7])  # torn payload of the last record
    for file in range(3, 6):  # random stores and deletes of 40 ids, sequences interleaving
        entries = [_delete(f"r{rng.randrange(40)}", rng.randrange(300)) if rng.random() < 0.2
                   else _entry(f"r{rng.randrange(40)}", rng.randrange(300),
                               what=f"file {file} #{i}") for i in range(120)]
        _write(root, "default", wal_file_name(file), entries)
    (root / "default" / "wal" / "notes.txt").write_text("not a WAL file")
    (root / "default" / "wal" / (wal_file_name(9) + ".tmp")).write_bytes(b"leftover")
    alpha = _write(root, "team_alpha", wal_file_name(1), [
        _entry("a", 0), _entry("shared", 1), _entry("shared", 2), _entry("cut", 3),
        _entry("lost", 4)])
    _flip(alpha, _offsets(alpha)[3])  # bad magic: the rest of the file is skipped
    torn = _write(root, "team_alpha", wal_file_name(2), [_entry("z", 0), _entry("shared", 1)])
    torn.write_bytes(torn.read_bytes() + b"\xef\xbe\xad\xde" + bytes(9))  # torn header
    (root / "zeta").mkdir()
    (root / "zeta" / "wal").mkdir()
    (root / "zeta" / "wal" / wal_file_name(1)).write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shared fixture, the damaged root and a generated root (one file per space)."""
    made = tmp_path_factory.mktemp("roots")
    generated = made / "generated"
    write_generated(generated, 3_000, seed=5, fmt="engram-wal")
    return {"fixture": FIXTURE / "engram-data", "damaged": damaged_root(made / "damaged"),
            "generated": generated}


class Recording:
    """A pool that notes every task function and spec it is handed, then runs them on
    ``pool``."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.workers, self.inline = pool.workers, pool.inline
        self.calls: list[tuple[Callable[[Any], Any], Any]] = []

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.close()

    def start(self) -> None:
        self.pool.start()

    def close(self, cancel: bool = False) -> None:
        self.pool.close(cancel)

    def submit(self, fn: Callable[[S], R], spec: S) -> Any:
        self.calls.append((fn, spec))
        return self.pool.submit(fn, spec)

    def ordered(self, fn: Callable[[S], R], specs: Iterable[S]) -> Iterator[tuple[S, R]]:
        specs = list(specs)
        self.calls += [(fn, spec) for spec in specs]
        return self.pool.ordered(fn, specs)


def _read(source: EngramWalSource) -> tuple[Any, ...]:
    """Everything a reader hands on: report, damage, winners, partitions, rows and rejects."""
    batches = list(source.batches(7))
    return (source.describe(), source.damage(), list(source.winners()), source.memories,
            source.total_rows, [p.describe() for p in source.partitions(5)],
            [b.source for b in batches], pa.Table.from_batches([b.batch for b in batches]),
            [r for b in batches for r in b.rejected])


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("name", ["fixture", "damaged", "generated"])
def test_files_scanned_as_tasks_give_the_serial_reader(roots: dict[str, Path], name: str,
                                                       workers: int) -> None:
    root = roots[name]
    serial = read_engram_wal(root, 1000)
    with Recording(WorkerPool(workers)) as pool:
        pooled = read_engram_wal(root, 1000, pool=pool)
    assert [(fn, spec.path) for fn, spec in pool.calls] == [
        (scan_wal_file, path) for path in serial.files]
    want, got = _read(serial), _read(pooled)
    assert got[:-2] == want[:-2]
    assert_bit_equal(got[-2], want[-2])
    assert got[-1] == want[-1]
    if name == "fixture":
        expected = json.loads((FIXTURE / "expected-report.json").read_text())
        report = pooled.describe()
        assert (report["spaces"], report["totals"]) == (expected["spaces"], expected["totals"])


def test_the_damaged_root_replays_as_engram_does(roots: dict[str, Path]) -> None:
    with WorkerPool(2) as pool:
        source = read_engram_wal(roots["damaged"], 1000, pool=pool)
    report = source.describe()
    default = report["spaces"]["default"]
    assert default["ignored_files"] == ["notes.txt", wal_file_name(9) + ".tmp"]
    assert default["bad_crc_records_skipped"] == 1 and default["torn_tail_bytes"] > 0
    alpha = report["spaces"]["team_alpha"]
    assert alpha["bad_header_files"] == 1 and alpha["duplicates_skipped"] == 2  # a tie, a later
    assert report["spaces"]["zeta"]["wal_files"] == 1
    damage = report["damage"]
    assert len(damage["undecodable_records"]) == 4  # confidence, when, last_recall, UTF-8
    assert [d["offset"] for d in damage["unknown_entry_types"]] == [
        _offsets(roots["damaged"] / "default" / "wal" / wal_file_name(1))[9]]
    rows = {(Path(b.source).parts[-3], r["id"]): r["content"]
            for b in source for r in b.batch.select(["id", "content"]).to_pylist()}
    assert rows[("default", "a")] == "a restored"  # deleted at 7, restored at 8; 9 a duplicate
    assert rows[("default", "b")] == "about b"  # the tie at sequence 6 keeps file order
    assert rows[("default", "c")] == "c valid"  # the undecodable c never stored
    assert rows[("default", "e")] == "e again"  # deleted in file 2, stored again
    assert ("default", "x") not in rows and ("team_alpha", "cut") not in rows
    assert rows[("team_alpha", "a")] == "about a"  # the same id in another space


def test_the_merge_is_the_sequential_walk_over_every_file(roots: dict[str, Path]) -> None:
    """Per space, the per-file indexes walked one entry at a time (the rule before the merge
    was vectorised) give the winners and the duplicates of the merged index."""
    source = read_engram_wal(roots["damaged"], 1000)
    for space in source._spaces:
        scans = [scan_wal_file(WalFileScan(space.name, path, i))
                 for i, path in enumerate(space.files)]
        kind = np.concatenate([np.zeros(0, np.uint8), *(s.kind for s in scans)])
        sequence = np.concatenate([np.zeros(0, np.uint64), *(s.sequence for s in scans)])
        ids = [i for s in scans for i in s.ids.to_pylist()]
        winners, duplicates = _sequential(kind, ids, sequence)
        assert space.winners.tolist() == winners
        assert space.report.duplicates_skipped == duplicates
        merged = SpaceIndex(space.name, space.files, [], scans)
        assert merged.winners.tolist() == winners


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("name", ["fixture", "damaged"])
def test_a_conversion_equals_the_serial_export(roots: dict[str, Path], tmp_path: Path,
                                               name: str, workers: int) -> None:
    """Snapshot, quarantine and target rows, row by row, against ``dualmem-bulk export``."""
    root = roots[name]
    serial = _serial(root, tmp_path)
    _same(serial, _partitioned(root, tmp_path / "n.lance", 5, workers))
    report = json.loads((tmp_path / "n.lance.run" / "report.json").read_text())
    assert report["source_details"] == read_engram_wal(root, 1000).describe()


def test_dask_scans_the_files_and_converts_the_same(roots: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from dualmem_bulk.engines.dask import DaskPool

    root = roots["damaged"]
    local = run_offline(OfflineConfig(source=root, target=tmp_path / "local.lance",
                                      batch_size=5, workers=0))
    dask = run_offline(OfflineConfig(source=root, target=tmp_path / "dask.lance", batch_size=5,
                                     engine="dask", workers=2))
    assert dask.verified and dask.engine == "dask"
    assert (dask.target_digest, dask.snapshot_digest, dask.quarantined) == (
        local.target_digest, local.snapshot_digest, local.quarantined)
    assert dask.source_details == local.source_details
    assert dask.quarantine_sample == local.quarantine_sample
    want = pa.Table.from_batches(list(TargetStore(tmp_path / "local.lance").batches(100)))
    got = pa.Table.from_batches(list(TargetStore(tmp_path / "dask.lance").batches(100)))
    assert_bit_equal(got, want)
    with DaskPool(2) as pool:
        pooled = read_engram_wal(root, 1000, pool=pool)
    assert _read(pooled)[:-2] == _read(read_engram_wal(root, 1000))[:-2]


class _Vanishing(Recording):
    """Removes a file after the listing, before the tasks scan it (Engram compacting, say)."""

    def __init__(self, pool: WorkerPool, gone: Path) -> None:
        super().__init__(pool)
        self.gone = gone

    def ordered(self, fn: Callable[[S], R], specs: Iterable[S]) -> Iterator[tuple[S, R]]:
        self.gone.unlink()
        return super().ordered(fn, specs)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_that_cannot_be_read_is_named(tmp_path: Path, workers: int) -> None:
    _write(tmp_path, "space_a", wal_file_name(1), [_episode("a")])
    gone = _write(tmp_path, "space_a", wal_file_name(2), [_episode("b")])
    with _Vanishing(WorkerPool(workers), gone) as pool, pytest.raises(
            SourceError, match=rf"{gone}: cannot read \(No such file or directory\)"):
        read_engram_wal(tmp_path, 10, pool=pool)


def test_the_cli_with_workers_gives_the_one_process_run(roots: dict[str, Path],
                                                        tmp_path: Path) -> None:
    """``dualmem-bulk convert --workers 2`` in its own process: the report and digests of the
    same conversion in one process."""
    root = roots["damaged"]
    alone = run_offline(OfflineConfig(source=root, target=tmp_path / "alone.lance", workers=0))
    done = subprocess.run([sys.executable, "-m", "dualmem_bulk", "convert", str(root),
                           str(tmp_path / "cli.lance"), "--workers", "2", "--json"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["workers"], report["verified"]) == (2, True)
    assert report["source_details"] == alone.source_details
    assert (report["target_digest"], report["snapshot_digest"], report["quarantined"]) == (
        alone.target_digest, alone.snapshot_digest, alone.quarantined)
    assert report["quarantine_codes"] == alone.quarantine_codes
