"""Memory JSON lines: one serde ``Memory`` object per line, read and written in bounded batches.

Reading has two paths. The fast path hands a chunk of lines to polars' NDJSON parser (the
768-float embeddings are what costs; polars parses them natively, f64 then cast to f32 as
serde_json does) and extracts the small ``embedding_provenance`` object per line with the stdlib
decoder (polars can only read its free-form ``metadata`` as a struct of the keys seen, and
re-serialises it without escaping keys). Polars is lenient or lossy in a few corners, so a line
goes to the authoritative slow path (stdlib ``json`` on that line alone) when polars fails on it
or when its result is suspect: a required value is null (missing, null or mistyped); a string
value looks like a stringified number/bool/array/object (polars turns ``"id": 5`` into ``"5"``);
a timestamp does not parse; a ``\\u`` surrogate escape is present (polars turns a lone one into
NUL); a zero may have been written as the integer ``-0`` (polars reads it as +0.0, serde as
-0.0); or ``embedding_provenance`` is not the last key.

Duplicate keys are rejected on the slow path (as serde does) but not detected on the fast path.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk._fs import atomic_path
from dualmem_bulk.errors import SourceError
from dualmem_bulk.schema import EPISODE_TYPE, PROVENANCE_TYPE, TIMESTAMP_TYPE
from dualmem_bulk.sources import ROW_COLUMN, Rejected, SourceBatch
from dualmem_bulk.timefmt import format_rfc3339, parse_rfc3339_lenient

__all__ = ["read_jsonl", "write_jsonl"]

_MAX_LINE = 16 << 20
"""Longest line read (a Memory is ~10 KB plus content of at most ~100 KB); longer is rejected."""
_CHUNK_LINES, _CHUNK_BYTES = 1024, 64 << 20
"""Lines handed to polars at once: bounds the raw text held in memory."""
_WS = b" \t\r\n"
_PROV_KEY = b'"embedding_provenance"'
_NULL_TAIL = b'"embedding_provenance":null}'
_MINUS_ZERO = re.compile(rb"[\[,:]\s*-0\s*[,\]}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LOOKS_STRINGIFIED = r"(?s)^(-?[0-9][0-9.eE+-]*|true|false|\[.*\]|\{.*\})$"
_F32 = ("activation", "confidence", "decay_rate")
_TIMES = ("last_access", "created_at")
_REQUIRED = ("id", "embedding", *_F32, *_TIMES, "access_count")
_POLARS_SCHEMA: dict[str, Any] = {
    "id": pl.String, "embedding": pl.List(pl.Float64), "activation": pl.Float64,
    "confidence": pl.Float64, "last_access": pl.String, "access_count": pl.UInt64,
    "created_at": pl.String, "decay_rate": pl.Float64, "content": pl.String,
}
_LOOSE = pa.schema([
    ("id", pa.utf8()), ("embedding", pa.list_(pa.float32())), ("activation", pa.float32()),
    ("confidence", pa.float32()), ("last_access", TIMESTAMP_TYPE), ("access_count", pa.uint64()),
    ("created_at", TIMESTAMP_TYPE), ("decay_rate", pa.float32()), ("content", pa.utf8()),
    ("embedding_provenance", PROVENANCE_TYPE), ("space", pa.utf8()), ("episode", EPISODE_TYPE),
    (ROW_COLUMN, pa.int64()),
])


class _Bad(Exception):
    """A line that is not a valid serde Memory; the message is the quarantine reason."""


# --- the authoritative slow path: stdlib json on one line ----------------------------------

def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Bad(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _no_constant(name: str) -> None:
    raise _Bad(f"not valid JSON: {name} is not a JSON number")


def _int_or_minus_zero(text: str) -> int | float:
    """serde_json reads the integer ``-0`` as the float -0.0; keep that for f32 fields."""
    return -0.0 if text == "-0" else int(text)


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                            parse_int=_int_or_minus_zero)


def _found(value: Any) -> str:
    kind = {type(None): "null", bool: "bool", int: "integer", float: "number", str: "string",
            list: "array", dict: "object"}[type(value)]
    text = json.dumps(value, ensure_ascii=False)[:60]  # invalid UTF-8 (surrogates) escaped:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{kind} {text}{'...' if len(text) >= 60 else ''}"


def _text(obj: dict[str, Any], key: str, where: str = "", optional: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if key not in obj:
        raise _Bad(f"missing required key {where}{key!r}")
    if not isinstance(value, str):
        raise _Bad(f"{where}{key}: expected a string, found {_found(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(f"{where}{key} not valid UTF-8 (invalid bytes or an unpaired \\u surrogate "
                   "escape)") from None
    return value


def _unsigned(obj: dict[str, Any], key: str, where: str = "") -> int:
    if key not in obj:
        raise _Bad(f"missing required key {where}{key!r}")
    value = obj[key]
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise _Bad(f"{where}{key}: expected an unsigned 64-bit integer, found {_found(value)}")
    return value


def _number(value: Any, what: str) -> float:
    """A JSON number as serde reads an f32: parsed as f64 (must be finite), then rounded."""
    if type(value) not in (int, float):
        raise _Bad(f"{what}: expected a number, found {_found(value)}")
    try:
        as_f64 = float(value)
    except OverflowError:
        as_f64 = float("inf")
    if not np.isfinite(as_f64):
        raise _Bad(f"{what}: number out of range for f64")
    with np.errstate(over="ignore"):
        return float(np.float32(as_f64))


def _component(value: Any, j: int) -> float:
    if value is None:
        raise _Bad(f"embedding[{j}] is null (serde writes NaN and infinities as null, so the "
                   "value cannot be restored bit-exact)")
    return _number(value, f"embedding[{j}]")


def _provenance(value: Any) -> dict[str, Any] | None:
    """serde's ``EmbeddingProvenance`` object as a PROVENANCE_TYPE row, or ``_Bad``."""
    if value is None:
        return None
    where = "embedding_provenance."
    if not isinstance(value, dict):
        raise _Bad(f"embedding_provenance: expected an object or null, found {_found(value)}")
    model = value.get("model")
    if not isinstance(model, dict):
        raise _Bad(f"{where}model: expected an object, found {_found(model)}")
    meta = value.get("metadata")
    if not isinstance(meta, dict):
        raise _Bad(f"{where}metadata: expected an object, found {_found(meta)}")
    quality = value.get("quality_score")
    return {
        "model_name": _text(model, "name", where + "model."),
        "model_version": _text(model, "version", where + "model."),
        "dimension": _unsigned(model, "dimension", where + "model."),
        "language": _text(value, "language", where, optional=True),
        "created_at": _unsigned(value, "created_at", where),
        "quality_score": None if quality is None else _number(quality, where + "quality_score"),
        "metadata": [(_key(k), _text(meta, k, where + "metadata.")) for k in meta],
    }


