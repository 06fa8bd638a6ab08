"""The package's layout holds: no import cycles between rtdub's modules (imports at module
level, the ones that run on import), and the command-line modules import no engine internals
at module level beyond the light ones."""

from __future__ import annotations

import ast
from pathlib import Path

import rtdub

ROOT = Path(rtdub.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the rtdub modules it imports at module level (not inside functions, not
    under ``if TYPE_CHECKING``)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        deps: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(name, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in paths and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            # a package's __init__ importing its own submodule is not a cycle through the package
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)) is not None:
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)) is not None:
            return found
    return None


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "rtdub.render.pipeline" in graph["rtdub.engine"]
    assert "rtdub.face.tracker" in graph["rtdub.render.pipeline"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_cli_modules_do_not_import_each_other_in_a_cycle() -> None:
    graph = import_graph()
    clis = [m for m in graph if m.startswith("rtdub.cli.")]
    for a in clis:
        for b in clis:
            assert not (b in graph[a] and a in graph[b]), (a, b)


def test_every_module_lives_in_a_concept_package() -> None:
    """The flat top level holds only the shared basics; everything else is in a subpackage."""
    top = {p.stem for p in ROOT.glob("*.py")}
    basics = {"__init__", "__main__", "model", "audio", "media", "tts", "exceptions", "defaults", "atomic", "quiet"}
    assert top - basics <= {"dub", "engine"}, sorted(top - basics)
