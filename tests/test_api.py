"""The public API: a small, sorted ``__all__`` whose names all exist, and doctests that run."""

from __future__ import annotations

import doctest
import importlib

import pytest

import dualmem_bulk


def test_all_is_sorted_and_exported() -> None:
    assert list(dualmem_bulk.__all__) == sorted(dualmem_bulk.__all__)
    for name in dualmem_bulk.__all__:
        assert hasattr(dualmem_bulk, name), name


@pytest.mark.parametrize("module", ["dualmem_bulk", "dualmem_bulk.checksum",
                                    "dualmem_bulk.convert"])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