def _key(key: str) -> str:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("embedding_provenance.metadata key not valid UTF-8") from None
    return key


def _decode_line(raw: bytes) -> dict[str, Any]:
    """One line as a loose-schema row (timestamps as int ns), or ``_Bad`` saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")  # judged per field by _text below
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise _Bad(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _Bad(f"line is not a JSON object (found {_found(obj).split()[0]})")
    row: dict[str, Any] = {"id": _text(obj, "id")}
    emb = obj.get("embedding")
    if not isinstance(emb, list):
        raise _Bad("missing required key 'embedding'" if "embedding" not in obj else
                   f"embedding: expected an array of numbers, found {_found(emb)}")
    row["embedding"] = [_component(v, j) for j, v in enumerate(emb)]
    for name in (*_F32, *_TIMES, "access_count"):
        if name not in obj:
            raise _Bad(f"missing required key {name!r}")
    for name in _F32:
        row[name] = _number(obj[name], name)
    for name in _TIMES:
        stamp = _text(obj, name)
        parsed, bad = parse_rfc3339_lenient([stamp])
        if bad[0]:
            raise _Bad(f"{name}: not an RFC 3339 timestamp in the int64 ns range: {stamp!r}")
        row[name] = parsed.cast(pa.int64())[0].as_py()
    row["access_count"] = _unsigned(obj, "access_count")
    row["content"] = _text(obj, "content", optional=True)
    row["embedding_provenance"] = _provenance(obj.get("embedding_provenance"))
    return row


def _line_id(raw: bytes) -> str | None:
    """The line's id for the quarantine, when the line has a valid string id."""
    try:
        ident = json.loads(raw.decode("utf-8", "surrogateescape")).get("id")
        return ident if isinstance(ident, str) and ident.encode("utf-8") else None
    except (ValueError, AttributeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None


def _record(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()


# --- the fast path: polars on a chunk, provenance from each line's tail ----------------------

def _tail_provenance(raw: bytes) -> dict[str, Any] | None:
    """The top-level provenance when it is the line's last key, else ``_Bad`` (go slow).

    In a line that is valid JSON (polars parsed it), an unescaped ``"embedding_provenance"``
    followed by ``:`` is a key, and a value followed only by ``}`` closes the top-level object.
    """
    if raw.endswith(_NULL_TAIL) and raw[-len(_NULL_TAIL) - 1:-len(_NULL_TAIL)] in (b",", b"{"):
        return None  # serde's compact form of an absent provenance: most rows
    pos = raw.rfind(_PROV_KEY)
    if pos <= 0 or raw[pos - 1] not in b",{ \t\r\n":
        raise _Bad("no unescaped provenance key")
    tail = raw[pos + len(_PROV_KEY):].decode("utf-8").lstrip(" \t\r\n")
    if tail[:1] != ":":
        raise _Bad("not a key")
    body = tail[1:].lstrip(" \t\r\n")
    try:
        value, end = _DECODER.raw_decode(body)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    if body[end:].strip(" \t\r\n") != "}":
        raise _Bad("provenance is not the last key")
    return _provenance(value)


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


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def _f32(arr: pa.Array) -> pa.Array:
    """f64 -> f32 as Rust's ``as f32`` (round to nearest, overflow to infinity); nulls kept."""
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.float32)
    return pa.array(values, mask=_mask(arr.is_null()) if arr.null_count else None)


def _suspects(table: pa.Table, lines: list[bytes]) -> tuple[np.ndarray, list[Any]]:
    """Rows the slow path must judge (see the module docstring), and each row's provenance."""
    bad = np.zeros(table.num_rows, dtype=bool)
    for name in _REQUIRED:
        bad |= _mask(_col(table, name).is_null())
    for name in ("id", "content", *_TIMES):
        bad |= _mask(pc.match_substring_regex(_col(table, name), _LOOKS_STRINGIFIED)
                     .fill_null(False))
    emb = _col(table, "embedding")
    flat = pc.list_flatten(emb)
    ends = np.cumsum(pc.list_value_length(emb).fill_null(0).to_numpy(zero_copy_only=False))
    if flat.null_count:
        bad[np.searchsorted(ends, np.flatnonzero(_mask(flat.is_null())), side="right")] = True
    values = np.asarray(flat.to_numpy(zero_copy_only=False))
    zeros = np.flatnonzero(values == 0)
    zero = np.zeros(table.num_rows, dtype=bool)
    zero[np.searchsorted(ends, zeros[~np.signbit(values[zeros])], side="right")] = True
    for name in _F32:
        zero |= _mask(pc.equal(_col(table, name), 0).fill_null(False))
    flags, provenance = bad.tolist(), []
    for k, (raw, maybe_minus_zero) in enumerate(zip(lines, zero.tolist(), strict=True)):
        if (maybe_minus_zero and _MINUS_ZERO.search(raw)) or (
                b"\\u" in raw and _SURROGATE_ESCAPE.search(raw)):
            flags[k] = True
        try:
            provenance.append(None if flags[k] else _tail_provenance(raw))
        except _Bad:
            flags[k] = True
            provenance.append(None)
    return np.array(flags, dtype=bool), provenance


def _fast_rows(lines: list[bytes], rows: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """Polars-parsed rows as a loose batch, and the mask of lines the slow path must judge."""
    frames: list[tuple[int, pl.DataFrame]] = []
    failed: list[int] = []
    if lines:
        _polars(lines, 0, len(lines), frames, failed)
    suspect = np.zeros(len(lines), dtype=bool)
    suspect[failed] = True
    if not frames:
        return pa.RecordBatch.from_pylist([], schema=_LOOSE), suspect
    frames.sort(key=lambda f: f[0])
    order = np.concatenate([np.arange(lo, lo + df.height, dtype=np.int64) for lo, df in frames])
    table = pl.concat([df for _, df in frames]).to_arrow()
    n = table.num_rows
    bad, provenance = _suspects(table, [lines[i] for i in order])
    times = {}
    for name in _TIMES:
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
    ], schema=_LOOSE)
    suspect[order[bad]] = True
    return (batch.filter(pa.array(~bad)) if bad.any() else batch), suspect


