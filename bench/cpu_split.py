"""Where a send's CPU goes: a cProfile of it split into render / SMTP / store / loop / engine.

    python bench/cpu_split.py SEND.prof [MESSAGES]

Each function's own time (tottime) goes to the part its file belongs to; a built-in function
(no file: `sqlite3.Cursor.execute`, `socket.send`, `len`) goes to the parts of the functions
that called it, in proportion to what each caller spent in it. cProfile's overhead is larger on
many small calls, so the shares are read as proportions and applied to the CPU time of the same
send measured without the profiler (bench/throughput.py --profile prints both).
"""

from __future__ import annotations

import pstats
import sys
from collections import defaultdict

PARTS = ("render", "SMTP", "store", "loop", "engine", "other")

# The first matching fragment of a function's file decides its part.
_BY_FILE: tuple[tuple[str, str], ...] = (
    ("/postroom/compose/", "render"), ("/postroom/delivery/plan.py", "render"),
    ("/jinja2/", "render"), ("/markupsafe/", "render"), ("/dkim/", "render"),
    ("/email/", "render"), ("quopri", "render"), ("base64", "render"),
    ("/nacl/", "render"), ("/cryptography/", "render"),
    ("/postroom/transport/", "SMTP"), ("/aiosmtplib/", "SMTP"), ("asyncio/streams.py", "SMTP"),
    ("asyncio/selector_events.py", "SMTP"), ("asyncio/sslproto.py", "SMTP"), ("/ssl.py", "SMTP"),
    ("/postroom/storage/", "store"), ("/sqlalchemy/", "store"), ("/psycopg", "store"),
    ("sqlite3", "store"),
    ("/asyncio/", "loop"), ("selectors.py", "loop"),
    ("/postroom/", "engine"),
)
# Built-ins whose part is plain from their own name, whoever calls them.
_BY_NAME: tuple[tuple[str, str], ...] = (
    ("sqlite3.", "store"), ("psycopg", "store"), ("_socket.socket", "SMTP"),
    ("_ssl.", "SMTP"), ("select.epoll", "loop"),
)

Func = tuple[str, int, str]


def part_of(func: Func) -> str | None:
    """The part of a function with a file, or of a built-in known by name; None otherwise."""
    filename, _, name = func
    if filename == "~" or filename.startswith("<"):
        return next((part for fragment, part in _BY_NAME if fragment in name), None)
    return next((part for fragment, part in _BY_FILE if fragment in filename), "other")


def split(stats: pstats.Stats) -> dict[str, float]:
    """Seconds of own time per part (see the module doc)."""
    table = stats.stats  # type: ignore[attr-defined]
    seconds: dict[str, float] = defaultdict(float)
    for func, (_, _, own, _, callers) in table.items():
        part = part_of(func)
        if part is not None:
            seconds[part] += own
            continue
        by_caller = {caller: figures[2] for caller, figures in callers.items()}
        total = sum(by_caller.values())
        if not total:
            seconds["other"] += own
            continue
        for caller, spent in by_caller.items():
            seconds[part_of(caller) or "other"] += own * spent / total
    return {part: seconds.get(part, 0.0) for part in PARTS}


def per_message(shares: dict[str, float], cpu_seconds: float, messages: int) -> dict[str, float]:
    """Microseconds of CPU per message in each part: the profile's shares of `cpu_seconds`."""
    total = sum(shares.values()) or 1.0
    return {part: cpu_seconds * seconds / total / messages * 1e6
            for part, seconds in shares.items()}


def main(argv: list[str]) -> int:
    stats = pstats.Stats(argv[0])
    shares = split(stats)
    total = sum(shares.values())
    messages = int(argv[1]) if len(argv) > 1 else 0
    for part, seconds in shares.items():
        extra = f"  {seconds / messages * 1e6:8.1f} µs/message (profiled)" if messages else ""
        print(f"{part:8} {seconds:8.2f} s  {100 * seconds / total:5.1f}%{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
