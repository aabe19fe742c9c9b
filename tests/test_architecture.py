"""The package's import graph: no cycle anywhere, and imports point one way, library < app < cli.

Every module under ``src/annofree`` is parsed with ``ast`` (nothing is imported), and every ``import`` and
``from ... import`` counts wherever it is written: at the top, inside a function (a lazy import is still a
dependency, only a later one), under ``try`` or ``if``. Imports under ``if TYPE_CHECKING:`` do not count: they
never run, they exist so that a room can name a type from a room above it without depending on it (the data room
names the methods' ``Method`` that way); counting them would forbid exactly the annotation that keeps the run-time
graph one-way. ``annofree.x.y`` is a node per module file; ``from annofree.x import y`` is an edge to the
submodule ``annofree.x.y`` when there is one, else to the package ``annofree.x`` (its ``__init__``). Importing a
submodule does not count as importing its package's ``__init__`` (Python runs it, but a package initialiser that
re-exports its submodules would otherwise close a loop with each of them).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "annofree"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE
CLI = f"{PACKAGE}.cli"
APP = f"{PACKAGE}.app"
ENTRY_POINTS = {f"{PACKAGE}.__main__"}  # `python -m annofree` is the command line's own door
# Cycles tolerated while a change of their own removes them: none left (issue 22's item 5 removed the last two,
# weights <-> pretrained and engine.logging <-> engine.curves). Never add one.
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (their ``else`` branch runs, so it counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """``(dotted name, line)`` of each absolute name this module imports at run time (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _run_time_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported annofree module: first line}."""
    modules = all_modules()
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        for target, line in imported_names(name, path):
            if target.split(".")[0] != PACKAGE:
                continue
            # `from a.b import c`: the submodule a.b.c if it exists, else a.b; `import a.b.c`: the longest module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or ``None`` (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        children = [iter(sorted(graph[start]))]
        state[start] = 1
        while children:
            child = next(children[-1], None)
            if child is None:
                state[path.pop()] = 2
                children.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                children.append(iter(sorted(graph[child])))
    return None


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """The sets of modules that import one another, directly or not (Tarjan's algorithm; sets of one left out)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            members = []
            while not members or members[-1] != node:
                members.append(stack.pop())
            if len(members) > 1:
                found.append(frozenset(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(cycle)]
    return "import cycle:\n  " + "\n  ".join(steps)


def in_room(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Imports against the stack library < app < cli: the cli from outside it, the app from the library."""
    wrong = []
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            if in_room(target, CLI) and not in_room(module, CLI) and module not in ENTRY_POINTS:
                wrong.append(f"{module} (line {line}) imports {target}: only the command line may")
            if in_room(target, APP) and not in_room(module, CLI) and not in_room(module, APP):
                wrong.append(f"{module} (line {line}) imports {target}: the library must not import the app")
    return wrong


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_the_graph_sees_every_module_and_lazy_imports(graph):
    assert len(graph) > 100
    # app.py imports the segmenter inside a function only: such an import is an edge all the same.
    assert any(in_room(target, f"{PACKAGE}.inference") for target in graph[APP])
    assert f"{PACKAGE}.cli" in graph and f"{PACKAGE}.errors" in graph


def test_no_import_cycle(graph):
    for members in strongly_connected(graph):
        if members in KNOWN_CYCLES:
            continue
        inside = {name: {t: line for t, line in graph[name].items() if t in members} for name in members}
        cycle = find_cycle(inside)
        assert cycle is None, describe_cycle(cycle, graph)


def test_known_cycles_still_exist(graph):
    gone = KNOWN_CYCLES - set(strongly_connected(graph))
    assert not gone, f"these cycles are gone: delete them from KNOWN_CYCLES in {__file__}: {sorted(map(sorted, gone))}"


def test_imports_point_one_way_library_app_cli(graph):
    wrong = upward_imports(graph)
    assert not wrong, "\n".join(wrong)


# ----------------------------------------------------------------------------- the checker itself


def test_find_cycle_reports_the_path():
    toy = {"a": {"b": 1}, "b": {"c": 3}, "c": {"a": 7}, "d": {"a": 2}}
    cycle = find_cycle(toy)
    assert cycle == ["a", "b", "c", "a"]
    message = describe_cycle(cycle, toy)
    assert "a (line 1) -> b" in message and "c (line 7) -> a" in message
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 2}}) is None
    assert strongly_connected(toy) == [frozenset("abc")]


def test_lazy_and_type_checking_imports(tmp_path):
    code = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from annofree.cli import main\nelse:\n    import annofree.errors\n"
        "def f():\n    from annofree.app import SegmentApp\n"
        "from . import sibling\n"
    )
    package = tmp_path / PACKAGE / "room"
    package.mkdir(parents=True)
    (package / "mod.py").write_text(code)
    names = {name for name, _ in imported_names(f"{PACKAGE}.room.mod", package / "mod.py")}
    assert f"{PACKAGE}.app.SegmentApp" in names  # inside a function: counted
    assert f"{PACKAGE}.errors" in names  # the else branch runs
    assert f"{PACKAGE}.room.sibling" in names  # relative, resolved
    assert not any(name.startswith(CLI) for name in names)  # under TYPE_CHECKING: not counted
    toy = {f"{PACKAGE}.room.mod": {APP: 7, CLI: 3}, APP: {CLI: 1}, CLI: {APP: 2}}
    wrong = upward_imports(toy)
    assert len(wrong) == 3 and all("line" in line for line in wrong)
