"""Read Memory JSON lines in bounded batches: one serde ``Memory`` object per line.

Reading has two paths. The fast path (:mod:`dualmem_bulk.sources.jsonl.fast`) hands a chunk of
lines to polars' NDJSON parser (the 768-float embeddings are what costs; polars parses them
natively, f64 then cast to f32 as serde_json does) and extracts the small
``embedding_provenance`` object per line with the stdlib decoder (polars can only read its
free-form ``metadata`` as a struct of the keys seen, and re-serialises it without escaping
keys). A line polars fails on, or whose result is suspect, goes to the authoritative slow path
(:mod:`dualmem_bulk.sources.jsonl.line`: stdlib ``json`` on that line alone).

Duplicate keys are rejected on the slow path (as serde does) but not detected on the fast path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.errors import SourceError
from dualmem_bulk.sources import ROW_COLUMN, Rejected, SourceBatch
from dualmem_bulk.sources.jsonl.fast import fast_candidates, fast_rows
from dualmem_bulk.sources.jsonl.fields import LOOSE_SCHEMA, WHITESPACE
from dualmem_bulk.sources.jsonl.line import BadLine, decode_line, line_id, raw_record

__all__ = ["read_jsonl"]

_MAX_LINE = 16 << 20
"""Longest line read (a Memory is ~10 KB plus content of at most ~100 KB); longer is rejected."""
_CHUNK_LINES, _CHUNK_BYTES = 1024, 64 << 20
"""Lines handed to polars at once: bounds the raw text held in memory."""


def _chunk(source: str, rows: list[int], lines: list[bytes | None]) -> SourceBatch:
    """Decode one chunk of non-blank lines: fast path first, then each suspect line alone."""
    rejected: list[Rejected] = []
    fast_idx = fast_candidates(lines)
    fast_lines = [lines[i] or b"" for i in fast_idx]
    row_arr = np.asarray(rows, dtype=np.int64)
    batch, suspect = fast_rows(fast_lines, row_arr[fast_idx])
    slow = sorted(set(range(len(lines))) - set(fast_idx)
                  | {fast_idx[j] for j in np.flatnonzero(suspect)})
    slow_rows = []
    for i in slow:
        raw = lines[i]
        if raw is None:
            rejected.append(Rejected(source, rows[i], None,
                                     f"line is longer than {_MAX_LINE >> 20} MiB"))
            continue
        try:
            row = decode_line(raw)
        except BadLine as why:
            rejected.append(Rejected(source, rows[i], line_id(raw), str(why), raw_record(raw)))
            continue
        row[ROW_COLUMN] = rows[i]
        slow_rows.append(row)
    if slow_rows:
        slow_batch = pa.RecordBatch.from_pylist(slow_rows, schema=LOOSE_SCHEMA)
        merged = pa.concat_batches([batch, slow_batch])
        batch = merged.take(pc.sort_indices(merged.column(ROW_COLUMN)))
    return SourceBatch(source, batch, tuple(rejected))


def _lines(fh: IO[bytes], index: int = 0, size: int | None = None
           ) -> Iterator[tuple[int, bytes | None]]:
    """``(index, line)`` per ``\\n``-separated line, read in 4 MiB blocks (at most ``size``
    bytes), counting from ``index``; ``None`` stands for a line longer than _MAX_LINE (its bytes
    are skipped, not held)."""
    tail, overlong = b"", False
    left = 1 << 62 if size is None else size
    while left > 0 and (block := fh.read(min(4 << 20, left))):
        left -= len(block)
        lines = block.split(b"\n")
        lines[0] = tail + lines[0]
        tail = lines.pop()
        for line in lines:
            yield index, None if overlong or len(line) > _MAX_LINE else line
            index, overlong = index + 1, False
        if len(tail) > _MAX_LINE:
            tail, overlong = b"", True
    if tail or overlong:
        yield index, None if overlong else tail


def _check_first(path: Path, index: int, raw: bytes | None) -> None:
    """A file whose first non-blank line is not a JSON object is not JSON lines at all."""
    if raw is not None:
        try:
            if isinstance(json.loads(raw.decode("utf-8", "surrogateescape")), dict):
                return
        except (ValueError, RecursionError):
            pass
    raise SourceError(path, f"not Memory JSON lines: line {index + 1} is not a JSON object; "
                            "expected one serde Memory object per line")


def read_jsonl(path: Path, batch_size: int, start: int = 0, end: int | None = None,
               first_line: int = 0) -> Iterator[SourceBatch]:
    """Stream a Memory JSON lines file as loose batches covering ``batch_size`` lines each.

    ``_row`` is the 0-based line index (blank lines count but are skipped). Undecodable lines
    come back in ``SourceBatch.rejected`` with the reason and the raw line; a file whose first
    non-blank line is not a JSON object raises :class:`SourceError`. ``start`` and ``end`` (byte
    offsets at line starts) read a part of the file whose first line is ``first_line``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    source = str(path)
    try:
        fh = path.open("rb")
        fh.seek(start)
    except OSError as exc:
        raise SourceError(path, f"cannot read ({exc.strerror})") from exc
    with fh:
        parts: list[SourceBatch] = []
        rows: list[int] = []
        lines: list[bytes | None] = []
        first, taken, size = start == 0, 0, 0
        for index, raw in _lines(fh, first_line, None if end is None else end - start):
            if raw is not None and not raw.strip(WHITESPACE):
                continue
            if first:
                _check_first(path, index, raw)
                first = False
            rows.append(index)
            lines.append(raw)
            size += len(raw or b"")
            if len(lines) in (_CHUNK_LINES, batch_size - taken) or size >= _CHUNK_BYTES:
                parts.append(_chunk(source, rows, lines))
                taken += len(lines)
                rows, lines, size = [], [], 0
                if taken == batch_size:
                    yield _merge(source, parts)
                    parts, taken = [], 0
        if lines:
            parts.append(_chunk(source, rows, lines))
        if parts:
            yield _merge(source, parts)


def _merge(source: str, parts: list[SourceBatch]) -> SourceBatch:
    batch = pa.concat_batches([p.batch for p in parts]) if len(parts) > 1 else parts[0].batch
    return SourceBatch(source, batch, tuple(r for p in parts for r in p.rejected))
