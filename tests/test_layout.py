"""The package's layout: sub-packages by job, no import cycles, a short top level (issue 27)."""

from __future__ import annotations

import ast
from pathlib import Path

import maelib

PACKAGE = Path(maelib.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The maelib modules that `path` imports, at the top or inside functions, relative or absolute."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != module_name(path)}


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for p in FILES:
        if p.name == "__init__.py":  # a package's re-exports: importing it imports its modules
            continue
        graph[module_name(p)] = {m for m in imports_of(p)}
    # an import of a package stands for what its __init__ imports
    inits = {module_name(p): imports_of(p) for p in FILES if p.name == "__init__.py"}

    def expand(mods: set[str], seen=()) -> set[str]:
        out = set()
        for m in mods:
            if m in inits and m not in seen:
                out |= expand(inits[m], (*seen, m))
            else:
                out.add(m)
        return out

    return {m: expand(deps) - {m} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_top_level_holds_the_model_and_few_other_files():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= 9, top
    assert {"model.py", "patches.py", "masking.py", "pos_embed.py", "registry.py", "targets.py"} <= set(top)
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {"data", "train", "evaluation", "analysis", "weights", "experiments", "course"} <= subpackages


def test_file_io_does_not_know_the_zoo():
    assert "maelib.weights.zoo" not in import_graph()["maelib.weights.checkpoint"]


def test_every_module_is_small():
    big = {module_name(p): n for p in FILES if (n := len(p.read_text().splitlines())) > 420}
    assert not big, big
