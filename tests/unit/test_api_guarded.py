"""The REST API reaches the application services only as an actor: the raw container is read
for `acting_as`, token authentication and settings, nothing else (ADR 0025)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "postroom"
ALLOWED = {"acting_as", "accounts.authenticate_token", "settings.database_url",
           "settings.web"}


def _chains(source: str) -> set[str]:
    tree = ast.parse(source)
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            child.parent = parent  # type: ignore[attr-defined]
    uses = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(
                getattr(node, "parent", None), ast.Attribute):
            text = ast.unparse(node)
            head, _, rest = text.partition("postroom.")
            if rest and (head == "" or head.endswith("state.")):
                uses.add(rest)
    return uses


def test_the_api_uses_the_container_only_through_acting_as() -> None:
    for path in sorted((PACKAGE / "web" / "api").glob("*.py")):
        uses = _chains(path.read_text(encoding="utf-8"))
        raw = [u for u in uses if not any(u == a or u.startswith(a + ".") for a in ALLOWED)]
        assert not raw, f"{path.name}: {raw}"


def test_the_check_sees_a_raw_service_call() -> None:
    source = ("def f(request, postroom):\n"
              "    request.app.state.postroom.deliveries.stop(1)\n"
              "    postroom.templates.update_template('x', {})\n"
              "    return postroom.acting_as(a)\n")
    assert _chains(source) == {"deliveries.stop", "templates.update_template", "acting_as"}
