"""The authoritative slow path of the JSON lines reader: stdlib ``json`` on one line alone.

Judges a line as serde would: duplicate keys, non-finite numbers, wrong types, unpaired
surrogates and bad timestamps are refused, each with a reason for the quarantine.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from dualmem_bulk.sources.jsonl.fields import F32_FIELDS, TIME_FIELDS
from dualmem_bulk.timefmt import parse_rfc3339_lenient

__all__ = ["DECODER", "BadLine", "decode_line", "line_id", "provenance", "raw_record"]


class BadLine(Exception):
    """A line that is not a valid serde Memory; the message is the quarantine reason."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadLine(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _no_constant(name: str) -> None:
    raise BadLine(f"not valid JSON: {name} is not a JSON number")


def _int_or_minus_zero(text: str) -> int | float:
    """serde_json reads the integer ``-0`` as the float -0.0; keep that for f32 fields."""
    return -0.0 if text == "-0" else int(text)


DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
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
        raise BadLine(f"missing required key {where}{key!r}")
    if not isinstance(value, str):
        raise BadLine(f"{where}{key}: expected a string, found {_found(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadLine(f"{where}{key} not valid UTF-8 (invalid bytes or an unpaired \\u surrogate "
                   "escape)") from None
    return value


def _unsigned(obj: dict[str, Any], key: str, where: str = "") -> int:
    if key not in obj:
        raise BadLine(f"missing required key {where}{key!r}")
    value = obj[key]
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise BadLine(f"{where}{key}: expected an unsigned 64-bit integer, found {_found(value)}")
    return value


def _number(value: Any, what: str) -> float:
    """A JSON number as serde reads an f32: parsed as f64 (must be finite), then rounded."""
    if type(value) not in (int, float):
        raise BadLine(f"{what}: expected a number, found {_found(value)}")
    try:
        as_f64 = float(value)
    except OverflowError:
        as_f64 = float("inf")
    if not np.isfinite(as_f64):
        raise BadLine(f"{what}: number out of range for f64")
    with np.errstate(over="ignore"):
        return float(np.float32(as_f64))


def _component(value: Any, j: int) -> float:
    if value is None:
        raise BadLine(f"embedding[{j}] is null (serde writes NaN and infinities as null, so the "
                   "value cannot be restored bit-exact)")
    return _number(value, f"embedding[{j}]")


def provenance(value: Any) -> dict[str, Any] | None:
    """serde's ``EmbeddingProvenance`` object as a PROVENANCE_TYPE row, or ``BadLine``."""
    if value is None:
        return None
    where = "embedding_provenance."
    if not isinstance(value, dict):
        raise BadLine(f"embedding_provenance: expected an object or null, found {_found(value)}")
    model = value.get("model")
    if not isinstance(model, dict):
        raise BadLine(f"{where}model: expected an object, found {_found(model)}")
    meta = value.get("metadata")
    if not isinstance(meta, dict):
        raise BadLine(f"{where}metadata: expected an object, found {_found(meta)}")
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
        raise BadLine("embedding_provenance.metadata key not valid UTF-8") from None
    return key


def decode_line(raw: bytes) -> dict[str, Any]:
    """One line as a loose-schema row (timestamps as int ns), or ``BadLine`` saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")  # judged per field by _text below
    try:
        obj = DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise BadLine(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadLine(f"line is not a JSON object (found {_found(obj).split()[0]})")
    row: dict[str, Any] = {"id": _text(obj, "id")}
    emb = obj.get("embedding")
    if not isinstance(emb, list):
        raise BadLine("missing required key 'embedding'" if "embedding" not in obj else
                   f"embedding: expected an array of numbers, found {_found(emb)}")
    row["embedding"] = [_component(v, j) for j, v in enumerate(emb)]
    for name in (*F32_FIELDS, *TIME_FIELDS, "access_count"):
        if name not in obj:
            raise BadLine(f"missing required key {name!r}")
    for name in F32_FIELDS:
        row[name] = _number(obj[name], name)
    for name in TIME_FIELDS:
        stamp = _text(obj, name)
        parsed, bad = parse_rfc3339_lenient([stamp])
        if bad[0]:
            raise BadLine(f"{name}: not an RFC 3339 timestamp in the int64 ns range: {stamp!r}")
        row[name] = parsed.cast(pa.int64())[0].as_py()
    row["access_count"] = _unsigned(obj, "access_count")
    row["content"] = _text(obj, "content", optional=True)
    row["embedding_provenance"] = provenance(obj.get("embedding_provenance"))
    return row


def line_id(raw: bytes) -> str | None:
    """The line's id for the quarantine, when the line has a valid string id."""
    try:
        ident = json.loads(raw.decode("utf-8", "surrogateescape")).get("id")
        return ident if isinstance(ident, str) and ident.encode("utf-8") else None
    except (ValueError, AttributeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None


def raw_record(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()
