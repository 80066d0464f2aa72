"""bench/RESULTS.md: each benchmark owns one `## ` section and rewrites only that one."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(heading: str, text: str) -> None:
    """Replace (or add at the end) the section under `heading`, keeping the others."""
    current = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else \
        "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\s*$.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        current = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(current.rstrip("\n") + "\n", encoding="utf-8")
