"""Keeping the source's own bytes as the snapshot (issue 13, item 4), against re-encoding it.

A partitioned export writes each partition's valid rows again as a Parquet snapshot part
(legacy schema + checksum, the tool's writer settings). The alternative keeps the source's
bytes (a copy, a reflink or a hard link) plus a sidecar per part: the source row of every kept
row (the snapshot holds only valid, first-seen rows) and its checksum. Measured here, on a
generated Parquet source (row groups of 65,536 nodes, pyarrow's default snappy), each method
``REPEATS`` times, round-robin so that the machine's noise falls on all of them alike; CPU is
the process's (all threads, user + system), the fsync is timed apart:

- per partition (one row group, as the default export cuts it): ``reencode`` (today's snapshot
  part, from rows already read, validated and hashed), ``copy_range`` (``os.copy_file_range``
  of the part's byte range into a sparse copy of the file at the same offsets, plus the
  sidecar), ``hardlink`` (``os.link`` plus the sidecar), ``reflink`` (the ``FICLONE`` ioctl, if
  the filesystem has it); and what readers then pay: ``rollback_check_*`` (every column read,
  the rows conformed, checksums recomputed and compared, as rollback's snapshot check) and
  ``verify_keys_*`` (space, id, checksum, episode in order, as the task's verification);
  ``task_reencode`` and ``task_bytes`` are the whole ``export_partition`` of the same part (to
  a Lance staging store), re-encoding its snapshot part or keeping the bytes as the package
  does for a Parquet source (``dualmem_bulk.stores.snapshot_bytes``).
- per file: ``reencode`` summed over the parts, ``copyfile`` (``shutil.copyfile``),
  ``copy_file_range`` (whole file), ``hardlink``, each plus every part's sidecar.
- per run: ``run_offline`` with ``--workers 0`` (spawned workers would not see the patch)
  keeping the bytes (``convert_bytes``, the package) and re-encoding (``convert_reencode``,
  the tasks given no copy); one target digest for both; and rollback's check of each run's
  snapshot through the package's reader (``rollback_check_reencoded``, ``_copied``).
- a legacy Lance source's fragment: re-encoded, or its data file copied (read back with Lance's
  file reader for rollback's check).

Both ways must restore the same rows: the rows rebuilt from the copied bytes and the sidecar
are compared with the re-encoded snapshot's, column by column, and their digests must match.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import RESULTS, record
from lance.file import LanceFileReader

from dualmem_bulk._fs import fsync_path
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.offline import partitioned
from dualmem_bulk.offline.partition_task import PartitionTask, export_partition
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.files import SNAPSHOT
from dualmem_bulk.schema import LEGACY_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.schema.conform import conform
from dualmem_bulk.sources.lance_legacy import LanceLegacySource, LancePart
from dualmem_bulk.sources.parquet import ParquetPart, ParquetSource
from dualmem_bulk.sources.scan import CHUNK_ROWS
from dualmem_bulk.sources.validate import SeenIds, validate_batch
from dualmem_bulk.stores import PARQUET_OPTIONS, open_parquet
from dualmem_bulk.stores.snapshot import Snapshot
from dualmem_bulk.stores.snapshot_bytes import copy_name, prepare_copy
from dualmem_bulk.verify import SNAPSHOT_KEYS

REPEATS = int(os.environ.get("BENCH_SNAPSHOT_REPEATS", "5"))
READ_ROWS = 16_384
"""Rows per batch when reading a snapshot back (rollback's and verify's default)."""
SIDECAR = pa.schema([pa.field("row", pa.int64(), nullable=False),
                     SNAPSHOT_SCHEMA.field("checksum")])
FICLONE = 0x40049409
"""``_IOW(0x94, 9, int)``: share the source's extents (btrfs, XFS with reflink, bcachefs)."""


@dataclass
class Exported:
    """One partition as a task holds it before writing its snapshot part."""

    part: ParquetPart | LancePart
    batches: list[pa.RecordBatch]
    """Valid rows, legacy schema + checksum, one per validated chunk."""
    rows: np.ndarray
    """Source row (in the file) of each valid row."""
    digest: TableDigest


