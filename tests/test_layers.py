"""The layers of docs/design.md, enforced from the imports (issue 13, "Done when").

Every module under ``harvester/`` is parsed (never imported) and every import statement read,
those inside functions included (a lazy import is still a dependency) and those under
``if TYPE_CHECKING:`` left out (they never run). The rules:

* no import cycle between harvester modules;
* the library never imports the CLI (``harvester.cli``): the CLI is the top layer;
* the store imports nothing of the API layer (HTTP, replies, credentials), not even indirectly;
* the gate imports nothing of the store or the scheduler, not even indirectly;
* click and rich are imported only under ``harvester/cli/``;
* no string outside ``harvester/cli/`` names a command-line flag (``--out``), docstrings and
  comments aside: a library message that names a flag is the CLI's wording in the library;
* no module is over ``MAX_LINES`` lines.

Known offenders are listed below, each with a comment saying when it goes. An entry that no
longer applies fails the test too, so the lists only shrink: delete it when its work lands.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harvester"
# issue 13: "modules of a few hundred lines at most"; 500 is the hard limit of its "Done when".
MAX_LINES = 500

API_LAYER = ("harvester.api",)
API_LIBRARIES = ("aiohttp",)
RENDERING_LIBRARIES = ("click", "rich")

# -- known offenders: each is to go -------------------------------------------------------------

# Import cycles, as the sorted modules of each cycle.
KNOWN_CYCLES: set[tuple[str, ...]] = set()
# (importer, imported) edges of the store into the API layer.
KNOWN_STORE_TO_API: set[tuple[str, str]] = set()
# (importer, imported) edges of the gate into the store or the scheduler.
KNOWN_GATE_TO_STORE: set[tuple[str, str]] = set()
# Modules outside harvester/cli/ that import click or rich.
KNOWN_RENDERING_OUTSIDE_CLI: set[tuple[str, str]] = set()
# (module, flag) of strings outside harvester/cli/ that name a command-line flag.
KNOWN_FLAGS_OUTSIDE_CLI: set[tuple[str, str]] = set()

# Modules over MAX_LINES lines.
KNOWN_LONG_MODULES: set[str] = set()


# -- reading the imports ------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    imports: frozenset[str]  # absolute module names, harvester's resolved to its modules


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` except the bodies of ``if TYPE_CHECKING:`` (their ``else``
    runs, so it is kept)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield child
        yield from _runtime_nodes(child)


def imported_names(tree: ast.Module, name: str, package: bool, known: set[str]) -> set[str]:
    """What a module imports at run time, as absolute module names. ``from a import b`` counts
    as importing ``a.b`` when that is a module (``known``), else ``a``."""
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level-1 more
                anchor = name.split(".") if package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return found


def load_modules() -> dict[str, Module]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    modules = {}
    for path in paths:
        name = module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        imports = imported_names(tree, name, is_package(path), known)
        modules[name] = Module(name, path, frozenset(imports))
    return modules


MODULES = load_modules()


def internal_edges(modules: dict[str, Module]) -> set[tuple[str, str]]:
    return {
        (m.name, target)
        for m in modules.values()
        for target in m.imports
        if target in modules and target != m.name
    }


def cycles(edges: set[tuple[str, str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def forbidden_edges(
    modules: dict[str, Module], sources: tuple[str, ...], forbidden: tuple[str, ...]
) -> set[tuple[str, str]]:
    """Edges (importer, imported) by which a module under ``sources`` reaches one under
    ``forbidden``, directly or through other harvester modules: each edge that enters the
    forbidden set, on a path from a source."""
    reached = {name for name in modules if _matches(name, sources)}
    todo = list(reached)
    bad: set[tuple[str, str]] = set()
    while todo:
        module = modules[todo.pop()]
        for target in module.imports:
            if _matches(target, forbidden):
                bad.add((module.name, target))
            elif target in modules and target not in reached:
                reached.add(target)
                todo.append(target)
    return bad


def check(found: set[object], known: set[object], what: str) -> None:
    new, gone = found - known, known - found
    assert not new, f"{what}: {sorted(map(str, new))} (see 'The layers' in docs/design.md)"
    assert not gone, f"{what}: {sorted(map(str, gone))} no longer found: delete it from the list"


# -- the rules ----------------------------------------------------------------------------------


def test_imports_are_read_from_every_module() -> None:
    assert {"harvester", "harvester.cli", "harvester.store", "harvester.gate"} <= set(MODULES)
    cli_store = MODULES["harvester.cli.store"].imports
    assert "click" in cli_store  # top level
    assert "harvester.analysis" in cli_store  # inside a command's function
    assert "harvester.config" not in MODULES["harvester"].imports  # under TYPE_CHECKING


def test_no_import_cycle() -> None:
    check(set(cycles(internal_edges(MODULES))), set(KNOWN_CYCLES), "import cycles")


def test_the_library_never_imports_the_cli() -> None:
    outside = {n: m for n, m in MODULES.items() if not _matches(n, ("harvester.cli",))}
    bad = {
        (m.name, t)
        for m in outside.values()
        for t in m.imports
        if _matches(t, ("harvester.cli",)) and m.name != "harvester.__main__"
    }
    assert not bad, f"the library imports the CLI: {sorted(bad)}"


def test_the_store_imports_nothing_of_the_api_layer() -> None:
    bad = forbidden_edges(MODULES, ("harvester.store",), API_LAYER + API_LIBRARIES)
    check(set(bad), set(KNOWN_STORE_TO_API), "the store imports the API layer")


def test_the_gate_imports_nothing_of_the_store_or_scheduler() -> None:
    bad = forbidden_edges(MODULES, ("harvester.gate",), ("harvester.store", "harvester.scheduler"))
    check(set(bad), set(KNOWN_GATE_TO_STORE), "the gate imports the store or scheduler")


def test_click_and_rich_only_under_cli() -> None:
    found = {
        (m.name, library)
        for m in MODULES.values()
        if not _matches(m.name, ("harvester.cli",))
        for target in m.imports
        for library in RENDERING_LIBRARIES
        if _matches(target, (library,))
    }
    check(set(found), set(KNOWN_RENDERING_OUTSIDE_CLI), "click or rich outside harvester/cli/")


# A long option as a user types it: ``--out``, ``--unsafe-sql`` (not ``---`` rules or ``a--b``).
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def flags_named(source: str) -> set[str]:
    """The flags that the strings of ``source`` name, docstrings left out (f-strings' literal
    parts count; comments are not in the tree)."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    return {
        flag
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        for flag in FLAG.findall(node.value)
    }


