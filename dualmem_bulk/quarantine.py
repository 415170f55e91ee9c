"""What the quarantine says about a rejected row: a stable reason code per kind of reason (the
text may change, the codes do not), and the row rendered as its source had it, so a fixed row
can be fed back.

Codes are found from the reason text by the table below, first match wins; a row with several
reasons (joined by ``"; "``) has several codes (joined by ``";"`` in the ``reason_code`` column,
each counted once in the report's ``quarantine_codes``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dualmem_bulk.timefmt import format_rfc3339, parse_rfc3339

__all__ = ["REASON_CODES", "reason_codes", "render_record", "source_table"]

REASON_CODES: tuple[tuple[str, str], ...] = (
    # Engram WAL records (the reason starts with the file and the record's offset)
    (r"record at offset \d+ \(sequence \d+\): \w+ '.*' is not an RFC 3339", "bad_timestamp"),
    (r"record at offset \d+ \(sequence \d+\):", "undecodable_record"),
    # the validator, any source
    (r"^duplicate id\b", "duplicate_id"),
    (r"^id is empty$", "empty_id"),
    (r"^embedding has \d+ values, expected \d+$", "bad_embedding_length"),
    (r"^embedding holds null values$|^embedding\[\d+\] is null", "null_in_embedding"),
    (r"^embedding_provenance\.[\w.]+ (is null|holds a null value)", "bad_provenance"),
    (r"^\w+ is outside the timestamp\[ns\] range", "timestamp_out_of_range"),
    (r"^\w+ is .*, outside \[0, 1\]$", "out_of_unit_range"),
    (r"^\w+ is null$", "null_field"),
    (r"not valid UTF-8", "not_utf8"),
    # the JSON lines reader
    (r"^not valid JSON\b", "not_json"),
    (r"^line is not a JSON object", "not_json_object"),
    (r"^line is longer than", "line_too_long"),
    (r"^duplicate key\b", "duplicate_key"),
    (r"^missing required key\b", "missing_key"),
    (r": not an RFC 3339 timestamp", "bad_timestamp"),
    (r": number out of range", "number_out_of_range"),
    (r": expected (a|an) ", "wrong_json_type"),
)
"""(pattern on one reason, code), in the order tried; ``other`` when none matches."""

_PATTERNS = tuple((re.compile(p), code) for p, code in REASON_CODES)


def reason_codes(reason: str) -> list[str]:
    """The distinct codes of a reason text (one per ``"; "``-separated reason), in order."""
    codes: list[str] = []
    for part in reason.split("; "):
        code = next((c for p, c in _PATTERNS if p.search(part)), "other")
        if code not in codes:
            codes.append(code)
    return codes


@functools.lru_cache(maxsize=64)
def _is_jsonl(source: str) -> bool:
    """Whether a source file is JSON lines (what detection sniffs: not Parquet's magic)."""
    try:
        with Path(source).open("rb") as fh:
            return fh.read(4) != b"PAR1"
    except OSError:
        return False


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _stamp(col: pa.Array) -> Any:
    """One timestamp as RFC 3339 (chrono's form), or its integer ticks when nanoseconds cannot
    hold it."""
    try:
        return format_rfc3339(col)[0].as_py()
    except (pa.ArrowInvalid, OverflowError):
        return col.cast(pa.int64())[0].as_py()


def _f32(value: Any) -> Any:
    """A float32 as its shortest round-trip decimal (serde's form); NaN and infinities as null."""
    if value is None or not np.isfinite(value):
        return None
    return json.loads(str(np.float32(value)))


def _serde_provenance(p: dict[str, Any] | None) -> dict[str, Any] | None:
    if p is None:
        return None
    meta = p.get("metadata")
    return {"model": {"name": p.get("model_name"), "version": p.get("model_version"),
                      "dimension": p.get("dimension")},
            "language": p.get("language"), "created_at": p.get("created_at"),
            "quality_score": _f32(p.get("quality_score")),
            "metadata": None if meta is None else {k: v for k, v in meta}}


def render_record(row: pa.RecordBatch, source: str, value: Any) -> str:
    """One rejected row (a one-row batch) as JSON text in its source's representation.

    From a JSON lines source: a serde ``Memory`` line (RFC 3339 timestamps, float32 values as
    their shortest decimal, provenance as serde nests it) that the reader takes back once fixed.
    From any other source: the row's columns under their own names with their own values
    (timestamps as RFC 3339). ``value(col, i)`` reads one value (bytes when not UTF-8).
    """
    out: dict[str, Any] = {}
    jsonl = _is_jsonl(source)
    for name, col in zip(row.schema.names, row.columns, strict=True):
        if name.startswith("_"):
            continue
        if pa.types.is_timestamp(col.type):
            out[name] = _stamp(col)
            continue
        item = _plain(value(col, 0))
        if jsonl and name in ("space", "episode") and item is None:
            continue  # not part of a serde Memory
        if jsonl and name == "embedding" and item is not None:
            item = [_f32(v) for v in item]
        elif jsonl and name in ("activation", "confidence", "decay_rate"):
            item = _f32(item)
        elif jsonl and name == "embedding_provenance":
            item = _serde_provenance(item)
        out[name] = item
    return json.dumps(out, default=str, ensure_ascii=False)


def _column(values: list[Any], kind: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(kind) and all(isinstance(v, str) or v is None for v in values):
        return parse_rfc3339(values).cast(kind)
    if pa.types.is_timestamp(kind):
        return pa.array(values, pa.int64()).cast(kind)
    if pa.types.is_map(kind):
        values = [None if v is None else [tuple(pair) for pair in v] for v in values]
    return pa.array(values, kind)


def source_table(records: Iterable[str], schema: pa.Schema) -> pa.Table:
    """Quarantined ``record`` texts of a Parquet source (fixed by the operator) as a table of
    the source's own ``schema`` (``pyarrow.parquet.read_schema`` of the ``source`` file the
    quarantine names), ready to be written and converted: timestamps parsed back from RFC 3339,
    every value cast to the source's type. Raises ``pyarrow.ArrowInvalid`` (or ``ValueError``)
    when a value still does not fit its type."""
    rows = [json.loads(r) for r in records]
    return pa.table({f.name: _column([row.get(f.name) for row in rows], f.type)
                     for f in schema}, schema=schema)
