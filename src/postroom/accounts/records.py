"""Records of the accounts concern: users, API tokens, audit entries. Frozen values; no secret
in any of them (a password hash stays in the store, a token is shown once in `NewToken`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["ApiToken", "AuditEntry", "AuditFilter", "NewToken", "Outcome", "User"]

Outcome = Literal["ok", "denied", "error"]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role, "disabled": self.disabled,
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A token's public face: never the token, never its hash."""

    id: int
    user: str
    name: str
    role: str | None          # narrower than the user's role; None: the user's own
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {"id": self.id, "user": self.user, "name": self.name, "role": self.role,
                "created_at": iso(self.created_at), "last_used_at": iso(self.last_used_at),
                "revoked_at": iso(self.revoked_at)}


@dataclass(frozen=True, slots=True)
class NewToken:
    """What `create_token` returns: the only time the token itself exists outside the client."""

    info: ApiToken
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    role: str
    origin: str
    remote: str | None
    action: str               # "<concern>.<method>"
    target: str
    before: Any
    after: Any
    outcome: Outcome
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "actor": self.actor,
                "role": self.role, "origin": self.origin, "remote": self.remote,
                "action": self.action, "target": self.target, "before": self.before,
                "after": self.after, "outcome": self.outcome, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit entries to list; every field narrows (None: any)."""

    actor: str | None = None
    action: str | None = None     # exact "<concern>.<method>", or a concern: "templates"
    origin: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None
