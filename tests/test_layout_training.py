"""Layout of training/ and engines/: scripts import library modules, never each other.

A script is a module with a command-line entry (``def main(`` or ``if __name__ ==
"__main__"``). A helper that two scripts need lives in a library module (training/common.py,
data.py, models.py, phones.py, ...), so running, changing or deleting one script never
drags another along; this test reads every module's imports (with ``ast``, nothing is
imported) and fails on any import of a script by another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "engines")


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module in the checked packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    names = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
    main = any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    return names and main


def is_script(tree: ast.Module) -> bool:
    """A module with a command-line entry: ``def main(`` or ``if __name__ == "__main__"``."""
    return any(
        (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main") or _is_main_guard(node)
        for node in tree.body
    )


def imported_modules(name: str, path: Path, tree: ast.Module) -> set[str]:
    """Every dotted name this module imports, anywhere in it (function-level imports too):
    ``import a.b`` gives a.b; ``from a import b`` gives a and a.b (b may be a module);
    relative imports are resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def script_imports() -> list[str]:
    modules = _modules()
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    scripts = {name for name, tree in trees.items() if is_script(tree)}
    bad = []
    for name, tree in trees.items():
        for target in sorted(imported_modules(name, modules[name], tree) & scripts):
            if target != name:
                bad.append(f"{modules[name].relative_to(ROOT)} imports script {target}")
    return bad


def test_no_module_imports_a_script() -> None:
    bad = script_imports()
    assert not bad, "move the helpers into a library module:\n" + "\n".join(bad)


def test_the_checker_sees_scripts_and_every_import_form() -> None:
    """The rule would pass vacuously if scripts or imports went unseen."""
    script = ast.parse('def main() -> int:\n    return 0\n\nif __name__ == "__main__":\n    raise SystemExit(main())\n')
    assert is_script(script)
    assert is_script(ast.parse('if "__main__" == __name__:\n    pass\n'))
    assert not is_script(ast.parse("def helper() -> None:\n    pass\n"))
    src = (
        "import training.a\n"
        "from training import b\n"
        "from . import c\n"
        "from .d import x\n"
        "def f():\n    from ..engines.e import y\n"
    )
    got = imported_modules("training.m", ROOT / "training" / "m.py", ast.parse(src))
    assert {"training.a", "training.b", "training.c", "training.d", "engines.e"} <= got
    modules = _modules()
    assert "training.train_sync" in modules and "engines.export" in modules
    assert is_script(ast.parse(modules["training.train_sync"].read_text()))
    assert not is_script(ast.parse(modules["training.data"].read_text()))
