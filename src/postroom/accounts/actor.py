"""The actor: on whose behalf an application service runs, and from where.

The guard sets the current actor for the length of a service call (a context variable, so it
follows asyncio tasks); a service that needs a finer check than its method's permission (Email
BCC turned off on a template that has it on) asks `current_actor()`.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from postroom.accounts.permissions import Permission, permissions_of
from postroom.errors import PermissionDenied

__all__ = ["Actor", "Origin", "acting", "cli_actor", "current_actor"]

Origin = Literal["cli", "api", "console", "system"]


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    role: str
    permissions: frozenset[Permission]
    origin: Origin
    remote: str | None = None     # client address for the API and console; None for the CLI

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(permission.value, actor=self.name, role=self.role)


def cli_actor(name: str | None = None) -> Actor:
    """Whoever runs the CLI on the machine: the OS user, with every permission.

    The CLI talks to the database directly, so it can do anything its user can do with the
    database file or URL anyway; its changes are still audited under the OS user's name.
    """
    try:
        who = name or getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor(name=who, role="admin", permissions=permissions_of("admin"), origin="cli")


_current: ContextVar[Actor | None] = ContextVar("postroom_actor", default=None)


def current_actor() -> Actor | None:
    return _current.get()


@contextlib.contextmanager
def acting(actor: Actor) -> Iterator[Actor]:
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)
