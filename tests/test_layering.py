"""House rules enforced: the sans-I/O core imports no I/O or clock module, and
only tether.aio (plus the faces and tools built on it) imports asyncio."""

from __future__ import annotations

import ast
import pathlib

import tether

SRC = pathlib.Path(tether.__file__).parent
FORBIDDEN_IN_CORE = {"asyncio", "socket", "ssl", "time", "threading", "selectors", "aiofastnet"}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_io() -> None:
    files = sorted((SRC / "protocol").glob("*.py"))
    assert files
    for path in files:
        bad = imported_modules(path) & FORBIDDEN_IN_CORE
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_public_api_is_sorted_and_importable() -> None:
    assert tether.__all__ == sorted(tether.__all__)
    assert len(set(tether.__all__)) == len(tether.__all__)
    for name in tether.__all__:
        assert getattr(tether, name) is not None
