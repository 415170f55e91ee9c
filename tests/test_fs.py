"""Atomic writes and file plumbing (``dualmem_bulk._fs``) on real files: a write is seen whole or
not at all, a failed one leaves the old file and no temporary, ``remove`` never follows a link
out of the tree it removes, a source's identity changes when a file does, and the fault hook
fails exactly the pass it names."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from dualmem_bulk._fs import (
    atomic_path,
    check_path,
    fault_point,
    remove,
    source_identity,
    write_json,
)
from dualmem_bulk.errors import SourceError


def test_atomic_path_renames_a_whole_file_or_directory_into_place(tmp_path: Path) -> None:
    final = tmp_path / "f.txt"
    final.write_text("old")
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".f.txt.tmp-")
        tmp.write_text("new")
        assert final.read_text() == "old"  # not before the block ends
    assert final.read_text() == "new"
    folder = tmp_path / "d"
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("a")
    assert (folder / "a").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.txt"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                              durable: bool) -> None:
    final = tmp_path / "f.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(final, durable=durable) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk gone")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_temporary_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    final = tmp_path / "f.txt"
    stale = tmp_path / f".f.txt.tmp-{os.getpid()}"
    stale.mkdir()  # a directory even: whatever the crash left
    (stale / "junk").write_text("junk")
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new" and not stale.exists()


def test_write_json_is_sorted_and_ends_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1, 2], "b": 1}


def test_remove_takes_files_trees_and_links_but_not_what_a_link_points_to(
        tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "data").write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(kept, target_is_directory=True)
    remove(link)
    assert not link.exists() and (kept / "data").read_text() == "precious"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    remove(tree)
    remove(tmp_path / "never-there")
    single = tmp_path / "single"
    single.write_text("x")
    remove(single)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_source_identity_changes_with_any_file(tmp_path: Path) -> None:
    source = tmp_path / "store"
    (source / "sub").mkdir(parents=True)
    (source / "a.parquet").write_bytes(b"1234")
    (source / "sub" / "b.parquet").write_bytes(b"12")
    before = source_identity(source)
    assert [(name, size) for name, size, _mtime in before] == [("a.parquet", 4),
                                                                 ("sub/b.parquet", 2)]
    assert source_identity(source) == before
    os.utime(source / "sub" / "b.parquet", ns=(1, 1))
    assert source_identity(source) != before
    single = source / "a.parquet"
    assert source_identity(single)[0][:2] == ["a.parquet", 4]


def test_check_path_refuses_what_the_system_will_not_look_at(tmp_path: Path) -> None:
    check_path(tmp_path / "missing")  # for the caller to judge
    (tmp_path / "file").write_text("x")
    check_path(tmp_path / "file" / "under")
    with pytest.raises(SourceError, match="too long"):
        check_path(tmp_path / ("n" * 300))


def test_fault_point_fails_the_pass_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    fault_point("test-fs-point")  # unset: nothing
    monkeypatch.setenv("DUALMEM_FAULT", "test-fs-point:2:ENOSPC")
    fault_point("test-fs-point-other")
    fault_point("test-fs-point")  # the first pass
    with pytest.raises(OSError) as failed:
        fault_point("test-fs-point")
    assert failed.value.errno == errno.ENOSPC
    fault_point("test-fs-point")  # the third passes again
