"""The journal (:mod:`dualmem_bulk.rundir.journal`) and the declaration of what it holds
(:mod:`dualmem_bulk.rundir.keys`): typed values read back as written, defaults before a key is
written, undeclared keys refused, the on-disk JSON unchanged, and the table of keys in
``docs/architecture.md`` the same as the declaration."""

from __future__ import annotations

import ast
import json
import re
import sqlite3
import typing
from pathlib import Path
from typing import Any

import pytest

from dualmem_bulk.errors import SourceError
from dualmem_bulk.rundir import keys
from dualmem_bulk.rundir.files import JOURNAL
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import DEFAULTS, RANGE_KEY, JournalValues, RangeRecord

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
ALIASES = ("State", "Phase", "Mode", "Serving")
"""The literal types whose values the document lists below its table."""


def declared() -> dict[str, tuple[str, str, str]]:
    """Each declared key: its type as written, its default as JSON, its docstring."""
    tree = ast.parse(Path(keys.__file__).read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "JournalValues")
    defaults: dict[str, Any] = dict(DEFAULTS)
    rows: dict[str, tuple[str, str, str]] = {}
    for field, doc in zip(cls.body, cls.body[1:], strict=False):
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name):
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), (
                f"{field.target.id} has no docstring")
            name = field.target.id
            meaning = " ".join(str(doc.value.value).split()).replace("``", "`")
            rows[name] = (ast.unparse(field.annotation), json.dumps(defaults[name]), meaning)
    return rows


def documented() -> dict[str, tuple[str, str, str]]:
    """Each row of the journal's table in the architecture document: type, default, meaning."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("| key | type | unset | holds |", 1)[1].split("\n\n", 1)[0]
    rows: dict[str, tuple[str, str, str]] = {}
    for line in table.strip().splitlines()[1:]:
        cells = [c.strip().replace("\\|", "|")
                 for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        key, kind, unset, meaning = (c.strip("`") if i < 3 else c for i, c in enumerate(cells))
        assert key not in rows, f"{key} is documented twice"
        rows[key] = (kind, unset, meaning)
    return rows


def test_the_document_lists_every_declared_key_and_no_other() -> None:
    rows = documented()
    assert rows.pop(RANGE_KEY.replace("{:06d}", "NNNNNN")) == (
        "RangeRecord", "—", "online runs of a MemoryStore: each committed rowid range")
    assert set(rows) == set(JournalValues.__annotations__)
    assert rows == declared()


def test_the_document_lists_the_values_of_each_literal_type() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    for alias in ALIASES:
        values = typing.get_args(getattr(keys, alias))
        assert f"- `{alias}`: " + ", ".join(f"`{v}`" for v in values) + "\n" in text


def test_every_declared_key_has_a_default() -> None:
    assert set(DEFAULTS) == set(JournalValues.__annotations__)


@pytest.fixture()
def journal(tmp_path: Path) -> typing.Iterator[Journal]:
    journal = Journal.open(tmp_path, create=True)
    yield journal
    journal.close()


def stored(run_dir: Path) -> dict[str, str]:
    """The meta table's JSON text, by key, as another reader sees it."""
    with sqlite3.connect(run_dir / JOURNAL) as conn:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def test_a_key_not_written_reads_as_its_default(journal: Journal) -> None:
    assert journal.values["state"] == "planned" and journal.state == "planned"
    assert journal.values["mode"] == "copy" and journal.mode == "copy"
    assert journal.values["serving"] == "legacy"
    assert journal.values["online_applied"] == 0 and journal.values["pending_applied"] == 0
    assert journal.values["snapshot"] is None and journal.values["target"] is None
    assert journal.values["target_created"] is False and journal.config == {}
    steps = journal.values["rollback_steps"]
    steps.append("changed by a reader")  # a fresh default each time, never a shared one
    assert journal.values["rollback_steps"] == [] and DEFAULTS["rollback_steps"] == []
    assert stored(journal.path.parent) == {}


