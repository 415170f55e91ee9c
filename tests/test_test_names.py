"""Every test file says what it tests (the rule: ``conftest.py``'s docstring): a module or package
under ``dualmem_bulk/`` by its path, an end-to-end scenario (``test_e2e_*``), or the package as a
whole. A file named after nothing, or after a module since moved or removed, fails here."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "dualmem_bulk"
WHOLE_PACKAGE = {"test_api.py": "the public API", "test_layout.py": "the package's layout",
                 "test_test_names.py": "the test files' names"}
"""Tests of the package as a whole, not of one of its modules."""


def names(package: Path) -> tuple[set[str], set[str]]:
    """The names tests give the package's modules and packages (``online/compat.py``:
    ``online_compat``; ``_threads.py``: ``threads``), and the names of the modules alone."""
    every: set[str] = set()
    modules: set[str] = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        if not parts:
            continue  # the package root: test_api.py
        name = "_".join(part.lstrip("_") for part in parts)
        every.add(name)
        if not is_package:
            modules.add(name)
    return every, modules


def named_after(file_name: str, every: set[str], modules: set[str]) -> str | None:
    """What a test file is named after: a module or package name, ``e2e``, ``package``; ``None``
    when it is named after nothing. A second file for one module adds a word to the module's
    name (``test_checksum_vectors.py``); a package's name takes none (``test_online_stress.py``
    would not say which of ``online/``'s modules it tests)."""
    if file_name in WHOLE_PACKAGE:
        return "package"
    stem = file_name.removeprefix("test_").removesuffix(".py")
    if stem.startswith("e2e_") and len(stem) > len("e2e_"):
        return "e2e"
    if stem in every:
        return stem
    prefixes = [module for module in modules if stem.startswith(f"{module}_")]
    return max(prefixes, key=len) if prefixes else None


def test_every_test_file_is_named_after_what_it_tests() -> None:
    every, modules = names(PACKAGE)
    files = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert len(files) > 40
    unnamed = [name for name in files if named_after(name, every, modules) is None]
    assert unnamed == [], "name these after their module (conftest.py's docstring says how)"


def test_the_rule_knows_modules_packages_and_scenarios() -> None:
    every, modules = names(PACKAGE)
    assert {"online_compat", "rundir_files", "checksum", "threads", "sources_wal_index",
            "sources_engram_wal_codec", "stores"} <= every
    assert "online" in every and "online" not in modules and "checksum" in modules
    named = {
        "test_online_compat.py": "online_compat",
        "test_sources_jsonl_reader.py": "sources_jsonl_reader",
        "test_threads.py": "threads",
        "test_checksum_vectors.py": "checksum",
        "test_offline_place_lance.py": "offline_place",
        "test_run_rollback_offline.py": "run_rollback_offline",
        "test_e2e_crash.py": "e2e",
        "test_api.py": "package",
    }
    for file_name, module in named.items():
        assert named_after(file_name, every, modules) == module, file_name
    for nothing in ("test_inplace.py", "test_served.py", "test_proof.py", "test_online_stress.py",
                    "test_journal.py", "test_e2e_.py", "test_workers.py"):
        assert named_after(nothing, every, modules) is None, nothing
