"""Writing the audit log, and keeping secrets out of it.

`redact` is applied to everything the guard records (arguments, before and after): a value whose
key names a secret (password, token, key, secret, ...) becomes ``"[redacted]"``, and so does any
string that looks like a PEM private key or a Postroom API token, wherever it sits.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

from postroom.accounts.actor import Actor
from postroom.accounts.records import Outcome
from postroom.storage.accounts import AccountStore

__all__ = ["REDACTED", "AuditLog", "jsonable", "redact"]

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api_?key|private_?key|(^|_)key$|credential|"
    r"signature|auth|cookie|session", re.IGNORECASE)
_SECRET_TEXT = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bpr_[A-Za-z0-9_-]{20,}")
_MAX_TEXT = 4000
_MAX_ITEMS = 200
_MAX_DEPTH = 8


def jsonable(value: Any, depth: int = 0) -> Any:
    """`value` as JSON data, bounded (long texts cut, long lists shortened, deep nests cut)."""
    if depth > _MAX_DEPTH:
        return "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if isinstance(value, Enum):
        return jsonable(value.value, depth)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return jsonable(to_json(), depth + 1)
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return jsonable(model_dump(mode="json"), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                         if f.repr}, depth + 1)
    if isinstance(value, Mapping):
        items = list(value.items())[:_MAX_ITEMS]
        return {str(k): jsonable(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
    return f"<{type(value).__name__}>"


def redact(value: Any) -> Any:
    """JSON data `value` with every secret replaced by REDACTED (see the module docstring)."""
    if isinstance(value, Mapping):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "", False)
                else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and _SECRET_TEXT.search(value):
        return REDACTED
    return value


class AuditLog:
    """Appends audit entries; everything recorded goes through `jsonable` and `redact`."""

    def __init__(self, store: AccountStore, clock: Callable[[], datetime]):
        self.store = store
        self._clock = clock

    def record(self, actor: Actor, action: str, *, target: str = "", before: Any = None,
               after: Any = None, outcome: Outcome = "ok", detail: str = "") -> int:
        return self.store.append_audit(
            at=self._clock(), actor=actor.name, role=actor.role, origin=actor.origin,
            remote=actor.remote, action=action, target=str(redact(target)),
            before=redact(jsonable(before)), after=redact(jsonable(after)), outcome=outcome,
            detail=str(redact(detail)))
