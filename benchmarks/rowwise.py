"""The row-by-row baseline: the seed's migrator design, doing the same work as ``convert``.

One Python dict per row, end to end: stream the source a batch at a time, validate each row,
compute its full canonical checksum (``tests/reference_encoding.py``: every legacy field, as
``convert`` does), derive the node UUID, build the snapshot row and the DualMemoryNode row,
write both (Parquet snapshot, one Lance commit per 16,384 rows), then verify by reading the
target back row by row, recomputing each checksum and matching it against the snapshot's.
Memory stays bounded like ``convert``'s; only the per-row Python differs.
"""

from __future__ import annotations

import math
import sys
import uuid
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_encoding import row_checksum

from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA, SNAPSHOT_SCHEMA

__all__ = ["migrate_row_by_row"]

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "engram:memory-id")
_BATCH = 16_384
_TIMES = ("last_access", "created_at")


def _node_id(ident: str) -> bytes:
    try:
        parsed = uuid.UUID(ident)
        if str(parsed) == ident.lower() and len(ident) == 36:
            return parsed.bytes
    except ValueError:
        pass
    return uuid.uuid5(_NAMESPACE, ident).bytes


def _valid(row: dict[str, Any]) -> bool:
    emb = row["embedding"]
    return (isinstance(row["id"], str) and bool(row["id"]) and emb is not None
            and len(emb) == 768 and all(v is not None for v in emb)
            and all(row[k] is not None for k in ("activation", "confidence", "decay_rate",
                                                 "access_count", *_TIMES))
            and 0.0 <= row["activation"] <= 1.0 and 0.0 <= row["confidence"] <= 1.0)


def _as_ints(table: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    for name in _TIMES:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).cast(pa.int64()))
    return table.to_pylist()  # type: ignore[no-any-return]


def _dual(row: dict[str, Any], checksum: bytes) -> dict[str, Any]:
    return {
        "id": _node_id(row["id"]), "node_type": "Episode", "episode_id": row["id"],
        "strength": row["activation"], "consolidation_score": 0.0, "centroid": None,
        "coherence": None, "instance_count": None, "formation_time": None,
        **{k: row[k] for k in LEGACY_SCHEMA.names if k != "id"}, "checksum": checksum,
    }


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    fields = [pa.field(f.name, pa.int64() if f.name in _TIMES else f.type) for f in schema]
    table = pa.Table.from_pylist(rows, schema=pa.schema(fields))
    return table.cast(schema)


def migrate_row_by_row(source: Path, snapshot: Path, target: Path) -> tuple[int, str]:
    """Migrate ``source`` to a Lance ``target`` row by row; return the nodes verified and the
    target's table digest (the sum of its rows' checksums, as the README defines it), for the
    caller to check against ``convert``'s."""
    seen: set[tuple[str | None, str]] = set()
    snap_rows: list[dict[str, Any]] = []
    dual_rows: list[dict[str, Any]] = []
    commits = 0
    with pq.ParquetWriter(snapshot, SNAPSHOT_SCHEMA) as snap:
        def flush() -> None:
            nonlocal commits
            snap.write_table(_table(snap_rows, SNAPSHOT_SCHEMA))
            lance.write_dataset(_table(dual_rows, DUAL_SCHEMA), target, schema=DUAL_SCHEMA,
                                mode="append" if commits else "create")
            commits += 1
            snap_rows.clear()
            dual_rows.clear()

        for batch in pq.ParquetFile(source).iter_batches(batch_size=_BATCH):
            for row in _as_ints(batch):
                key = (row.get("space"), row["id"])
                if not _valid(row) or key in seen:
                    continue
                seen.add(key)
                checksum = row_checksum({**row, "embedding": np.asarray(row["embedding"],
                                                                        dtype=np.float32)})
                snap_rows.append({**row, "checksum": checksum})
                dual_rows.append(_dual(row, checksum))
            if len(dual_rows) >= _BATCH:
                flush()
        if dual_rows or not commits:
            flush()
    expected = {(r["space"], r["id"]): r["checksum"]
                for b in pq.ParquetFile(snapshot).iter_batches(columns=["space", "id", "checksum"])
                for r in b.to_pylist()}
    verified, total = 0, 0
    for batch in lance.dataset(target).to_batches(batch_size=4096):
        for row in _as_ints(batch):
            legacy = {k: row[k] for k in LEGACY_SCHEMA.names if k != "id"}
            legacy["id"] = row["episode_id"]
            legacy["embedding"] = np.asarray(legacy["embedding"], dtype=np.float32)
            recomputed = row_checksum(legacy)
            if recomputed != row["checksum"] or expected.get((row["space"], legacy["id"])) != \
                    recomputed or not math.isclose(row["strength"], row["activation"]):
                raise AssertionError(f"row {legacy['id']!r} differs")
            verified += 1
            total += int.from_bytes(recomputed, "little")
    if verified != len(expected):
        raise AssertionError(f"{verified} nodes verified, {len(expected)} in the snapshot")
    digest = (total % (1 << 256)).to_bytes(32, "little").hex()
    return verified, digest
