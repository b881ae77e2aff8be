"""The import layers of the package (docs/architecture.md), read from the source: a module
imports only from layers below its own, and no import cycle runs between its parts."""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "rewardcore"

#: Lowest first. A part (top-level module or subpackage of rewardcore) may import from the
#: layers below its own; only the products on top import each other (without cycles).
LAYERS: list[set[str]] = [
    # _scan imports nothing of rewardcore: the codec's tally is in it
    {"errors", "outcomes", "_files", "progress", "console", "_redis_wire", "_scan"},
    {"_url", "events", "campaign", "examples"},
    {"codec", "traffic"},
    # the compiled cores import rewardcore.errors only (_redis_batch: and events, _redis_wire)
    {"engine", "_engine", "_shm", "_redis_batch"},
    {"storage"},
    {"backends", "winners", "redis_servers"},
    {"rewardcore", "aio"},  # the package's public face and the asyncio wrapper
    {"replay"},
    {"cli"},
    {"daemon", "review", "capacity", "__main__"},  # the products on top
]
PRODUCTS = LAYERS[-1]
RANK = {part: k for k, layer in enumerate(LAYERS) for part in layer}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PKG.parent / rel).with_suffix(".py").exists() or (PKG.parent / rel).is_dir() \
        or any(PKG.parent.joinpath(*name.split(".")[:-1]).glob(name.split(".")[-1] + ".*.so"))


def _imports(path: Path, module: str, top_only: bool) -> set[str]:
    """rewardcore modules that `module` imports (at module level only, if `top_only`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "rewardcore"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "rewardcore":
                continue
            for a in node.names:  # `from . import x` may name a module or a value
                found.add(f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target)
    return found


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "rewardcore"


@functools.cache
def _graph(top_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PKG.rglob("*.py"):
        module = _module(path)
        graph[module] |= _imports(path, module, top_only) - {module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_part_has_a_layer():
    parts = {_part(_module(p)) for p in PKG.rglob("*.py")}
    assert parts - set(RANK) == set(), "add the new part to LAYERS (and docs/architecture.md)"


def test_nothing_imports_upward():
    wrong = []
    for module, targets in sorted(_graph(top_only=False).items()):
        here = _part(module)
        for target in sorted(targets):
            there = _part(target)
            if there == here or (here in PRODUCTS and there in PRODUCTS):
                continue
            if RANK[there] >= RANK[here]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_cycles_between_parts():
    parts: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph(top_only=False).items():
        parts[_part(module)] |= {_part(t) for t in targets} - {_part(module)}
    assert _cycle(parts) is None


def test_no_import_cycles_between_modules():
    # module-level imports only: an import inside a function runs after both modules loaded
    assert _cycle(_graph(top_only=True)) is None


def test_the_layer_check_sees_imports():
    graph = _graph(top_only=False)
    assert "rewardcore.replay" in graph["rewardcore.cli"]
    assert "rewardcore.backends" in graph["rewardcore.replay.pipeline"]
    assert "rewardcore.errors" in graph["rewardcore._url"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