def _export(part: ParquetPart | LancePart) -> Exported:
    """Read, validate and hash ``part`` as ``export_partition`` does (not timed)."""
    seen, digest, batches, rows = SeenIds(), TableDigest(), [], []
    for chunk in part.batches(CHUNK_ROWS):
        checked = validate_batch(chunk, seen)
        sums = row_checksums(checked.good)
        digest += TableDigest.of(sums)
        batches.append(checked.good.append_column(SNAPSHOT_SCHEMA.field("checksum"), sums))
        rows.append(checked.rows)
    return Exported(part, batches, np.concatenate(rows), digest)


def _parts(source: Path) -> list[ParquetPart]:
    return ParquetSource(source).partitions(READ_ROWS)  # the default export's cut


# Writing a snapshot part each way ---------------------------------------------------------

def _reencode(done: Exported, out: Path) -> list[Path]:
    with pq.ParquetWriter(out, SNAPSHOT_SCHEMA, **PARQUET_OPTIONS) as writer:
        for batch in done.batches:
            writer.write_batch(batch)
        writer.add_key_value_metadata({"dualmem.snapshot.rows": str(done.digest.rows),
                                       "dualmem.snapshot.digest": done.digest.hex})
    return [out]


def _sidecar(done: Exported, out: Path) -> Path:
    """The rows kept and their checksums (small: 40 bytes a row)."""
    sums = pa.concat_arrays([b.column("checksum") for b in done.batches])
    table = pa.Table.from_arrays([pa.array(done.rows, pa.int64()), sums], schema=SIDECAR)
    pq.write_table(table, out, **PARQUET_OPTIONS)
    return out


def _byte_range(source: Path, part: ParquetPart) -> tuple[int, int]:
    """Where the part's row groups lie in the file: [start, end)."""
    meta = pq.ParquetFile(source).metadata
    starts, ends = [], []
    for g in range(part.first_group, part.end_group):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            start = (col.dictionary_page_offset if col.has_dictionary_page
                     else col.data_page_offset)
            starts.append(start)
            ends.append(start + col.total_compressed_size)
    return min(starts), max(ends)


def _footer(source: Path) -> int:
    """Where the file's footer (metadata, its length, ``PAR1``) starts."""
    with open(source, "rb") as f:
        f.seek(-8, os.SEEK_END)
        return source.stat().st_size - 8 - int.from_bytes(f.read(4), "little")


def _copy_range(src: Path, dst: Path, start: int, end: int) -> None:
    """Copy bytes [start, end) of ``src`` to the same offsets of ``dst`` (created sparse)."""
    fin, fout = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fout, max(os.fstat(fout).st_size, os.fstat(fin).st_size))
        done = start
        while done < end:
            n = os.copy_file_range(fin, fout, end - done, done, done)
            if n == 0:
                raise OSError(f"{src}: copy_file_range stopped at {done} of {end}")
            done += n
    finally:
        os.close(fin)
        os.close(fout)


def _copy_part(source: Path, done: Exported, out: Path) -> list[Path]:
    """The part's row groups, and the footer (in a real export copied once per file, not per
    part: a few KiB)."""
    assert isinstance(done.part, ParquetPart)
    start, end = _byte_range(source, done.part)
    _copy_range(source, out, start, end)
    _copy_range(source, out, _footer(source), source.stat().st_size)
    return [out, _sidecar(done, out.with_suffix(".rows.parquet"))]


def _hardlink(source: Path, done: Exported, out: Path) -> list[Path]:
    os.link(source, out)
    return [_sidecar(done, out.with_suffix(".rows.parquet"))]


def _reflink_error(source: Path, out: Path) -> str | None:
    """``None`` if ``FICLONE`` works on this filesystem, else the error's name."""
    try:
        with open(source, "rb") as fin, open(out, "wb") as fout:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    finally:
        out.unlink(missing_ok=True)
    return None


def _reflink(source: Path, done: Exported, out: Path) -> list[Path]:
    with open(source, "rb") as fin, open(out, "wb") as fout:
        fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
    return [out, _sidecar(done, out.with_suffix(".rows.parquet"))]


# Reading it back ---------------------------------------------------------------------------

