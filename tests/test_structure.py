"""The module structure holds: no import circles between project modules, no oversized modules.

Imports anywhere in a module count (a circle dodged by an import inside a function body is
still a circle); tests, migrations and bench are left out.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("finn", "billing", "credits", "webhooks", "nft")
SKIP = {"tests", "migrations", ".venv", "bench", "node_modules"}
MAX_LINES = 600


def _modules() -> dict[str, pathlib.Path]:
    found: dict[str, pathlib.Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if SKIP.intersection(relative.parts):
                continue
            name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _import_graph(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # A package's own submodules (and a module importing its package) are not edges.
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_project_modules() -> None:
    # when
    cycles = _cycles(_import_graph(_modules()))
    # then
    assert cycles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_app_dependencies_point_one_way() -> None:
    # webhooks, nft -> credits -> billing -> finn; finn's wiring (urls, settings) is the exception.
    order = {"finn": 0, "billing": 1, "credits": 2, "nft": 3, "webhooks": 3}
    wiring = {"finn.urls", "finn.settings", "finn.settings_test", "finn.celery", "finn.wsgi", "finn.asgi"}
    graph = _import_graph(_modules())
    backwards = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module not in wiring
        for target in targets
        if order[target.split(".")[0]] > order[module.split(".")[0]]
        or (module.split(".")[0] != target.split(".")[0] and order[target.split(".")[0]] == order[module.split(".")[0]])
    )
    assert backwards == []


def test_no_module_is_over_600_lines() -> None:
    oversized = sorted(
        f"{path.relative_to(ROOT)}: {lines}"
        for path in _modules().values()
        for lines in [len(path.read_text(encoding="utf-8").splitlines())]
        if lines > MAX_LINES
    )
    assert oversized == []