def test_messages_outside_the_cli_name_no_flag() -> None:
    found = {
        (m.name, flag)
        for m in MODULES.values()
        if not _matches(m.name, ("harvester.cli",))
        for flag in flags_named(m.path.read_text())
    }
    check(set(found), set(KNOWN_FLAGS_OUTSIDE_CLI), "a flag named outside harvester/cli/")


def test_no_module_over_the_line_limit() -> None:
    long = {m.name for m in MODULES.values() if len(m.path.read_text().splitlines()) > MAX_LINES}
    check(set(long), set(KNOWN_LONG_MODULES), f"modules over {MAX_LINES} lines")


# -- the checker itself sees violations ---------------------------------------------------------


def _modules(sources: dict[str, str]) -> dict[str, Module]:
    known = set(sources)
    return {
        name: Module(name, Path(name), frozenset(imported_names(ast.parse(s), name, False, known)))
        for name, s in sources.items()
    }


def test_the_checker_finds_a_cycle_through_a_lazy_import_but_not_a_type_checking_one() -> None:
    lazy = _modules(
        {
            "harvester.a": "from harvester.b import x\n",
            "harvester.b": "def f():\n    import harvester.a\n",
        }
    )
    assert cycles(internal_edges(lazy)) == {("harvester.a", "harvester.b")}
    typed = _modules(
        {
            "harvester.a": "from harvester.b import x\n",
            "harvester.b": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import harvester.a\n",
        }
    )
    assert cycles(internal_edges(typed)) == set()


def test_the_checker_follows_indirect_imports() -> None:
    modules = _modules(
        {
            "harvester.gate.model": "from harvester import clock\n",
            "harvester.clock": "def f():\n    from harvester.store import Store\n",
            "harvester.store": "import aiohttp\n",
        }
    )
    gate = forbidden_edges(modules, ("harvester.gate",), ("harvester.store",))
    assert gate == {("harvester.clock", "harvester.store")}
    store = forbidden_edges(modules, ("harvester.store",), API_LAYER + API_LIBRARIES)
    assert store == {("harvester.store", "aiohttp")}


def test_the_checker_finds_a_flag_in_a_message_but_not_in_a_docstring() -> None:
    source = (
        '"""Written through ``--out``."""\n'
        "def f(x):\n"
        '    """Or --unsafe-sql."""\n'
        '    raise ValueError(f"{x}: pass --unsafe-sql -- or not ---")  # --comment\n'
    )
    assert flags_named(source) == {"--unsafe-sql"}


@pytest.mark.parametrize(
    ("found", "known", "message"),
    [({"new"}, set(), "The layers"), (set(), {"stale"}, "delete it from the list")],
)
def test_a_new_offender_or_a_stale_entry_fails(
    found: set[object], known: set[object], message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        check(found, known, "rule")
