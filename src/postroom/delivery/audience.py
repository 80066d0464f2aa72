"""Audience filters: `field=value`, `field!=value`, `field~text` (contains, any case).

Fields are a recipient's columns (email, first_name, last_name, email_format, opted_out) or any
custom field. Filters are parsed when the delivery is created, so a typo fails early.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postroom.domain.models import Recipient
from postroom.errors import InputError

__all__ = ["COLUMNS", "Filter", "matcher", "parse_filter"]

COLUMNS = ("email", "first_name", "last_name", "email_format", "opted_out")

_FILTER = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(!=|=|~)\s*(.*?)\s*$", re.S)


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: str
    value: str

    def matches(self, recipient: Recipient) -> bool:
        actual = _value(recipient, self.field)
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        return self.value.lower() in actual.lower()


def _value(recipient: Recipient, field: str) -> str:
    if field == "opted_out":
        return "true" if recipient.opted_out else "false"
    if field in COLUMNS:
        return str(getattr(recipient, field))
    return str(recipient.fields.get(field, ""))


def parse_filter(text: str) -> Filter:
    match = _FILTER.match(text)
    if match is None:
        raise InputError(f"filter {text!r}: expected FIELD=VALUE, FIELD!=VALUE or FIELD~TEXT")
    field, op, value = match.groups()
    if value[:1] in ("=", "~") or (op == "~" and value[:1] == "="):
        raise InputError(f"filter {text!r}: {op + value[0]!r} is not an operator; use "
                         f"{field}=VALUE, {field}!=VALUE or {field}~TEXT")
    return Filter(field, op, value)


def matcher(filters: Sequence[str]) -> Callable[[Recipient], bool]:
    """One predicate that holds when every filter does."""
    parsed = [parse_filter(text) for text in filters]
    return lambda recipient: all(f.matches(recipient) for f in parsed)