def _kept(path: Path, part: ParquetPart, sidecar: Path, columns: list[str]
          ) -> Iterator[tuple[pa.RecordBatch, pa.Array]]:
    """The kept rows of a copied part (``columns`` of them, conformed to the legacy schema) and
    their checksums from the sidecar."""
    side = pq.read_table(sidecar)
    keep = np.asarray(side.column("row").to_numpy()) - part.first_row
    sums = side.column("checksum").combine_chunks()
    handle, first, taken = open_parquet(path), 0, 0
    for batch in handle.iter_batches(batch_size=READ_ROWS, columns=columns,
                                     row_groups=range(part.first_group, part.end_group),
                                     use_threads=False):
        lo, hi = np.searchsorted(keep, [first, first + batch.num_rows])
        rows = batch if hi - lo == batch.num_rows else batch.take(
            pa.array(keep[lo:hi] - first))
        first += batch.num_rows
        yield rows, sums.slice(taken, hi - lo)
        taken += hi - lo


def _check_reencoded(path: Path) -> TableDigest:
    """Rollback's snapshot check on a re-encoded part (or any snapshot the package reads)."""
    digest = TableDigest()
    for batch in Snapshot(path).batches(READ_ROWS, SNAPSHOT_SCHEMA.names):
        sums = batch.column("checksum")
        assert pc.all(pc.equal(row_checksums(batch), sums)).as_py()
        digest += TableDigest.of(sums)
    return digest


def _check_copied(path: Path, part: ParquetPart, sidecar: Path) -> TableDigest:
    """The same check on copied bytes: the kept rows conformed, then hashed and compared."""
    digest = TableDigest()
    for rows, sums in _kept(path, part, sidecar, LEGACY_SCHEMA.names):
        assert pc.all(pc.equal(row_checksums(conform(rows)), sums)).as_py()
        digest += TableDigest.of(sums)
    return digest


def _keys_reencoded(path: Path) -> int:
    return sum(b.num_rows for b in Snapshot(path).batches(READ_ROWS, SNAPSHOT_KEYS))


def _keys_copied(path: Path, part: ParquetPart, sidecar: Path) -> int:
    """Verify's key columns, in order: space, id and episode from the bytes (cast to the legacy
    types), the checksum from the sidecar."""
    n = 0
    for rows, sums in _kept(path, part, sidecar, ["space", "id", "episode"]):
        keys = pa.RecordBatch.from_arrays(
            [rows.column(k).cast(SNAPSHOT_SCHEMA.field(k).type) if k != "checksum" else sums
             for k in SNAPSHOT_KEYS], names=SNAPSHOT_KEYS)
        n += keys.num_rows
    return n


# Measuring ---------------------------------------------------------------------------------

@dataclass
class Samples:
    cpu: list[float]
    wall: list[float]
    fsync: list[float]

    def summary(self) -> dict[str, Any]:
        def spread(xs: list[float]) -> str:
            return f"{min(xs):.3f}-{max(xs):.3f}" if xs else ""

        return {"cpu_s": round(statistics.median(self.cpu), 3), "cpu_spread": spread(self.cpu),
                "fsync_s": round(statistics.median(self.fsync), 3) if self.fsync else None,
                "wall_spread": spread(self.wall)}


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def _sync(files: list[Path]) -> float:
    started = time.perf_counter()
    for f in files:
        fsync_path(f)
    fsync_path(files[0].parent)
    return time.perf_counter() - started


def _reader(fn: Callable[[], Any]) -> Callable[[Path], list[Path]]:
    """A read measured like a write (it writes nothing)."""
    def run(_folder: Path) -> list[Path]:
        fn()
        return []
    return run


def _round_robin(methods: dict[str, Callable[[Path], list[Path]]], scratch: Path,
                 sync: bool = True) -> dict[str, Samples]:
    """Each method ``REPEATS`` times, in turns, each into an empty directory; the files each
    wrote are fsynced and timed apart."""
    out = {name: Samples([], [], []) for name in methods}
    for i in range(REPEATS):
        for name, fn in methods.items():
            folder = scratch / f"{name}-{i}"
            folder.mkdir()
            cpu, wall, files = _timed(functools.partial(fn, folder))
            out[name].cpu.append(cpu)
            out[name].wall.append(wall)
            if sync and files:
                out[name].fsync.append(_sync(files))
            shutil.rmtree(folder)
    return out


