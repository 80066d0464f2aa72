"""The command-line side of the DSN generators (mta_dsn.py, exim_dsn.py): write the bounces an
MTA produced into a corpus folder, one `<prefix>-<scenario>.eml` each, and say what is missing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path


def write_samples(argv: list[str], usage: str, generate: Callable[[], dict[str, bytes]], *,
                  prefix: str, scenarios: Iterable[str], missing_hint: str = "") -> int:
    """Exit code: 2 for a wrong call, 1 when a scenario produced no bounce, 0 otherwise."""
    if len(argv) != 1:
        print(usage)
        return 2
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    found = generate()
    for name, data in sorted(found.items()):
        path = folder / f"{prefix}-{name}.eml"
        path.write_bytes(data)
        print(f"wrote {path}")
    missing = sorted(set(scenarios) - set(found))
    if missing:
        print(f"no bounce for: {', '.join(missing)}{missing_hint}")
    return 1 if missing else 0