def _chunk(source: str, rows: list[int], lines: list[bytes | None]) -> SourceBatch:
    """Decode one chunk of non-blank lines: fast path first, then each suspect line alone."""
    rejected: list[Rejected] = []
    fast_idx = _fast_candidates(lines)
    fast_lines = [lines[i] or b"" for i in fast_idx]
    row_arr = np.asarray(rows, dtype=np.int64)
    batch, suspect = _fast_rows(fast_lines, row_arr[fast_idx])
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
            row = _decode_line(raw)
        except _Bad as why:
            rejected.append(Rejected(source, rows[i], _line_id(raw), str(why), _record(raw)))
            continue
        row[ROW_COLUMN] = rows[i]
        slow_rows.append(row)
    if slow_rows:
        merged = pa.concat_batches([batch, pa.RecordBatch.from_pylist(slow_rows, schema=_LOOSE)])
        batch = merged.take(pc.sort_indices(merged.column(ROW_COLUMN)))
    return SourceBatch(source, batch, tuple(rejected))


def _fast_candidates(lines: list[bytes | None]) -> list[int]:
    """Lines worth handing to polars: one object by its ends, and valid UTF-8 (an invalid line
    would fail polars' whole chunk)."""
    return [i for i, raw in enumerate(lines) if raw is not None
            and raw.lstrip(_WS)[:1] == b"{" and raw.rstrip(_WS)[-1:] == b"}"
            and (raw.isascii() or _is_utf8(raw))]


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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
            if raw is not None and not raw.strip(_WS):
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


