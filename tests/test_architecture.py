"""The house's rules, read from the code: which package may import which, where Ray and Ray's
private names may appear, and how large a module or function may grow.

Each package's docstring states what it may import ("May import: ..."); this test reads that line,
so the rule is written once, where a reader of the package meets it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "raygenre"
# Packages under the rule; sweep/ may import everything (it is where the layers meet Ray).
RULED = ["data", "training", "grid", "report", "tools"]
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def _modules(folder: Path = PKG) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (a function-level import counts too)."""
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _allowed(package: str) -> list[str]:
    doc = ast.get_docstring(ast.parse((PKG / package / "__init__.py").read_text())) or ""
    m = re.search(r"May import:(.*?)\.(?:\s|$)", doc.replace("\n", " "))
    assert m, f"raygenre/{package}/__init__.py: its docstring has no 'May import: ...' line"
    allowed = [f"raygenre.{package}"]
    for word in re.findall(r"(raygenre(?:\.\w+)?|\.\w+)", m.group(1)):
        allowed.append("raygenre" + word if word.startswith(".") else word)
    return allowed


def _owner(name: str) -> str:
    """raygenre.data.sets.prepare -> raygenre.data; raygenre.config.Config -> raygenre.config."""
    parts = name.split(".")
    if len(parts) > 2 and (PKG / parts[1]).is_dir():
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) > 1 else name


@pytest.mark.parametrize("package", RULED)
def test_a_package_imports_only_what_its_docstring_allows(package: str) -> None:
    allowed = _allowed(package)
    wrong = []
    for path in _modules(PKG / package):
        if path.name == "__main__.py":
            continue  # `python -m raygenre.grid` is the command's fixed name: it only dispatches
        for name in _imports(path):
            if name == "raygenre":
                continue
            if name.startswith("raygenre.") and _owner(name) not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, f"allowed: {allowed}\n" + "\n".join(wrong)


def test_only_the_sweep_imports_ray() -> None:
    wrong = [f"{p.relative_to(ROOT)} imports {n}" for p in _modules()
             if "sweep" not in p.relative_to(PKG).parts
             for n in _imports(p) if n == "ray" or n.startswith("ray.")]
    assert not wrong, "\n".join(wrong)


def _private_ray_imports(path: Path) -> list[str]:
    return [n for n in _imports(path)
            if n.startswith("ray") and any(part.startswith("_") for part in n.split(".")[1:])]


def test_ray_private_modules_are_reached_only_behind_the_release_check() -> None:
    """A module that imports Ray's private modules must also ask `ray_private.checked()`, so an
    unlisted Ray takes the public path (sweep/ray_private.py says why)."""
    wrong = []
    for path in _modules():
        private = _private_ray_imports(path)
        if private and "ray_private.checked()" not in path.read_text():
            wrong.append(f"{path.relative_to(ROOT)}: {private}")
    assert not wrong, "\n".join(wrong)


def _defined_names() -> set[str]:
    """Every underscore name raygenre defines itself: attributes, functions, classes."""
    names: set[str] = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
    return names


def test_no_private_name_of_another_library_is_read_outside_the_gate() -> None:
    """`obj._x` where raygenre never defines `_x` is another library's private state (ASHA's
    `_rungs`, `atexit._run_exitfuncs`): such reads break silently on an upgrade."""
    ours = _defined_names() | {"_replace", "_asdict", "_fields", "_make", "_exit"}
    # (namedtuple's documented API, and os._exit)
    wrong = []
    for path in _modules():
        if path.name == "ray_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.attr not in ours):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} reads .{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_no_module_or_function_is_too_long_to_read() -> None:
    wrong = []
    for path in _modules():
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            wrong.append(f"{path.relative_to(ROOT)}: {lines} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines"
                                 f" (max {MAX_FUNCTION_LINES})")
    assert not wrong, "\n".join(wrong)


def test_the_rules_can_fail(tmp_path: Path) -> None:
    """The readers above see what they must: a function-level import, a private attribute."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from ray.tune import Tuner\n    import ray._private.services\n")
    assert "ray.tune.Tuner" in _imports(f)
    assert _private_ray_imports(f) == ["ray._private.services"]
    assert _owner("raygenre.data.sets.prepare") == "raygenre.data"
    assert _owner("raygenre.config.Config") == "raygenre.config"
    assert "raygenre.sweep" not in _allowed("report")
