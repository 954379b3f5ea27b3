"""The dependency map: apps meet through registrations, so these stay true as the code grows."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.live import ROOT

APPS = ("pool", "farm", "jobs", "progress", "webhooks")
PACKAGES = ("coordinator", *APPS)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target in _imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_coordinator_imports_no_app() -> None:
    offending = {
        (name, target)
        for name, targets in _graph().items()
        if name.split(".")[0] == "coordinator"
        for target in targets
        if target.split(".")[0] in APPS
    }
    assert not offending


# The string imports: the operator's own job modules, named in JOBS_EXTRA_MODULES, and the
# django-tasks backend, which finds an enqueued `@task` by its module path as the standard stores it.
KNOWN_STRING_IMPORTS = {"jobs.apps", "jobs.backend"}


def test_no_module_imports_another_by_a_string() -> None:
    calls = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
                "import_module",
                "import_string",
                "find_spec",
                "__import__",
            }:
                calls.append(name)
    assert set(calls) <= KNOWN_STRING_IMPORTS


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
