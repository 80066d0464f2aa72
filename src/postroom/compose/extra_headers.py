"""Extra headers an operator adds to a template or delivery: one `Name: value` per line."""

from __future__ import annotations

import re

from postroom.errors import InputError

__all__ = ["OWNED_HEADERS", "parse_extra_headers"]

# Headers Postroom writes itself (or that must never come from a template).
OWNED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "sender", "reply-to", "subject", "date", "message-id",
    "mime-version", "content-type", "content-transfer-encoding", "return-path", "received",
    "dkim-signature", "list-unsubscribe", "list-unsubscribe-post",
})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,75}$")


def parse_extra_headers(text: str) -> tuple[tuple[str, str], ...]:
    """The headers in `text`; InputError names the line and the problem."""
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep:
            raise InputError(f"extra_headers, line {number}: expected `Name: value`")
        if not _NAME.match(name):
            raise InputError(f"extra_headers, line {number}: {name!r} is not a valid header name")
        if name.lower() in OWNED_HEADERS:
            raise InputError(f"extra_headers, line {number}: {name} is written by Postroom and "
                             "cannot be set here")
        if not value.strip():
            raise InputError(f"extra_headers, line {number}: {name} has no value")
        headers.append((name, value.strip()))
    return tuple(headers)
