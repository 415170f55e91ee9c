"""The public API: the package root exports exactly the configurations, operations, reports,
service store and adapter, error tree and ``Progress``; kernels stay in their modules; the
doctests run."""

from __future__ import annotations

import doctest
import importlib

import pytest

import dualmem_bulk

PUBLIC = [
    # configurations
    "OfflineConfig", "OnlineConfig",
    # operations
    "build_index", "export_snapshot", "finalize_plan", "finalize_run", "inspect_path",
    "request_cutover", "rollback_plan", "rollback_run", "run_offline", "run_online",
    "run_status", "verify_run",
    # their reports
    "CutoverReport", "FinalizeReport", "IndexReport", "InspectReport", "OnlineReport",
    "RollbackReport", "RunReport", "StatusReport", "VerifyReport",
    # what the service uses
    "CompatibilityAdapter", "EmbeddingProvenance", "Memory", "MemoryStore",
    # the error tree
    "DualmemError", "InputError", "Interrupted", "InvalidRows", "RunChanged", "RunLocked",
    "SchemaMismatch", "SourceDamaged", "SourceError", "TargetExists", "UsageError",
    "VerificationFailed",
    # progress reporting, and the version
    "Progress", "__version__",
]


def test_all_is_the_public_list_sorted_and_exported() -> None:
    assert sorted(dualmem_bulk.__all__) == sorted(PUBLIC)
    assert list(dualmem_bulk.__all__) == sorted(dualmem_bulk.__all__)
    for name in dualmem_bulk.__all__:
        assert hasattr(dualmem_bulk, name), name


def test_the_error_tree_is_public_whole() -> None:
    from dualmem_bulk import errors

    assert set(errors.__all__) <= set(dualmem_bulk.__all__)


@pytest.mark.parametrize(("module", "name"), [
    ("dualmem_bulk.checksum", "row_checksums"), ("dualmem_bulk.checksum", "encode_rows"),
    ("dualmem_bulk.checksum", "TableDigest"), ("dualmem_bulk.convert", "to_dual"),
    ("dualmem_bulk.convert", "to_legacy"), ("dualmem_bulk.convert", "node_uuids"),
    ("dualmem_bulk.schema", "DUAL_SCHEMA"), ("dualmem_bulk.schema", "LEGACY_SCHEMA"),
])
def test_kernels_are_imported_from_their_modules_not_the_root(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)
    assert name not in dualmem_bulk.__all__ and not hasattr(dualmem_bulk, name)


@pytest.mark.parametrize("module", ["dualmem_bulk", "dualmem_bulk.checksum",
                                    "dualmem_bulk.convert"])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