def test_each_type_round_trips(journal: Journal) -> None:
    wal_position = {"default": {"00000001.log": 4096}}
    journal.set(phase="catching-up", mode="online", serving="dual", target="/data/nodes.lance",
                online_pin=12, online_applied=wal_position, online_version=None,
                created_at=1733560000.5, target_created=True, store_files=["a.lance", "b.lance"],
                snapshot={"rows": 3, "digest": "ab" * 16, "groups": 1},
                source_identity=[["memories.parquet", 1024, 1733560000.25]])
    journal.set_state("done", "cut over", cutover_position=wal_position)
    values = journal.values
    assert values["phase"] == "catching-up" and values["mode"] == "online"
    assert values["serving"] == "dual" and journal.target == Path("/data/nodes.lance")
    assert values["online_pin"] == 12 and values["online_applied"] == wal_position
    assert values["online_version"] is None and values["created_at"] == 1733560000.5
    assert values["target_created"] is True and values["store_files"] == ["a.lance", "b.lance"]
    assert values["snapshot"] == {"rows": 3, "digest": "ab" * 16, "groups": 1}
    assert values["source_identity"] == [["memories.parquet", 1024, 1733560000.25]]
    assert journal.state == "done" and values["cutover_position"] == wal_position
    assert journal.events()[-1][1:] == ("done", "cut over")


def test_values_are_stored_as_sorted_json_as_before(journal: Journal) -> None:
    """The on-disk form of a value is what ``json.dumps(value, sort_keys=True)`` gives, as it
    was before the keys were declared: old run directories read the same."""
    record: RangeRecord = {"unit": 7, "first": 700, "last": 799, "rows": 100, "digest": "cd",
                           "version": 9, "seconds": 0.5, "invocation": 0, "committed_at": 1.0}
    journal.set(online_copied={"rows": 100, "plan": [1, 999]}, target_created=True,
                copied_range=record)
    assert stored(journal.path.parent) == {
        "online_copied": '{"plan": [1, 999], "rows": 100}', "target_created": "true",
        "online_range.000007": json.dumps(record, sort_keys=True)}


def test_a_journal_written_as_plain_json_reads_typed(tmp_path: Path) -> None:
    """A run directory from before the declaration: the same keys, the same JSON text."""
    Journal.open(tmp_path, create=True).close()
    with sqlite3.connect(tmp_path / JOURNAL) as conn:
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
            ("state", '"verifying"'), ("mode", '"in-place"'), ("pre_migration_version", "3"),
            ("legacy_backup", '"/data/.store.dualmem-legacy"'), ("swapped", "true")])
    journal = Journal.open(tmp_path)
    try:
        assert journal.state == "verifying" and journal.mode == "in-place"
        assert journal.values["pre_migration_version"] == 3 and journal.values["swapped"]
        assert journal.values["legacy_backup"] == "/data/.store.dualmem-legacy"
    finally:
        journal.close()


def test_an_undeclared_key_is_refused_and_nothing_is_written(journal: Journal) -> None:
    undeclared: dict[str, Any] = {"phase": "done", "servng": "dual"}
    with pytest.raises(KeyError, match="'servng' is not a journal key"):
        journal.set(**undeclared)
    with pytest.raises(KeyError, match="'servng' is not a journal key"):
        journal.set_state("done", "", **undeclared)
    with pytest.raises(KeyError, match="'servng' is not a journal key"):
        journal.values["servng"]  # type: ignore[typeddict-item]
    assert stored(journal.path.parent) == {} and journal.events() == []


def test_a_journal_without_a_target_says_so(journal: Journal) -> None:
    with pytest.raises(SourceError, match="the journal records no target"):
        _ = journal.target


CHECKED = '''\
from dualmem_bulk.rundir.journal import Journal


def misuse(journal: Journal) -> None:
    journal.values["servng"]
    journal.set(servng="dual")
    journal.set(serving="duel")
    journal.set_state("done", "", phase="copyng")
    if journal.values["serving"] == "lgacy":
        pass
    rows: int = journal.values["target"]
    fine: str | None = journal.values["target"]
'''


def test_mypy_refuses_a_misspelt_key_and_a_wrong_type(tmp_path: Path) -> None:
    """What the declaration is for: every line of ``misuse`` but the last is a mypy error."""
    from mypy import api

    module = tmp_path / "misuse.py"
    module.write_text(CHECKED, encoding="utf-8")
    out, _, status = api.run(["--strict", "--cache-dir", str(tmp_path / "cache"),
                              "--hide-error-context", "--no-error-summary", str(module)])
    errors = {int(m.group(1)): m.group(2) for m in re.finditer(
        r"^.*misuse\.py:(\d+): error: .*\[([a-z-]+)\]$", out, re.M)}
    assert status == 1 and errors == {
        5: "typeddict-item", 6: "call-arg", 7: "arg-type", 8: "arg-type",
        9: "comparison-overlap", 11: "assignment"}, out
