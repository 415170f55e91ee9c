"""The fast path of the JSON lines reader: polars on a chunk, provenance from each line's tail.

Polars is lenient or lossy in a few corners, so a line goes to the slow path
(:mod:`dualmem_bulk.sources.jsonl.line`) when polars fails on it or when its result is suspect:
a required value is null (missing, null or mistyped); a string value looks like a stringified
number/bool/array/object (polars turns ``"id": 5`` into ``"5"``); a timestamp does not parse; a
``\\u`` surrogate escape is present (polars turns a lone one into NUL); a zero may have been
written as the integer ``-0`` (polars reads it as +0.0, serde as -0.0); or
``embedding_provenance`` is not the last key.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.schema import EPISODE_TYPE, PROVENANCE_TYPE
from dualmem_bulk.sources.jsonl.fields import (
    F32_FIELDS,
    LOOSE_SCHEMA,
    TIME_FIELDS,
    WHITESPACE,
    mask,
)
from dualmem_bulk.sources.jsonl.line import DECODER, BadLine, provenance
from dualmem_bulk.timefmt import parse_rfc3339_lenient

__all__ = ["fast_candidates", "fast_rows"]

_PROV_KEY = b'"embedding_provenance"'
_NULL_TAIL = b'"embedding_provenance":null}'
_MINUS_ZERO = re.compile(rb"[\[,:]\s*-0\s*[,\]}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LOOKS_STRINGIFIED = r"(?s)^(-?[0-9][0-9.eE+-]*|true|false|\[.*\]|\{.*\})$"
_REQUIRED = ("id", "embedding", *F32_FIELDS, *TIME_FIELDS, "access_count")
_POLARS_SCHEMA: dict[str, Any] = {
    "id": pl.String, "embedding": pl.List(pl.Float64), "activation": pl.Float64,
    "confidence": pl.Float64, "last_access": pl.String, "access_count": pl.UInt64,
    "created_at": pl.String, "decay_rate": pl.Float64, "content": pl.String,
}


def _tail_provenance(raw: bytes) -> dict[str, Any] | None:
    """The top-level provenance when it is the line's last key, else ``BadLine`` (go slow).

    In a line that is valid JSON (polars parsed it), an unescaped ``"embedding_provenance"``
    followed by ``:`` is a key, and a value followed only by ``}`` closes the top-level object.
    """
    if raw.endswith(_NULL_TAIL) and raw[-len(_NULL_TAIL) - 1:-len(_NULL_TAIL)] in (b",", b"{"):
        return None  # serde's compact form of an absent provenance: most rows
    pos = raw.rfind(_PROV_KEY)
    if pos <= 0 or raw[pos - 1] not in b",{ \t\r\n":
        raise BadLine("no unescaped provenance key")
    tail = raw[pos + len(_PROV_KEY):].decode("utf-8").lstrip(" \t\r\n")
    if tail[:1] != ":":
        raise BadLine("not a key")
    body = tail[1:].lstrip(" \t\r\n")
    try:
        value, end = DECODER.raw_decode(body)
    except ValueError as exc:
        raise BadLine(str(exc)) from None
    if body[end:].strip(" \t\r\n") != "}":
        raise BadLine("provenance is not the last key")
    return provenance(value)


def _polars(lines: list[bytes], lo: int, hi: int, frames: list[tuple[int, pl.DataFrame]],
            failed: list[int]) -> None:
    """Parse ``lines[lo:hi]``; on an error, halve until the failing lines stand alone."""
    try:
        df = pl.read_ndjson(io.BytesIO(b"\n".join(lines[lo:hi])), schema=_POLARS_SCHEMA,
                            ignore_errors=True)
        if df.height == hi - lo:
            frames.append((lo, df))
            return
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        pass
    if hi - lo == 1:
        failed.append(lo)
        return
    mid = (lo + hi) // 2
    _polars(lines, lo, mid, frames, failed)
    _polars(lines, mid, hi, frames, failed)


def _col(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _f32(arr: pa.Array) -> pa.Array:
    """f64 -> f32 as Rust's ``as f32`` (round to nearest, overflow to infinity); nulls kept."""
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.float32)
    return pa.array(values, mask=mask(arr.is_null()) if arr.null_count else None)


