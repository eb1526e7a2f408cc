"""The package's import structure: no import cycles, and the layer contracts of docs/layers.md."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import grimp

import monosemantic

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(monosemantic.__file__).resolve().parents[1]
"""Where the imported package lives: the graph and lint-imports read this copy."""


def reachable(graph: grimp.ImportGraph, start: str) -> set[str]:
    """Every module that ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for imported in graph.find_modules_directly_imported_by(todo.pop()) - seen:
            seen.add(imported)
            todo.append(imported)
    return seen


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components that hold a cycle, each sorted: modules that reach each
    other through imports (quadratic, which is nothing for a few hundred modules)."""
    reach = {module: reachable(graph, module) for module in graph.modules}
    components = {
        frozenset(other for other in reach[module] if module in reach[other])
        for module in graph.modules
        if module in reach[module]
    }
    return sorted(sorted(component) for component in components)


def shortest_cycle(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """A shortest import chain from the component's first module back to itself."""
    start, inside = component[0], set(component)
    came_from: dict[str, str] = {}
    todo = deque([start])
    while todo:
        module = todo.popleft()
        for imported in sorted(graph.find_modules_directly_imported_by(module) & inside):
            if imported == start:
                chain = [module]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), start]
            if imported not in came_from:
                came_from[imported] = module
                todo.append(imported)
    raise ValueError(f"{component} holds no cycle through {start}")


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """The component's modules and one of its cycles, import by import with line numbers."""
    chain = shortest_cycle(graph, component)
    steps = []
    for importer, imported in itertools.pairwise(chain):
        lines = [
            d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)
        ]
        steps.append(f"  {importer} imports {imported} (line {', '.join(map(str, lines))})")
    return f"{', '.join(component)} import each other, e.g.\n" + "\n".join(steps)


def test_cycles_are_found_and_described() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="")
    graph.add_import(importer="p.e", imported="p.e", line_number=2, line_contents="")
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"], ["p.e"]]
    assert describe(graph, ["p.a", "p.b", "p.c"]).splitlines()[1:] == [
        "  p.a imports p.b (line 1)",
        "  p.b imports p.c (line 1)",
        "  p.c imports p.a (line 1)",
    ]


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("monosemantic", cache_dir=None)
    cycles = [describe(graph, component) for component in import_cycles(graph)]
    assert not cycles, (
        "import cycles; move the shared code into a module both can import, or pass what the "
        "lower module needs as an argument:\n" + "\n".join(cycles)
    )


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.exists(), f"{lint_imports} is missing: pip install -e '.[test]'"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