def _record_all(scope: str, nodes: int, samples: dict[str, Samples]) -> None:
    """Each method's medians; a write against ``reencode``, a read of copied bytes against the
    same read of the re-encoded part."""
    for name, s in samples.items():
        extra = s.summary()
        base = name.replace("_copied", "_reencoded") if name.endswith("_copied") else "reencode"
        if base in samples and not name.endswith(("_reencoded", "reencode")):
            extra["cpu_vs_reencoded"] = round(
                statistics.median(s.cpu) / statistics.median(samples[base].cpu), 3)
        record(f"snap_{scope}_{name}", nodes, statistics.median(s.wall), **extra)


@pytest.fixture(scope="module")
def first_part(source: Path) -> Exported:
    return _export(_parts(source)[0])


def test_part_write_and_read(benchmark: Any, source: Path, first_part: Exported,
                             fresh: Path) -> None:
    """One partition: the snapshot part written each way, then read back each way."""
    done, part = first_part, first_part.part
    assert isinstance(part, ParquetPart)
    copied, ref = fresh / "copied.parquet", fresh / "ref.parquet"
    _reencode(done, ref)
    _copy_part(source, done, copied)
    sidecar = copied.with_suffix(".rows.parquet")
    # Rollback stays exact: the rows rebuilt from the bytes are the re-encoded snapshot's.
    rebuilt = pa.Table.from_batches(
        [conform(r).append_column(SNAPSHOT_SCHEMA.field("checksum"), s)
         for r, s in _kept(copied, part, sidecar, LEGACY_SCHEMA.names)])
    assert rebuilt.equals(pq.read_table(ref, schema=SNAPSHOT_SCHEMA).cast(SNAPSHOT_SCHEMA))
    assert _check_copied(copied, part, sidecar) == _check_reencoded(ref) == done.digest

    methods: dict[str, Callable[[Path], list[Path]]] = {
        "reencode": lambda d: _reencode(done, d / "part.parquet"),
        "copy_range": lambda d: _copy_part(source, done, d / "part.parquet"),
        "hardlink": lambda d: _hardlink(source, done, d / "part.parquet"),
    }
    reflink = _reflink_error(source, fresh / "probe")
    if reflink is None:
        methods["reflink"] = lambda d: _reflink(source, done, d / "part.parquet")
    readers = {
        "rollback_check_reencoded": _reader(lambda: _check_reencoded(ref)),
        "rollback_check_copied": _reader(lambda: _check_copied(copied, part, sidecar)),
        "verify_keys_reencoded": _reader(lambda: _keys_reencoded(ref)),
        "verify_keys_copied": _reader(lambda: _keys_copied(copied, part, sidecar)),
    }
    results: dict[str, dict[str, Samples]] = {}

    def run() -> None:
        results["write"] = _round_robin(methods, fresh)
        results["read"] = _round_robin(readers, fresh, sync=False)

    benchmark.pedantic(run, rounds=1, iterations=1)
    rows = done.digest.rows
    _record_all("part", rows, results["write"])
    _record_all("part", rows, results["read"])
    start, end = _byte_range(source, part)
    RESULTS["snap_part_reencode"]["mib"] = round(ref.stat().st_size / 2**20, 1)
    RESULTS["snap_part_copy_range"].update(
        mib=round((end - start) / 2**20, 1), sidecar_mib=round(sidecar.stat().st_size / 2**20, 2),
        reflink="works" if reflink is None else f"unsupported ({reflink})")


def _task(part: Exported, folder: Path, keep_bytes: bool) -> None:
    """The real ``export_partition`` of ``part`` (to a Lance staging store), its snapshot part
    re-encoded or, as the package does for a Parquet source, the bytes kept (the copy prepared
    as the driver prepares it, its footer only)."""
    run = folder / "run"
    (run / SNAPSHOT).mkdir(parents=True)
    copy = None
    if keep_bytes:
        assert isinstance(part.part, ParquetPart)
        copy = copy_name(0)
        prepare_copy(part.part.path, run / SNAPSHOT / copy)
    done = export_partition(PartitionTask(0, part.part, run, "lance", folder / "staging.lance",
                                          CHUNK_ROWS, False, copy=copy))
    assert done.digest == part.digest.hex and done.verdict.aligned


