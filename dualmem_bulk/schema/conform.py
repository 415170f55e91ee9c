"""A source's schema against the legacy Memory schema: :func:`check_schema` refuses a column
of the wrong type (a source problem, named by file and column), :func:`conform` casts valid
loose rows into the exact legacy schema the snapshot and the checksums use. The row-by-row
judgement is :mod:`dualmem_bulk.sources.validate`'s."""

from __future__ import annotations

import pyarrow as pa

from dualmem_bulk.errors import SchemaMismatch
from dualmem_bulk.schema import DIM, EMBEDDING_TYPE, LEGACY_SCHEMA

__all__ = ["check_schema", "conform"]


def check_schema(schema: pa.Schema, source: str) -> None:
    """Raise :class:`SchemaMismatch` unless ``schema`` can carry legacy Memory rows."""
    names = set(schema.names)
    for field in LEGACY_SCHEMA:
        if field.name not in names:
            if not field.nullable:
                raise SchemaMismatch(source, field.name, str(field.type), "no such column")
            continue
        found = schema.field(field.name).type
        if not _type_ok(field.name, found, field.type):
            raise SchemaMismatch(source, field.name, str(field.type), str(found))


def _type_ok(name: str, found: pa.DataType, expected: pa.DataType) -> bool:
    if name == "embedding":
        return bool(
            (pa.types.is_list(found) or pa.types.is_large_list(found)
             or pa.types.is_fixed_size_list(found))
            and found.value_type == pa.float32()
        )
    if name in ("id", "content", "space"):
        return bool(pa.types.is_string(found) or pa.types.is_large_string(found)
                    or pa.types.is_binary(found) or pa.types.is_large_binary(found))
    if pa.types.is_timestamp(expected):
        return bool(pa.types.is_timestamp(found) and found.tz in (None, "UTC", "Z", "+00:00"))
    if name == "access_count":
        return bool(pa.types.is_unsigned_integer(found))
    if pa.types.is_struct(expected):  # every field present: a struct cast matches by name
        return bool(pa.types.is_null(found) or (pa.types.is_struct(found) and {
            f.name for f in expected} <= {f.name for f in found}))
    return bool(found == expected)


def conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Valid loose legacy rows in the exact legacy schema (the snapshot's and the checksum's
    types): missing nullable columns as nulls, embeddings as fixed-size lists, text as utf8."""
    columns = []
    for field in LEGACY_SCHEMA:
        if field.name not in batch.schema.names:
            columns.append(pa.nulls(batch.num_rows, field.type))
            continue
        col = batch.column(field.name)
        if field.name == "embedding" and not pa.types.is_fixed_size_list(col.type):
            col = pa.FixedSizeListArray.from_arrays(col.flatten(), DIM)
        elif field.name in ("id", "content", "space") and not pa.types.is_string(col.type):
            col = col.cast(pa.large_utf8())
        columns.append(col.cast(EMBEDDING_TYPE if field.name == "embedding" else field.type))
    return pa.RecordBatch.from_arrays(columns, schema=LEGACY_SCHEMA)
