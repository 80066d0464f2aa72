"""The surfaces (CLI, web) go through the application services, never the store: a rule a
surface applies on its own is a rule the other surfaces miss (issue 13)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "postroom"
SURFACES = sorted([*PACKAGE.glob("cli/*.py"), *PACKAGE.glob("web/**/*.py")])
# The container's attributes that are not services; `store` is for wiring, tests and benches.
FORBIDDEN = {"store", "context"}


def _reaches(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            target = ast.unparse(node.value)
            if "postroom" in target.lower():
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "postroom.storage"):
            found.append(f"{path.name}:{node.lineno}: imports {node.module}")
    return found


@pytest.mark.parametrize("path", SURFACES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_a_surface_never_reaches_into_the_store(path: Path) -> None:
    found = _reaches(path)
    assert not found, "through a service instead: " + "; ".join(found)


def test_the_check_sees_a_store_access_and_a_storage_import(tmp_path: Path) -> None:
    module = tmp_path / "surface.py"
    module.write_text("from postroom.storage.sql import SqlStore\n\n"
                      "def f(ctx):\n    return state(ctx).postroom().store.list_rules()\n",
                      encoding="utf-8")
    assert [line.split(": ", 1)[1] for line in _reaches(module)] == [
        "imports postroom.storage.sql", "state(ctx).postroom().store"]
