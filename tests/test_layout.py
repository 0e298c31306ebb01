"""The package's layout: no module of `score_cli` imports itself back round a circle.

The import graph is read from the source with `ast` (nothing is imported): an edge for every
`import score_cli.x`, `from score_cli import x`, `from score_cli.x import y` and relative import,
and one to every package above the imported module (importing `score_cli.tasks.base` runs
`score_cli/tasks/__init__.py` first). Imports under `if TYPE_CHECKING:` never run and are left out.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import score_cli

PACKAGE = Path(score_cli.__file__).resolve().parent
NAME = "score_cli"


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own, for its __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, *, lazy: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported; with `lazy`, also those in
    functions (which run when the function is called)."""
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not lazy:
                continue
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]))
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    """module -> the package's modules that importing it imports (with `lazy`: or calling it)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        # The packages above a module are imported before it: reaching one of them again only on the
        # way to a sibling module is no circle (`score_cli.tasks.prompts` importing
        # `score_cli.tasks.base` while `score_cli/tasks/__init__.py` imports both); taking a name
        # from one of them is.
        above = set(_with_parents(name)[:-1])
        named: set[str] = set()  # the modules imported by name, or whose names are taken
        passed: set[str] = set()  # the packages above those, run on the way
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)), lazy=lazy):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    named.add(alias.name)
                    passed.update(_with_parents(alias.name)[:-1])
                continue
            if node.level:  # relative: from the module's package (a package's own, for its __init__)
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            passed.update(_with_parents(source)[:-1])
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:  # `from package import module`
                    named.add(f"{source}.{alias.name}")
                    passed.add(source)
                else:
                    named.add(source)
        targets = named | (passed - above)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected group of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:  # a shortest way back to the group's first module, inside the group
        start = min(group)
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in {w for v in frontier for w in graph[v]}:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & group):
                    if w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in graph[v])
        cycles.append(paths[last] + [start])
    return sorted(cycles)


def _describe(cycles: list[list[str]]) -> str:
    return "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph(lazy=True)
    assert "score_cli.tasks.base" in graph["score_cli.tasks"]  # absolute, into a subpackage
    assert {"score_cli.tasks", "score_cli.tasks.data"} <= graph["score_cli.tasks.code_task"]
    assert "score_cli.tasks.code_task" in graph["score_cli.tasks.registry"]  # in a function: only with lazy
    assert "score_cli.tasks.code_task" not in import_graph()["score_cli.tasks.registry"]
    assert "score_cli.cli" in graph["score_cli.__main__"]


def test_relative_imports_and_cycles_are_found(tmp_path, monkeypatch):
    pkg = tmp_path / NAME
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import d\n"
                                      "def f():\n    from ..a import x\n")
    (pkg / "d.py").write_text("from .sub.c import f\n")
    (pkg / "e.py").write_text("from score_cli import d, __version__\nimport score_cli.sub\n")
    (pkg / "f").mkdir()
    (pkg / "f" / "__init__.py").write_text("from score_cli.f.g import G\n")
    (pkg / "f" / "g.py").write_text("from score_cli.f.h import H\n")  # a sibling: no circle
    (pkg / "f" / "h.py").write_text("from score_cli.f import F\n")  # a name of the package: a circle
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = import_graph()
    assert graph["score_cli.a"] == {"score_cli.b"}
    assert graph["score_cli.b"] == {"score_cli.sub", "score_cli.sub.c"}
    assert graph["score_cli.sub.c"] == set()
    assert graph["score_cli.d"] == {"score_cli.sub", "score_cli.sub.c"}
    assert graph["score_cli.e"] == {"score_cli", "score_cli.d", "score_cli.sub"}
    assert graph["score_cli.f.g"] == {"score_cli.f.h"}
    assert import_graph(lazy=True)["score_cli.sub.c"] == {"score_cli.a"}
    f_circle = ["score_cli.f", "score_cli.f.g", "score_cli.f.h", "score_cli.f"]
    assert find_cycles(graph) == [f_circle]
    assert find_cycles(import_graph(lazy=True)) == [
        ["score_cli.a", "score_cli.b", "score_cli.sub.c", "score_cli.a"], f_circle
    ]


def test_no_import_cycles():
    """Importing any module of the package never comes back round to one being imported."""
    cycles = find_cycles(import_graph())
    assert not cycles, f"import cycles in score_cli: {_describe(cycles)}"


def test_no_import_cycles_even_through_imports_in_functions():
    """An import moved into a function to get out of a circle still closes it: none does."""
    cycles = find_cycles(import_graph(lazy=True))
    assert not cycles, f"import cycles in score_cli (counting imports in functions): {_describe(cycles)}"


def test_the_sandbox_launcher_imports_only_the_standard_library():
    """It runs as `python -I -S` in the sandbox's root, where only the interpreter is."""
    tree = ast.parse((PACKAGE / "sandbox_launcher.py").read_text(encoding="utf-8"))
    names = {alias.name.split(".")[0] for node in _imports(tree, lazy=True) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in _imports(tree, lazy=True)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in _imports(tree, lazy=True))
    assert names and names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)


def test_tasks_sit_below_the_rollout_and_the_toy_base_model():
    """The layers read bottom up: a task (problems, prompts, grading) never reaches the rollout, the
    trainers or the toy world's model builder, even through imports inside functions; the builder
    uses the toy task, not the other way round."""
    graph = import_graph(lazy=True)
    above = {"score_cli.rollout", "score_cli.trainers", "score_cli.toy_model", "score_cli.train", "score_cli.evaluate"}
    for module in (m for m in graph if m.startswith("score_cli.tasks")):
        seen, todo = set(), [module]
        while todo:
            for w in graph[todo.pop()] - seen:
                seen.add(w)
                todo.append(w)
        assert not seen & above, f"{module} reaches {sorted(seen & above)}"
    assert "score_cli.tasks.toy_task" in graph["score_cli.toy_model"]