def test_part_task(benchmark: Any, first_part: Exported, fresh: Path) -> None:
    """The whole task of the same partition, re-encoding its snapshot part (before issue 13,
    item 4) and keeping the source's bytes (the package now, for a Parquet source)."""
    def run(keep: bool) -> Callable[[Path], list[Path]]:
        def one(folder: Path) -> list[Path]:
            _task(first_part, folder, keep)
            return []
        return one

    results: dict[str, Samples] = {}
    benchmark.pedantic(lambda: results.update(_round_robin(
        {"task_reencode": run(False), "task_bytes": run(True)}, fresh, sync=False)),
        rounds=1, iterations=1)
    _record_all("part", first_part.digest.rows, results)
    base = statistics.median(results["task_reencode"].cpu)
    RESULTS["snap_part_task_bytes"]["cpu_vs_reencode"] = round(
        statistics.median(results["task_bytes"].cpu) / base, 3)


def test_file_write(benchmark: Any, source: Path, fresh: Path) -> None:
    """The whole file: re-encoding every part, or one copy (or link) plus every part's
    sidecar."""
    parts = [_export(p) for p in _parts(source)]

    def each(fn: Callable[[Exported, Path], list[Path]]) -> Callable[[Path], list[Path]]:
        return lambda d: [f for i, e in enumerate(parts) for f in fn(e, d / f"part-{i}")]

    def sidecars(d: Path) -> list[Path]:
        return [_sidecar(e, d / f"part-{i}.rows.parquet") for i, e in enumerate(parts)]

    def file_copy_range(d: Path) -> list[Path]:
        _copy_range(source, d / "source.parquet", 0, source.stat().st_size)
        return [d / "source.parquet", *sidecars(d)]

    def copyfile(d: Path) -> list[Path]:
        shutil.copyfile(source, d / "source.parquet")
        return [d / "source.parquet", *sidecars(d)]

    def hardlink(d: Path) -> list[Path]:
        os.link(source, d / "source.parquet")
        return sidecars(d)

    methods = {"reencode": each(lambda e, p: _reencode(e, p.with_suffix(".parquet"))),
               "copy_file_range": file_copy_range, "copyfile": copyfile, "hardlink": hardlink}
    results: dict[str, Samples] = {}
    benchmark.pedantic(lambda: results.update(_round_robin(methods, fresh)),
                       rounds=1, iterations=1)
    _record_all("file", sum(e.digest.rows for e in parts), results)
    RESULTS["snap_file_copyfile"]["mib"] = round(source.stat().st_size / 2**20, 1)


