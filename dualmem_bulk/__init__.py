"""dualmem-bulk: migrate Engram ``Memory`` stores to ``DualMemoryNode``, fast and verifiably.

Example:
    >>> from pathlib import Path
    >>> from dualmem_bulk import OfflineConfig, run_offline
    >>> config = OfflineConfig(source=Path("memories.parquet"), target=Path("nodes.lance"))
    >>> config.resolved_run_dir.name
    'nodes.lance.run'
"""

from __future__ import annotations

import os

os.environ.setdefault("LANCE_LOG", "error")  # Lance's native logger reads it once, at load

from dualmem_bulk._version import __version__
from dualmem_bulk.checksum import TableDigest, encode_rows, row_checksums
from dualmem_bulk.compat import CompatibilityAdapter
from dualmem_bulk.convert import node_uuids, to_dual, to_legacy
from dualmem_bulk.errors import DualmemError
from dualmem_bulk.export import export_snapshot, scan_source
from dualmem_bulk.inspect import inspect_path
from dualmem_bulk.offline import OfflineConfig, RunReport, run_offline
from dualmem_bulk.online import OnlineConfig, OnlineReport, run_online
from dualmem_bulk.run.modes import finalize_run, rollback_run, run_status, verify_run
from dualmem_bulk.rundir.reports import FinalizeReport, RollbackReport, VerifyReport
from dualmem_bulk.stores.memory_store import EmbeddingProvenance, Memory, MemoryStore

__all__ = [
    "CompatibilityAdapter",
    "DualmemError",
    "EmbeddingProvenance",
    "FinalizeReport",
    "Memory",
    "MemoryStore",
    "OfflineConfig",
    "OnlineConfig",
    "OnlineReport",
    "RollbackReport",
    "RunReport",
    "TableDigest",
    "VerifyReport",
    "__version__",
    "encode_rows",
    "export_snapshot",
    "finalize_run",
    "inspect_path",
    "node_uuids",
    "rollback_run",
    "row_checksums",
    "run_offline",
    "run_online",
    "run_status",
    "scan_source",
    "to_dual",
    "to_legacy",
    "verify_run",
]
