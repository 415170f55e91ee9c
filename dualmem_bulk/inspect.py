"""Say what a file or store is: legacy or dual, schema version, node counts by type, digest (an
:class:`~dualmem_bulk.rundir.reports.InspectReport`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk.checksum import TableDigest
from dualmem_bulk.errors import SourceError
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.run.modes import run_status
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.reports import InspectReport
from dualmem_bulk.schema import schema_identity
from dualmem_bulk.sources.scan import scan_source
from dualmem_bulk.stores import DEFAULT_BATCH_SIZE, TargetStore, detect_store

__all__ = ["inspect_path"]


_LISTED = 5
"""Rejected rows a source's description lists (a conversion's quarantine holds them all)."""

def _dual_store(path: Path, progress: Progress) -> dict[str, Any]:
    store = TargetStore(path)
    identity = schema_identity(store.schema)
    kinds: Counter[str] = Counter()
    digest = TableDigest()
    progress.phase("inspect", store.count_rows())
    for batch in store.batches(DEFAULT_BATCH_SIZE, columns=["node_type", "checksum"]):
        kinds.update(batch.column("node_type").cast("string").to_pylist())
        digest += TableDigest.of(batch.column("checksum"))
        progress.advance(batch.num_rows)
    progress.done()
    return {
        "path": str(path),
        "kind": f"dual-store ({store.format})",
        "schema": _identity(identity),
        "nodes": digest.rows,
        "nodes_by_type": dict(sorted(kinds.items())),
        "digest": digest.hex,
        **store.describe(),
    }


def _identity(identity: tuple[str, str] | None) -> str:
    return f"{identity[0]} v{identity[1]}" if identity else "unknown (no schema metadata)"


def _parquet_file(path: Path, progress: Progress) -> dict[str, Any] | None:
    """Snapshot and quarantine files describe themselves; other Parquet is scanned as legacy."""
    handle = _open_parquet(path)
    meta = handle.metadata.metadata or {}
    identity = schema_identity(handle.schema_arrow)
    if b"dualmem.snapshot.digest" in meta:
        return {
            "path": str(path),
            "kind": "snapshot (legacy Memory + checksums)",
            "schema": _identity(identity),
            "nodes": int(meta[b"dualmem.snapshot.rows"]),
            "digest": meta[b"dualmem.snapshot.digest"].decode(),
        }
    if identity and identity[0] == "dualmem.Quarantine":
        table = pq.read_table(path, columns=[c for c in ("reason", "reason_code")
                                             if c in pq.read_schema(path).names])
        codes: Counter[str] = Counter()
        for joined in (table.column("reason_code").to_pylist()
                       if "reason_code" in table.column_names else []):
            codes.update(joined.split(";"))
        return {
            "path": str(path),
            "kind": "quarantine",
            "rows": table.num_rows,
            "codes": dict(codes.most_common()),
            "reasons": dict(Counter(table.column("reason").to_pylist()).most_common(20)),
        }
    return None


def _parts(path: Path, progress: Progress) -> dict[str, Any] | None:
    """A run's snapshot or quarantine directory: its part files described as one."""
    described = [_parquet_file(p, progress) for p in sorted(path.glob("part-*.parquet"))]
    kinds = {d["kind"] for d in described if d is not None}
    if not described or None in described or len(kinds) != 1:
        return None
    parts = [d for d in described if d is not None]
    out: dict[str, Any] = {**parts[0], "path": str(path), "parts": len(parts)}
    if "digest" in out:
        digest = TableDigest()
        for part in parts:
            digest += TableDigest.from_hex(part["nodes"], part["digest"])
        out["nodes"], out["digest"] = digest.rows, digest.hex
    else:
        reasons: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        for part in parts:
            reasons.update(part["reasons"])
            codes.update(part["codes"])
        out["rows"] = sum(part["rows"] for part in parts)
        out["codes"] = dict(codes.most_common())
        out["reasons"] = dict(reasons.most_common(20))
    return out


def inspect_path(path: Path, progress: Progress = NULL_PROGRESS,
                 spaces: tuple[str, ...] = ()) -> InspectReport:
    """Describe ``path``: a run directory, a DualMemoryNode store, a snapshot or a legacy source.

    A legacy source is validated and checksummed (nothing written): ``digest`` is the digest a
    conversion's snapshot of it would have.
    """
    if not path.exists():
        raise SourceError(path, "no such file or directory")
    if Journal.exists(path):
        return InspectReport(str(path), "run directory", status=run_status(path))
    if path.is_dir() and (described := _parts(path, progress)) is not None:
        return InspectReport.of(described)
    if detect_store(path) is not None and _is_dual(path):
        return InspectReport.of(_dual_store(path, progress))
    if path.is_file() and _magic(path) == b"PAR1":
        described = _parquet_file(path, progress)
        if described is not None:
            return InspectReport.of(described)
        if schema_identity(_open_parquet(path).schema_arrow) == ("engram.DualMemoryNode", "1"):
            raise SourceError(path, "a single part of a dual store; inspect its directory")
    scanned = scan_source(path, progress=progress, spaces=spaces)
    info: dict[str, Any] = {
        "path": str(path),
        "kind": f"legacy source ({scanned.source_kind})",
        "schema": "engram.Memory (legacy)",
        "nodes": scanned.nodes_in,
        "valid": scanned.snapshot_rows,
        "quarantined": scanned.quarantined,
        "quarantine_codes": scanned.quarantine_codes,
        "rejected": [f"{r['source']} row {r['row']}: {r['reason']}"
                     for r in scanned.quarantine_sample[:_LISTED]],
        "digest": scanned.snapshot_digest,
    }
    if scanned.source_kind == "engram-wal":
        wal = scanned.source_details
        info["kind"] = "Engram data root (WAL)"
        info["spaces"] = {name: {k: v for k, v in space.items() if k != "files"}
                          for name, space in wal["spaces"].items()}
        info["totals"] = wal["totals"]
        info["damage"] = [line for kind in wal["damage"].values() for line in kind]
    return InspectReport.of(info)


def _open_parquet(path: Path) -> pq.ParquetFile:
    """A Parquet file's reader; a truncated or damaged file is refused as ``convert`` does."""
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(path, f"not a readable Parquet file ({exc})") from exc


def _magic(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(4)


def _is_dual(path: Path) -> bool:
    identity = schema_identity(TargetStore(path).schema)
    return identity is not None and identity[0] == "engram.DualMemoryNode"