def test_whole_run(benchmark: Any, source: Path, fresh: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_offline`` in one process (``--workers 0``, so that the patch giving the tasks no
    copy applies to every task), re-encoding the snapshot and keeping the source's bytes (the
    package's way); both must give the same target digest."""
    digests: set[str] = set()

    def convert(folder: Path) -> list[Path]:
        report = run_offline(OfflineConfig(source=source, target=folder / "nodes.lance",
                                           workers=0))
        digests.add(report.target_digest)
        return []

    def convert_reencode(folder: Path) -> list[Path]:
        with monkeypatch.context() as patch:
            patch.setattr(partitioned.PartitionedExport, "_copies", lambda self, parts: {})
            return convert(folder)

    results: dict[str, Samples] = {}
    kept = {"reencoded": fresh / "kept-reencoded", "copied": fresh / "kept-copied"}
    for folder in kept.values():
        folder.mkdir()
    convert_reencode(kept["reencoded"])
    convert(kept["copied"])
    snapshots = {name: folder / "nodes.lance.run" / SNAPSHOT for name, folder in kept.items()}
    assert not any(snapshots["reencoded"].glob("source-*"))
    assert any(snapshots["copied"].glob("source-*"))
    checks = {f"rollback_check_{name}": _reader(functools.partial(_check_reencoded, path))
              for name, path in snapshots.items()}  # the package's reader, either layout

    def run() -> None:
        results.update(_round_robin(
            {"convert_reencode": convert_reencode, "convert_bytes": convert}, fresh, sync=False))
        results.update(_round_robin(checks, fresh, sync=False))

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert len(digests) == 1
    nodes = pq.ParquetFile(source).metadata.num_rows
    _record_all("run", nodes, results)
    for key in ("cpu", "wall"):
        RESULTS["snap_run_convert_bytes"][f"{key}_vs_reencode"] = round(
            statistics.median(getattr(results["convert_bytes"], key))
            / statistics.median(getattr(results["convert_reencode"], key)), 3)


@pytest.fixture(scope="module")
def lance_source(source: Path, workdir: Path) -> Path:
    """The same rows as a legacy Lance dataset, fragments of 65,536 rows."""
    path = workdir / f"{source.stem}.lance"
    if not path.exists():
        handle = pq.ParquetFile(source)
        lance.write_dataset(pa.RecordBatchReader.from_batches(LEGACY_SCHEMA, (
            pa.RecordBatch.from_arrays(b.columns, schema=LEGACY_SCHEMA)
            for b in handle.iter_batches(batch_size=READ_ROWS))), str(path),
            schema=LEGACY_SCHEMA, max_rows_per_file=65_536)
    return path


def _lance_files(part: LancePart) -> list[Path]:
    """The data files of the part's fragments (none of them has a deletion file here)."""
    ds = lance.dataset(str(part.path), version=part.version)
    files = []
    for fid in part.fragments:
        fragment = ds.get_fragment(fid)
        assert fragment is not None and fragment.deletion_file() is None
        files += [part.path / "data" / f.path for f in fragment.data_files()]
    return files


def _copy_lance(part: LancePart, done: Exported, out: Path) -> list[Path]:
    copies = []
    for i, file in enumerate(_lance_files(part)):
        copies.append(out.with_suffix(f".{i}.lance"))
        _copy_range(file, copies[-1], 0, file.stat().st_size)
    return [*copies, _sidecar(done, out.with_suffix(".rows.parquet"))]


def _check_copied_lance(copies: list[Path], part: LancePart, sidecar: Path) -> TableDigest:
    """Rollback's check on copied Lance data files: read with Lance's file reader, the kept
    rows conformed, hashed and compared with the sidecar."""
    side = pq.read_table(sidecar)
    keep = np.asarray(side.column("row").to_numpy()) - part.first_row
    sums, digest, first, taken = side.column("checksum").combine_chunks(), TableDigest(), 0, 0
    for copy in copies:
        for batch in LanceFileReader(str(copy), columns=LEGACY_SCHEMA.names).read_all(
                batch_size=READ_ROWS).to_batches():
            lo, hi = np.searchsorted(keep, [first, first + batch.num_rows])
            rows = batch if hi - lo == batch.num_rows else batch.take(
                pa.array(keep[lo:hi] - first))
            first += batch.num_rows
            kept = sums.slice(taken, hi - lo)
            taken += hi - lo
            assert pc.all(pc.equal(row_checksums(conform(rows)), kept)).as_py()
            digest += TableDigest.of(kept)
    return digest


def test_lance_part(benchmark: Any, lance_source: Path, fresh: Path) -> None:
    """A legacy Lance source's first fragment: re-encoded as a Parquet snapshot part, or its
    data file copied plus the sidecar; rollback's check on each."""
    part = LanceLegacySource(lance_source).partitions(READ_ROWS)[0]
    done = _export(part)
    ref, out = fresh / "ref.parquet", fresh / "copied"
    _reencode(done, ref)
    *copies, sidecar = _copy_lance(part, done, out)
    assert _check_copied_lance(copies, part, sidecar) == _check_reencoded(ref) == done.digest
    methods = {
        "reencode": lambda d: _reencode(done, d / "part.parquet"),
        "copy_data_files": lambda d: _copy_lance(part, done, d / "part"),
        "rollback_check_reencoded": _reader(lambda: _check_reencoded(ref)),
        "rollback_check_copied": _reader(lambda: _check_copied_lance(copies, part, sidecar)),
    }
    results: dict[str, Samples] = {}
    benchmark.pedantic(lambda: results.update(_round_robin(methods, fresh)),
                       rounds=1, iterations=1)
    _record_all("lance_part", done.digest.rows, results)
    RESULTS["snap_lance_part_copy_data_files"]["mib"] = round(
        sum(f.stat().st_size for f in copies) / 2**20, 1)
