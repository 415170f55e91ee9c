"""Write Memory JSON lines: LEGACY_SCHEMA batches as serde ``Memory`` objects, one a line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk._fs import atomic_path
from dualmem_bulk.sources.jsonl.fields import F32_FIELDS, mask
from dualmem_bulk.timefmt import format_rfc3339

__all__ = ["write_jsonl"]


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
    present = mask(prov.is_valid())
    q_values = np.asarray(quality.fill_null(0).to_numpy(zero_copy_only=False))
    q_rows = np.flatnonzero(present & mask(quality.is_valid()))
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
    for name in F32_FIELDS:
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
        row = int(np.flatnonzero(mask(lines.is_null()))[0])
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
