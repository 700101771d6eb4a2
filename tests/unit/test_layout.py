"""The tree shows the design, and the docs show the tree: no function in ``pcswitcher/`` over 60
lines, and every module that docs/architecture.md's module map names exists (and every module of
``pcswitcher/`` is in the map)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pcswitcher"
MAX_LINES = 60
#: a line of the module map: tree drawing, then a file name ending in .py
MAP_LINE = re.compile(r"^[ │├└─]*(?P<name>[\w/]+\.py)\s")


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_no_function_is_over_60_lines() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for fn in _functions(ast.parse(path.read_text(), str(path))):
            first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
            lines = (fn.end_lineno or fn.lineno) - first + 1
            if lines > MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({lines} lines)")
    assert not long, "split these functions: " + "; ".join(long)


def test_the_limit_is_measured_as_promised() -> None:
    """A function of 61 lines is found (the check above can fail)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (fn,) = _functions(ast.parse(f"def f():\n{body}\n"))
    assert (fn.end_lineno or 0) - fn.lineno + 1 == 61


def _module_map() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```", 2)[1]  # the first code block: the module map
    return [m.group("name") for line in block.splitlines() if (m := MAP_LINE.match(line))]


def test_every_module_the_architecture_names_exists() -> None:
    named = _module_map()
    assert len(named) >= 20, named  # the map was found
    missing = [name for name in named if not list(PACKAGE.rglob(name))]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_is_in_the_architecture() -> None:
    named = {Path(name).name for name in _module_map()}
    modules = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert not modules - named, f"add to docs/architecture.md's module map: {sorted(modules - named)}"
