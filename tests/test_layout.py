"""The package's imports, read from its source with ``ast``: no module imports itself through
others (no cycle), and ``stores/`` and ``sources/`` (what the drivers build on) import no
driver, no operation on a run and no CLI. Every import counts, also one inside a function or
under ``TYPE_CHECKING``; importing ``a.b.c`` imports the package ``a.b`` too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dualmem_bulk"
BELOW_THE_DRIVERS = ("stores", "sources")
"""Subpackages that must import nothing of :data:`DRIVERS`."""
DRIVERS = ("offline", "online", "run", "verify", "cli", "driver")
"""The drivers, the operations on a run, verification and the CLI (and the package root, which
imports them all)."""

Imports = dict[str, dict[str, int]]
"""Module -> the package's modules it imports -> the line of the first such import."""


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root`` by dotted name (a package by its own)."""
    found: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(root: Path) -> Imports:
    """What each module of the package imports of it (see the module docstring)."""
    known = modules(root)

    def module_of(name: str) -> str | None:  # ``pkg.mod.Name``: ``pkg.mod``
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: Imports = {}
    for name, path in known.items():
        edges = graph.setdefault(name, {})
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                named = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in map(module_of, named):
                if target is None or target == name:
                    continue
                edges.setdefault(target, node.lineno)
                parts = target.split(".")
                for depth in range(2, len(parts)):  # the packages it runs on the way there
                    step = ".".join(parts[:depth])
                    if step != name and not name.startswith(step + "."):
                        edges.setdefault(step, node.lineno)
    return graph


def cycles(graph: Imports) -> list[list[str]]:
    """Each set of modules that import each other in a loop, as one loop through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.get(module, {}):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = {stack.pop()}
            while module not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(_loop(graph, sorted(component)))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _loop(graph: Imports, component: list[str]) -> list[str]:
    """A path from the component's first module back to it, inside the component."""
    start, inside = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        module = queue.pop(0)
        for other in sorted(graph.get(module, {})):
            if other == start:
                return [*paths[module], start]
            if other in inside and other not in paths:
                paths[other] = [*paths[module], other]
                queue.append(other)
    raise AssertionError(f"no loop through {component}")


def wrong_way(graph: Imports) -> list[str]:
    """``module:line -> imported`` for each import by stores/ or sources/ of a driver."""
    return [f"{module}:{line} -> {target}"
            for module, edges in sorted(graph.items()) if _within(module, BELOW_THE_DRIVERS)
            for target, line in sorted(edges.items())
            if target == PACKAGE or _within(target, DRIVERS)]


def _within(module: str, names: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of the package's ``names`` (modules or subpackages) or in one."""
    return any(module == f"{PACKAGE}.{name}" or module.startswith(f"{PACKAGE}.{name}.")
               for name in names)


def test_the_package_has_no_import_cycle() -> None:
    graph = imports(ROOT)
    assert len(graph) > 50 and f"{PACKAGE}.stores.legacy" in graph
    assert cycles(graph) == []


def test_stores_and_sources_import_no_driver() -> None:
    graph = imports(ROOT)
    assert f"{PACKAGE}.stores.snapshot" in graph[f"{PACKAGE}.stores.legacy"]
    assert wrong_way(graph) == []


def write(root: Path, module: str, text: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.parents:
        if parent == root:
            break
        (parent / "__init__.py").touch()
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("lazy", [False, True], ids=["top", "in-a-function"])
def test_the_checks_find_a_store_importing_the_export(tmp_path: Path, lazy: bool) -> None:
    """The import this layout removed (``stores/legacy.py`` reading through the offline
    export), put back into a small copy of the package: both checks see it."""
    line = "from dualmem_bulk.offline.export import scan_source\n"
    write(tmp_path, "dualmem_bulk.stores.legacy",
          f"def digest() -> None:\n    {line}" if lazy else line)
    write(tmp_path, "dualmem_bulk.offline.export", "from dualmem_bulk.stores import legacy\n")
    write(tmp_path, "dualmem_bulk.sources.parquet", "from ..verify import online\n")
    write(tmp_path, "dualmem_bulk.verify.online", "")
    graph = imports(tmp_path)
    assert wrong_way(graph) == [
        "dualmem_bulk.sources.parquet:1 -> dualmem_bulk.verify",
        "dualmem_bulk.sources.parquet:1 -> dualmem_bulk.verify.online",
        f"dualmem_bulk.stores.legacy:{2 if lazy else 1} -> dualmem_bulk.offline",
        f"dualmem_bulk.stores.legacy:{2 if lazy else 1} -> dualmem_bulk.offline.export",
    ]
    assert cycles(graph) == [["dualmem_bulk.offline.export", "dualmem_bulk.stores.legacy",
                              "dualmem_bulk.offline.export"]]