def _suspects(table: pa.Table, lines: list[bytes]) -> tuple[np.ndarray, list[Any]]:
    """Rows the slow path must judge (see the module docstring), and each row's provenance."""
    bad = np.zeros(table.num_rows, dtype=bool)
    for name in _REQUIRED:
        bad |= mask(_col(table, name).is_null())
    for name in ("id", "content", *TIME_FIELDS):
        bad |= mask(pc.match_substring_regex(_col(table, name), _LOOKS_STRINGIFIED)
                     .fill_null(False))
    emb = _col(table, "embedding")
    flat = pc.list_flatten(emb)
    ends = np.cumsum(pc.list_value_length(emb).fill_null(0).to_numpy(zero_copy_only=False))
    if flat.null_count:
        bad[np.searchsorted(ends, np.flatnonzero(mask(flat.is_null())), side="right")] = True
    values = np.asarray(flat.to_numpy(zero_copy_only=False))
    zeros = np.flatnonzero(values == 0)
    zero = np.zeros(table.num_rows, dtype=bool)
    zero[np.searchsorted(ends, zeros[~np.signbit(values[zeros])], side="right")] = True
    for name in F32_FIELDS:
        zero |= mask(pc.equal(_col(table, name), 0).fill_null(False))
    flags, provenance = bad.tolist(), []
    for k, (raw, maybe_minus_zero) in enumerate(zip(lines, zero.tolist(), strict=True)):
        if (maybe_minus_zero and _MINUS_ZERO.search(raw)) or (
                b"\\u" in raw and _SURROGATE_ESCAPE.search(raw)):
            flags[k] = True
        try:
            provenance.append(None if flags[k] else _tail_provenance(raw))
        except BadLine:
            flags[k] = True
            provenance.append(None)
    return np.array(flags, dtype=bool), provenance


def fast_rows(lines: list[bytes], rows: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """Polars-parsed rows as a loose batch, and the mask of lines the slow path must judge."""
    frames: list[tuple[int, pl.DataFrame]] = []
    failed: list[int] = []
    if lines:
        _polars(lines, 0, len(lines), frames, failed)
    suspect = np.zeros(len(lines), dtype=bool)
    suspect[failed] = True
    if not frames:
        return pa.RecordBatch.from_pylist([], schema=LOOSE_SCHEMA), suspect
    frames.sort(key=lambda f: f[0])
    order = np.concatenate([np.arange(lo, lo + df.height, dtype=np.int64) for lo, df in frames])
    table = pl.concat([df for _, df in frames]).to_arrow()
    n = table.num_rows
    bad, provenance = _suspects(table, [lines[i] for i in order])
    times = {}
    for name in TIME_FIELDS:
        times[name], bad_time = parse_rfc3339_lenient(_col(table, name))
        bad |= bad_time
    emb = _col(table, "embedding")
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(pc.list_value_length(emb).fill_null(0).to_numpy(zero_copy_only=False),
              out=offsets[1:])
    batch = pa.RecordBatch.from_arrays([
        _col(table, "id").cast(pa.utf8()),
        pa.ListArray.from_arrays(pa.array(offsets), _f32(pc.list_flatten(emb))),
        _f32(_col(table, "activation")),
        _f32(_col(table, "confidence")),
        times["last_access"],
        _col(table, "access_count"),
        times["created_at"],
        _f32(_col(table, "decay_rate")),
        _col(table, "content").cast(pa.utf8()),
        pa.array(provenance, PROVENANCE_TYPE),
        pa.nulls(n, pa.utf8()),
        pa.nulls(n, EPISODE_TYPE),
        pa.array(rows[order], pa.int64()),
    ], schema=LOOSE_SCHEMA)
    suspect[order[bad]] = True
    return (batch.filter(pa.array(~bad)) if bad.any() else batch), suspect


def fast_candidates(lines: list[bytes | None]) -> list[int]:
    """Lines worth handing to polars: one object by its ends, and valid UTF-8 (an invalid line
    would fail polars' whole chunk)."""
    return [i for i, raw in enumerate(lines) if raw is not None
            and raw.lstrip(WHITESPACE)[:1] == b"{" and raw.rstrip(WHITESPACE)[-1:] == b"}"
            and (raw.isascii() or _is_utf8(raw))]


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