# --- the writer ------------------------------------------------------------------------------

def _f32_json(values: np.ndarray) -> list[str]:
    """Finite float32 values as their shortest round-trip decimal, serde style (``1.0``,
    ``-0.0``, ``1e-7``). Polars formats floats ~2.5x faster than pyarrow's cast and, unlike it,
    keeps ``.0`` on integral values (so ``-0.0`` keeps its sign in every JSON reader)."""
    return pl.Series(values, dtype=pl.Float32).cast(pl.String).to_list()


def _unwritable(ids: pa.Array, row: int, what: str, value: float) -> ValueError:
    return ValueError(
        f"row {row} (id {ids[row].as_py()!r}): {what} is {value}; JSON cannot carry NaN or "
        "infinities (serde writes null), so this row cannot be written as JSON lines"
    )


def _check_finite(values: np.ndarray, what: str, ids: pa.Array, rows: np.ndarray) -> None:
    """Raise for the first non-finite value; ``rows`` maps each value to its row."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise _unwritable(ids, int(rows[bad[0]]), what, float(values[bad[0]]))


def _provenance_json(prov: pa.Array, ids: pa.Array) -> list[str]:
    quality = pc.struct_field(prov, "quality_score")
    present = _mask(prov.is_valid())
    q_values = np.asarray(quality.fill_null(0).to_numpy(zero_copy_only=False))
    q_rows = np.flatnonzero(present & _mask(quality.is_valid()))
    _check_finite(q_values[q_rows], "embedding_provenance.quality_score", ids, q_rows)
    q_text = _f32_json(q_values)
    out = []
    for i, p in enumerate(prov.to_pylist()):
        if p is None:
            out.append("null")
            continue
        if None in (p["model_name"], p["model_version"], p["dimension"], p["created_at"],
                    p["metadata"]):
            raise ValueError(f"row {i} (id {ids[i].as_py()!r}): embedding_provenance has a null "
                             "required field; serde cannot write it")
        meta = ",".join(f"{_js(k)}:{_js(v)}" for k, v in p["metadata"])
        out.append(
            f'{{"model":{{"name":{_js(p["model_name"])},"version":{_js(p["model_version"])},'
            f'"dimension":{p["dimension"]}}},"language":{_js(p["language"])},'
            f'"created_at":{p["created_at"]},'
            f'"quality_score":{"null" if p["quality_score"] is None else q_text[i]},'
            f'"metadata":{{{meta}}}}}'
        )
    return out


def _js(value: str | None) -> str:
    """A string as serde_json escapes it (same escapes as Python's, UTF-8 kept as is)."""
    return json.dumps(value, ensure_ascii=False)


def _serialize(batch: pa.RecordBatch) -> memoryview:
    """One LEGACY_SCHEMA batch as serde Memory JSON lines, assembled column-wise."""
    n = batch.num_rows
    ids = batch.column("id")
    emb = batch.column("embedding")
    values = np.asarray(pc.list_flatten(emb).to_numpy(zero_copy_only=False), dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = pc.list_parent_indices(emb)[int(bad[0])].as_py()
        first = int(pc.sum(pc.list_value_length(emb.slice(0, row))).as_py() or 0)
        raise _unwritable(ids, row, f"embedding[{bad[0] - first}]", float(values[bad[0]]))
    floats = {}
    for name in _F32:
        col = np.asarray(batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float32)
        _check_finite(col, name, ids, np.arange(n))
        floats[name] = pa.array(_f32_json(col))
    embedding = pl.from_arrow(emb).cast(pl.List(pl.String)).list.join(",")  # type: ignore[union-attr]
    content = batch.column("content").to_pylist()
    pieces = [
        '{"id":', pa.array([_js(v) for v in ids.to_pylist()]),
        ',"embedding":[',
        embedding.to_arrow(),
        '],"activation":', floats["activation"], ',"confidence":', floats["confidence"],
        ',"last_access":"', format_rfc3339(batch.column("last_access")),
        '","access_count":', pc.cast(batch.column("access_count"), pa.utf8()),
        ',"created_at":"', format_rfc3339(batch.column("created_at")),
        '","decay_rate":', floats["decay_rate"],
        ',"content":', pa.array(["null" if v is None else _js(v) for v in content]),
        ',"embedding_provenance":',
        pa.array(_provenance_json(batch.column("embedding_provenance"), ids)), "}\n",
    ]
    args = [pa.scalar(p, pa.large_utf8()) if isinstance(p, str) else p.cast(pa.large_utf8())
            for p in pieces]
    lines = pc.binary_join_element_wise(*args, pa.scalar("", pa.large_utf8()))
    if lines.null_count:
        row = int(np.flatnonzero(_mask(lines.is_null()))[0])
        raise ValueError(f"row {row} (id {ids[row].as_py()!r}): a required field is null")
    start, end = np.frombuffer(lines.buffers()[1], dtype=np.int64)[[lines.offset,
                                                                    lines.offset + n]]
    return memoryview(lines.buffers()[2])[start:end]


def write_jsonl(batches: Iterable[pa.RecordBatch], path: Path) -> int:
    """Write LEGACY_SCHEMA batches as serde Memory JSON lines, atomically; return rows written.

    Timestamps as chrono writes them, f32 values as their shortest round-trip decimal. ``space``
    and ``episode`` are not part of a serde Memory and are not written. A NaN or infinite float
    raises ``ValueError`` naming the row (serde would write null, which cannot be read back).
    """
    rows = 0
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        for batch in batches:
            if batch.num_rows:
                fh.write(_serialize(batch))
                rows += batch.num_rows
    return rows
