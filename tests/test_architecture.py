"""The import rules that keep the package changeable (ARCHITECTURE.md), checked on the source with ast.

- mixing/weights.py imports numpy and the standard library only (plus the package's errors), and
  mixing/baselines.py and mixing/curves.py only those and weights;
- data/, mixing/, training/ (and config, errors) never import mlflow or ray: only integrations/ does,
  besides the command line and the benchmark that sit on top;
- nothing in the product imports bench/ (only cli/ does, to offer the bench commands);
- no import circles between modules;
- no function-level import of a package module except for a reason the code states (start-up time
  of the command line, Ray or MLflow loaded only when used).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "versatune_mlops"
NAME = "versatune_mlops"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "presets" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(absolute module imported, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level `if`/`try` still count as top level
        for child in ast.walk(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                top_level.add(id(child))
    result = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            result += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                result.append((candidate if candidate in MODULES else module, id(node) in top_level))
    return result


def _in(name: str, *rooms: str) -> bool:
    return any(name == f"{NAME}.{room}" or name.startswith(f"{NAME}.{room}.") for room in rooms)


def test_the_layout_was_found():
    for room in ("data", "mixing", "training", "integrations.mlflow", "integrations.ray", "bench", "cli"):
        assert any(_in(name, room) for name in MODULES), room


@pytest.mark.parametrize("module, extra", [("mixing.weights", set()), ("mixing.baselines", {"mixing.weights"}),
                                           ("mixing.curves", {"mixing.weights"})])
def test_the_weighting_maths_imports_numpy_and_the_standard_library_only(module, extra):
    allowed = set(sys.stdlib_module_names) | {"numpy", f"{NAME}.errors", "__future__"} | {f"{NAME}.{m}" for m in extra}
    imported = {name.split(".")[0] if not name.startswith(NAME) else name
                for name, _ in _imports(f"{NAME}.{module}", MODULES[f"{NAME}.{module}"])}
    assert imported <= allowed, imported - allowed


@pytest.mark.parametrize("name", [n for n in MODULES if not _in(n, "integrations", "cli", "bench")])
def test_the_core_never_imports_mlflow_or_ray(name):
    heavy = [m for m, _ in _imports(name, MODULES[name]) if m.split(".")[0] in ("mlflow", "ray")]
    assert heavy == [], f"{name} imports {heavy}: only integrations/ may talk to MLflow or Ray"


@pytest.mark.parametrize("name", [n for n in MODULES if not _in(n, "bench", "cli")])
def test_the_product_never_imports_the_benchmark(name):
    bench = [m for m, _ in _imports(name, MODULES[name]) if _in(m, "bench")]
    assert bench == [], f"{name} imports {bench}"


@pytest.mark.parametrize("name", [n for n in MODULES if _in(n, "data", "mixing", "training", "config", "errors")])
def test_the_core_never_imports_the_glue_above_it(name):
    above = [m for m, _ in _imports(name, MODULES[name]) if _in(m, "integrations", "cli", "bench")]
    assert above == [], f"{name} imports {above}"


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {m for m, top in _imports(name, path)
                       if m in MODULES and m != name and (top or not top_level_only)}
    return graph


def test_no_import_circles_including_function_level_imports():
    graph = _graph(top_level_only=False)
    # A package's __init__ that re-exports its own submodule is not a circle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".") and not name.startswith(m + ".")
                       or MODULES[m].name != "__init__.py"}
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("name", [n for n in MODULES if _in(n, "data", "mixing", "training", "config")])
def test_the_core_has_no_function_level_imports_of_its_own_modules(name):
    late = [m for m, top in _imports(name, MODULES[name]) if not top and m.startswith(NAME)]
    assert late == [], f"{name} imports {late} inside a function"
