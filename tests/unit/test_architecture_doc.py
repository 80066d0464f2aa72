"""docs/architecture.md names every module under src/postroom, so the map cannot drift from the
code unnoticed (issue 10, point 11)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "postroom"
DOC = ROOT / "docs" / "architecture.md"
MIGRATIONS = PACKAGE / "storage" / "migrations" / "versions"


def _modules() -> list[Path]:
    return sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py")
                  if path.name not in ("__init__.py", "__main__.py")
                  and MIGRATIONS not in path.parents)


def test_every_module_is_in_the_architecture_page() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [str(path) for path in _modules() if f"`{path.as_posix()}`" not in text]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


def test_every_migration_is_in_the_architecture_page() -> None:
    text = DOC.read_text(encoding="utf-8")
    revisions = sorted(path.name.split("_")[0] for path in MIGRATIONS.glob("[0-9]*.py"))
    assert revisions
    missing = [revision for revision in revisions if f"`{revision}`" not in text]
    assert not missing, f"docs/architecture.md does not name migrations: {', '.join(missing)}"
