"""The tree shows the design, and the docs show the tree: no function in ``pcswitcher/`` over 60
lines, every module that docs/architecture.md's module map names exists (and every module of
``pcswitcher/`` is in the map), and imports only go down the layers the map shows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pcswitcher"
MAX_LINES = 60
#: a line of the module map: tree drawing, then a file name ending in .py
MAP_LINE = re.compile(r"^[ │├└─]*(?P<name>[\w/]+\.py)\s")
#: a line of the module map naming a package: `` ├─ cli/ ``
PACKAGE_LINE = re.compile(r"^ [├└]─ (?P<name>\w+)/\s")
#: the packages of pcswitcher/, top to bottom (docs/architecture.md)
LAYERS = ("cli", "run", "remote", "config", "jobs")
#: below every layer: they import nothing of the layers (the agent runs alone on the targets)
BOTTOM = frozenset(["pcswitcher.remote.agent", "pcswitcher.errors", "pcswitcher.paths", "pcswitcher.install"])


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
    """The module map's files as paths under ``pcswitcher/`` (``run/steps.py``): a line one level
    deep names a package (``cli/``) or a top-level module, deeper lines the modules of that package."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```", 2)[1]  # the first code block: the module map
    package, named = "", []
    for line in block.splitlines():
        if m := PACKAGE_LINE.match(line):
            package = m.group("name")
        elif m := MAP_LINE.match(line):
            top_level = line.startswith((" ├─", " └─"))
            named.append(m.group("name") if top_level else f"{package}/{m.group('name')}")
    return named


def _modules() -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}


def test_every_module_the_architecture_names_exists() -> None:
    named = _module_map()
    assert len(named) >= 20, named  # the map was found
    missing = [name for name in named if not (PACKAGE / name).is_file()]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_is_in_the_architecture() -> None:
    missing = _modules() - set(_module_map())
    assert not missing, f"add to docs/architecture.md's module map: {sorted(missing)}"


def _imported(path: Path) -> set[str]:
    """The pcswitcher modules and packages that ``path`` imports (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {name for name in found if name.startswith("pcswitcher.")}


def _layer(module: str) -> int:
    """The layer of ``pcswitcher.X...``: its index in LAYERS, or the bottom for the shared modules."""
    parts = module.split(".")
    if (
        any(module == b or module.startswith(b + ".") for b in BOTTOM)
        or len(parts) < 2
        or parts[1] not in LAYERS
    ):
        return len(LAYERS)
    return LAYERS.index(parts[1])


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "pcswitcher." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for name in sorted(_imported(path)):
            if _layer(name) < _layer(module):
                upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not upward, "imports against the layers of docs/architecture.md: " + "; ".join(upward)


def test_the_layer_check_can_fail(tmp_path: Path) -> None:
    """An import from a higher layer is found (the check above can fail)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pcswitcher.run.ui import Ui\n")
    assert _imported(module) == {"pcswitcher.run.ui", "pcswitcher.run.ui.Ui"}
    assert _layer("pcswitcher.run.ui") < _layer("pcswitcher.jobs.runner")
    assert _layer("pcswitcher.remote.agent.TAG") > _layer("pcswitcher.jobs.runner")


def test_the_layers_are_the_documented_ones() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert "The layers, top to bottom: " + ", ".join(f"`{name}`" for name in LAYERS) + ", then" in text
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == set(LAYERS)
