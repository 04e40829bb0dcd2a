"""The package's layers: every import inside `harness` points down, and nothing cycles.

A reader should know a file's layer from its folder (README, "Layout"), and a layer may
import only the layers below it. This test reads every module's imports with `ast`
(module level, inside functions and under TYPE_CHECKING alike, since a lazy import is
still a dependency), so an upward import or a cycle fails here, naming the modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import harness

PACKAGE = Path(harness.__file__).resolve().parent

#: Bottom to top. A module's layer is that of the longest prefix listed here.
LAYERS = {
    "harness.errors": 0,
    "harness.core": 1,
    "harness.models": 2,
    "harness.metrics": 3,
    "harness.plugin": 4,
    "harness.hookspecs": 4,
    "harness.testing": 4,
    "harness.bench": 5,
    # The benchmark by concern, bottom to top: what to run, what was measured (records),
    # what a report makes of records, and running (which uses all three).
    "harness.bench.configuration": 5.1,
    "harness.bench.recording": 5.2,
    "harness.bench.reporting": 5.3,
    "harness.bench.running": 5.4,
    "harness.bench.exit_codes": 5.5,
    "harness.commands": 6,
    "harness.cli": 6,
}
#: `harness/__init__.py` re-exports the public API from every layer; nothing imports it
#: from inside the package.
FACADE = "harness"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and to "
                         f"the README's layout table)")


def harness_imports(path: Path) -> set[str]:
    """The harness modules `path` imports (a name imported from a package counts as its
    submodule when one exists by that name)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "harness")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "harness":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        graph[name] = {m for m in harness_imports(path) if m != name}
    return graph


def test_every_module_has_a_layer():
    for module in import_graph():
        if module != FACADE:
            layer(module)


def test_imports_point_down():
    upward = []
    for module, targets in import_graph().items():
        if module == FACADE:
            continue
        for target in targets:
            if target == FACADE:
                upward.append(f"{module} imports the facade `harness` (import the module)")
            elif layer(target) > layer(module):
                upward.append(f"{module} (layer {layer(module)}) imports {target} "
                              f"(layer {layer(target)})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first = last), or [] if there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_cycle():
    graph = {m: t for m, t in import_graph().items() if m != FACADE}
    # A package's __init__ importing its own modules is not a cycle with them.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, cycle):
    assert find_cycle(graph) == cycle


def test_every_layer_package_says_what_it_may_import():
    for prefix in LAYERS:
        init = PACKAGE / Path(*prefix.split(".")[1:]) / "__init__.py"
        if init.is_file():
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
            assert "may import" in doc, f"{init}: the docstring must say what it may import"
