"""dualmem-bulk: migrate Engram ``Memory`` stores to ``DualMemoryNode``, fast and verifiably.

The package root holds the public API: the configurations, the operations on a source, a store
or a run directory, their reports, the service's store and adapter, the error tree and the
``Progress`` protocol. The kernels (:mod:`dualmem_bulk.checksum`, :mod:`dualmem_bulk.convert`,
:mod:`dualmem_bulk.schema`) are imported from their modules; ``docs/architecture.md`` describes
the package.

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
from dualmem_bulk.errors import (
    DualmemError,
    InputError,
    Interrupted,
    InvalidRows,
    RunChanged,
    RunLocked,
    SchemaMismatch,
    SourceDamaged,
    SourceError,
    TargetExists,
    UsageError,
    VerificationFailed,
)
from dualmem_bulk.inspect import inspect_path
from dualmem_bulk.offline.config import OfflineConfig
from dualmem_bulk.offline.export import export_snapshot
from dualmem_bulk.offline.run import run_offline
from dualmem_bulk.online.compat import CompatibilityAdapter
from dualmem_bulk.online.cutover import request_cutover
from dualmem_bulk.online.run import OnlineConfig, run_online
from dualmem_bulk.progress import Progress
from dualmem_bulk.run.modes import (
    finalize_plan,
    finalize_run,
    rollback_plan,
    rollback_run,
    run_status,
    verify_run,
)
from dualmem_bulk.rundir.reports import (
    CutoverReport,
    FinalizeReport,
    InspectReport,
    RollbackReport,
    StatusReport,
    VerifyReport,
)
from dualmem_bulk.rundir.run_report import OnlineReport, RunReport
from dualmem_bulk.stores.memory_store import EmbeddingProvenance, Memory, MemoryStore
from dualmem_bulk.vector_index import IndexReport, build_index

__all__ = [
    "CompatibilityAdapter",
    "CutoverReport",
    "DualmemError",
    "EmbeddingProvenance",
    "FinalizeReport",
    "IndexReport",
    "InputError",
    "InspectReport",
    "Interrupted",
    "InvalidRows",
    "Memory",
    "MemoryStore",
    "OfflineConfig",
    "OnlineConfig",
    "OnlineReport",
    "Progress",
    "RollbackReport",
    "RunChanged",
    "RunLocked",
    "RunReport",
    "SchemaMismatch",
    "SourceDamaged",
    "SourceError",
    "StatusReport",
    "TargetExists",
    "UsageError",
    "VerificationFailed",
    "VerifyReport",
    "__version__",
    "build_index",
    "export_snapshot",
    "finalize_plan",
    "finalize_run",
    "inspect_path",
    "request_cutover",
    "rollback_plan",
    "rollback_run",
    "run_offline",
    "run_online",
    "run_status",
    "verify_run",
]
