"""What an offline conversion is asked to do: its configuration, apart from the driver that
runs it (the dry run and the CLI build and read it too), and what of its source must not
change between a run and its resumption."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk._fs import source_identity
from dualmem_bulk.engines import Engine
from dualmem_bulk.errors import SourceError
from dualmem_bulk.rundir.files import default_run_dir
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA, fingerprint
from dualmem_bulk.sources.detect import detect_source
from dualmem_bulk.stores import DEFAULT_BATCH_SIZE, TargetFormat

__all__ = ["BYTES_PER_ROW", "OfflineConfig", "changes", "source_files", "source_rows"]


@dataclass(frozen=True, kw_only=True)
class OfflineConfig:
    """What an offline conversion reads, writes and how."""

    source: Path
    """Legacy source: Parquet file or directory, Memory JSON lines, or an Engram data root."""
    target: Path
    """The DualMemoryNode store to create; must not exist yet (unless this run made it)."""
    run_dir: Path | None = None
    """Where the journal, snapshot, quarantine and reports go; default ``TARGET.run``."""
    target_format: TargetFormat = "lance"
    """``lance`` (a Lance dataset) or ``parquet`` (a directory of Parquet files)."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Rows per batch; memory use grows with it, not with the node count."""
    checkpoint_every: int | None = None
    """Commit and checkpoint after at least this many nodes; default: after every batch."""
    strict: bool = False
    """Fail (exit 3) on any invalid row or damaged record, before anything is converted."""
    dry_run: bool = False
    """Validate and estimate only; write nothing."""
    spaces: tuple[str, ...] = ()
    """Memory spaces to read from an Engram data root (default: every space)."""
    restart: bool = False
    """Discard an existing unfinished run in the run directory and start again."""
    workers: int | None = None
    """Worker processes for conversion and verification beside this one (0: none); default:
    one per core but one (up to 8), none below 50,000 nodes. With the Dask engine, the local
    cluster's workers (at least one). The output does not depend on it."""
    engine: Engine = "local"
    """Where the tasks run: ``local`` processes or a ``dask`` cluster; a run can resume on
    either, the output does not depend on it."""
    scheduler: str | None = None
    """Address of an existing Dask scheduler (``tcp://HOST:8786``); default: a local cluster."""
    in_place: bool = False
    """Convert the legacy store at ``source`` (= ``target``) in place; the snapshot keeps the
    original, and rollback restores it until the run is finalized."""

    @property
    def resolved_run_dir(self) -> Path:
        """The run directory actually used."""
        return self.run_dir or default_run_dir(self.target)

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self)
            if f.name not in ("run_dir", "dry_run", "restart", "workers", "engine", "scheduler")
        }
        out["source"] = str(self.source.resolve())
        out["target"] = str(self.target.resolve())
        out["spaces"] = list(self.spaces)
        out["schemas"] = [fingerprint(LEGACY_SCHEMA), fingerprint(DUAL_SCHEMA)]
        return out


BYTES_PER_ROW = {"jsonl": 10_000, "engram-wal": 4_000}
"""About what one node takes in the formats whose rows are only counted by decoding them (the
generator's: a JSON line 10.4 KB, a WAL episode record 4.0 KB, most of it the embedding)."""


def source_rows(config: OfflineConfig) -> int:
    """Rows in a Parquet source (its footers) or a Lance dataset (its manifest), or an estimate
    from the bytes of JSON lines or an Engram data root (:data:`BYTES_PER_ROW`); 0 for a source
    that cannot be read (the run says why). It sizes the default worker pool, nothing else."""
    try:
        kind = detect_source(config.source)
        if kind == "lance":
            return int(lance.dataset(str(config.source)).count_rows())
        if kind == "parquet":
            files = [config.source] if config.source.is_file() else sorted(
                config.source.rglob("*.parquet"))
            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        size = sum(int(file[1]) for file in source_identity(config.source))
        return size // BYTES_PER_ROW[kind]
    except (SourceError, OSError, ValueError, pa.ArrowException):
        return 0


def source_files(config: OfflineConfig) -> list[list[Any]]:
    """The source's files, sizes and mtimes (a resume refuses a changed source). A Lance store
    converted in place leaves out its data files and tags: the run writes its fragments and its
    tag into the store, and anyone else's change to it shows as a new version's manifest."""
    if not config.source.exists():
        return []
    files = source_identity(config.source)
    if config.in_place and (config.source / "_versions").is_dir():
        return [f for f in files if not str(f[0]).startswith(("data/", "_refs/"))]
    return files


def changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two identities, for a refusal to resume."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
