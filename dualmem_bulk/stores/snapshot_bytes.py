"""A Parquet source's own bytes kept as the snapshot, instead of its rows re-encoded.

For a Parquet source the driver creates one copy per source file in the snapshot directory
(``snapshot.parquet/source-0000.parquet``...): sparse, the file's size, with its leading magic
and its tail (page indexes, footer) written. Each partition's task copies its row groups' bytes
into that copy at the same offsets (``os.copy_file_range``; a read/write loop where the
filesystem cannot) and reads its rows from the copy, so the rows hashed are the bytes kept. Its
snapshot part (``part-NNNNNN.parquet``) is then a sidecar: the source row, space, id, checksum
and episode of every kept row, and in its metadata the copy's name and the part's row groups.
Rebuilding the rows takes the kept rows from the copy and conforms them as the export did.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk._fs import atomic_path
from dualmem_bulk.schema import SNAPSHOT_SCHEMA

__all__ = [
    "COPY_KEY",
    "FIRST_ROW_KEY",
    "FORMAT",
    "FORMAT_KEY",
    "GROUPS_KEY",
    "SIDECAR_COLUMNS",
    "SIDECAR_SCHEMA",
    "copy_name",
    "copy_part",
    "prepare_copy",
]

FORMAT_KEY = "dualmem.snapshot.format"
"""Snapshot part metadata: the format version (absent: the rows re-encoded, version 1)."""
FORMAT = "2"
"""A sidecar naming a copy of the source's bytes."""
COPY_KEY = "dualmem.snapshot.copy"
"""The copy's file name, in the sidecar's directory."""
GROUPS_KEY = "dualmem.snapshot.row_groups"
"""The part's row groups in the copy: ``first-end`` (end excluded)."""
FIRST_ROW_KEY = "dualmem.snapshot.first_row"
"""Row index in the file of the part's first row."""
SIDECAR_COLUMNS = ("space", "id", "checksum", "episode")
"""The snapshot columns a sidecar holds itself (verify's keys)."""
SIDECAR_SCHEMA = pa.schema([pa.field("row", pa.int64(), nullable=False),
                            *(SNAPSHOT_SCHEMA.field(n) for n in SIDECAR_COLUMNS)],
                           metadata=SNAPSHOT_SCHEMA.metadata)
"""A snapshot part keeping the source's bytes: each kept row's row index in the source file
and the snapshot columns verification reads (the snapshot's identity in its metadata)."""
_CHUNK = 1 << 20
_NO_COPY_RANGE = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def copy_name(index: int) -> str:
    """The name of the copy of the source's ``index``-th file (in the plan's order)."""
    return f"source-{index:04d}.parquet"


def _byte_range(meta: pq.FileMetaData, first: int, end: int) -> tuple[int, int]:
    """Where row groups ``first`` to ``end - 1`` lie in the file: [start, end) (0, 0 for
    none)."""
    starts, ends = [], []
    for g in range(first, end):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset:
                start = min(start, col.dictionary_page_offset)
            starts.append(start)
            ends.append(start + col.total_compressed_size)
    return (min(starts), max(ends)) if starts else (0, 0)


def prepare_copy(source: Path, copy: Path) -> bool:
    """Create ``copy``: sparse, ``source``'s size, its leading magic and everything after its
    last row group (indexes, footer) written, durably. If it exists, whether its tail is still
    ``source``'s (a resumed run must find the same file)."""
    meta = pq.ParquetFile(source).metadata
    size = source.stat().st_size
    _, tail = _byte_range(meta, 0, meta.num_row_groups)
    tail = max(tail, 4)
    with open(source, "rb") as f:
        head = f.read(4)
        f.seek(tail)
        footer = f.read()
    if copy.exists():
        with open(copy, "rb") as f:
            f.seek(tail)
            return copy.stat().st_size == size and f.read() == footer
    with atomic_path(copy) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            os.pwrite(fd, head, 0)
            os.pwrite(fd, footer, tail)
        finally:
            os.close(fd)
    return True


def copy_part(source: Path, copy: Path, first_group: int, end_group: int) -> None:
    """Copy row groups ``first_group`` to ``end_group - 1`` of ``source`` into ``copy`` at the
    same offsets (not fsynced: the task does that with its other files)."""
    start, end = _byte_range(pq.ParquetFile(copy).metadata, first_group, end_group)
    fin, fout = os.open(source, os.O_RDONLY), os.open(copy, os.O_WRONLY)
    try:
        at = start
        while at < end:
            try:
                n = os.copy_file_range(fin, fout, end - at, at, at)
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                n = _pcopy(fin, fout, at, end)
            if n == 0:
                raise OSError(errno.EIO, f"{source}: ends at byte {at}, before {end}")
            at += n
    finally:
        os.close(fin)
        os.close(fout)


def _pcopy(fin: int, fout: int, at: int, end: int) -> int:
    """Copy bytes [at, end) with pread and pwrite; how many were copied."""
    done = at
    while done < end:
        data = os.pread(fin, min(_CHUNK, end - done), done)
        if not data:
            break
        done += os.pwrite(fout, data, done)
    return done - at
