"""The guard: every application-service call made on behalf of an actor goes through here.

`guarded(container, actor, audit)` is the view `Postroom.acting_as(actor)` returns. Reaching
``view.<concern>.<method>`` looks the key up in `policy.REQUIRED`: a method nobody classified
is refused (fail closed), a missing permission raises PermissionDenied naming it. The call then
runs inside `acting(actor)`, so a service needing a finer check asks `current_actor()`.
Audited methods (those needing a permission that is not ``:read``) get one audit row each:
``ok`` with the result as *after*, ``denied`` (also for refusals before the call) or ``error``;
for the keys in `SNAPSHOTS`, the object's state before the call is read and kept as *before*.
Async methods are wrapped by an async wrapper, so the audit row is written when they finish.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from postroom.accounts import policy
from postroom.accounts.actor import Actor, acting
from postroom.accounts.audit import AuditLog
from postroom.errors import PermissionDenied, PostroomError

__all__ = ["SNAPSHOTS", "GuardedService", "GuardedView", "guarded"]

Snapshot = Callable[[Any, Mapping[str, Any]], Any]
_MAX_BEFORE = 200  # addresses read for the before of a quarantine change


def _template(container: Any, args: Mapping[str, Any]) -> Any:
    return container.templates.get_template(args["name"])


def _user(container: Any, args: Mapping[str, Any]) -> Any:
    return container.accounts.store.get_user(args["name"])


def _token(container: Any, args: Mapping[str, Any]) -> Any:
    return container.accounts.store.get_token(int(args["token_id"]))


def _addresses(container: Any, args: Mapping[str, Any]) -> Any:
    service = container.quarantine
    named = {a: service.get_address(a) for a in list(args.get("addresses") or ())[:_MAX_BEFORE]}
    held = service.list_addresses(domain=args["domain"], limit=_MAX_BEFORE) if args.get(
        "domain") else []
    return {"addresses": {a: state or "valid" for a, state in named.items()},
            **({"domain": held} if args.get("domain") else {})}


def _rule(container: Any, args: Mapping[str, Any]) -> Any:
    return next((r for r in container.bounces.rules() if r.id == args["rule_id"]), None)


# What the object looked like before the call, per audited key (read as the raw container: the
# snapshot is the guard's own read, not the actor's).
SNAPSHOTS: dict[str, Snapshot] = {
    "templates.update_template": _template,
    "templates.delete_template": _template,
    "accounts.disable_user": _user,
    "accounts.set_password": _user,
    "accounts.revoke_token": _token,
    "quarantine.release_addresses": _addresses,
    "quarantine.denylist": _addresses,
    "bounces.edit_rule": _rule,
    "bounces.delete_rule": _rule,
}


def _concerns() -> frozenset[str]:
    return frozenset(key.split(".", 1)[0] for key in policy.REQUIRED)


def _arguments(function: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        bound = inspect.signature(function).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return {**{f"arg{i}": value for i, value in enumerate(args)}, **kwargs}
    bound.apply_defaults()
    return dict(bound.arguments)


def _target(arguments: Mapping[str, Any]) -> str:
    for value in arguments.values():
        if isinstance(value, PurePath):
            return value.name
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return ", ".join(value[:5]) + (f" (+{len(value) - 5})" if len(value) > 5 else "")
    return ""


@dataclass(frozen=True, slots=True)
class _Call:
    arguments: dict[str, Any]
    before: Any


class GuardedService:
    """One concern's service as seen by one actor."""

    def __init__(self, view: GuardedView, concern: str, service: Any):
        self._view = view
        self._concern = concern
        self._service = service

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = f"{self._concern}.{name}"
        view = self._view
        if key not in policy.REQUIRED:
            view.refuse(key, None, f"{key} is not in the permission table; refused")
        function = getattr(self._service, name)
        if not callable(function):
            view.refuse(key, None, f"{key} is not a service method; refused")
        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                admitted = view.admit(key, function, args, kwargs)
                with acting(view.actor):
                    try:
                        result = await function(*args, **kwargs)
                    except BaseException as exc:
                        view.failed(key, admitted, exc)
                        raise
                view.done(key, admitted, result)
                return result
            return call_async

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            admitted = view.admit(key, function, args, kwargs)
            with acting(view.actor):
                try:
                    result = function(*args, **kwargs)
                except BaseException as exc:
                    view.failed(key, admitted, exc)
                    raise
            view.done(key, admitted, result)
            return result
        return call


class GuardedView:
    """The container seen by one actor: only its service concerns, each guarded."""

    def __init__(self, container: Any, actor: Actor, audit: AuditLog):
        self._container = container
        self.actor = actor
        self._audit = audit

    def __getattr__(self, name: str) -> GuardedService:
        if name.startswith("_") or name not in _concerns():
            raise AttributeError(f"{name!r} is not a service of Postroom reachable by an actor")
        return GuardedService(self, name, getattr(self._container, name))

    def refuse(self, key: str, permission: str | None, detail: str) -> None:
        self._audit.record(self.actor, key, outcome="denied", detail=detail)
        raise PermissionDenied(permission or key, actor=self.actor.name, role=self.actor.role,
                               detail=detail)

    def admit(self, key: str, function: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> _Call:
        """Check the permission of `key` (recording a denial); the call's named arguments and
        the state before it."""
        arguments = _arguments(function, args, kwargs)
        permission = policy.required(key)
        if permission is not None and not self.actor.can(permission):
            if policy.audited(key):
                self._audit.record(self.actor, key, target=_target(arguments),
                                   outcome="denied",
                                   detail=f"lacks the permission {permission.value}")
            raise PermissionDenied(permission.value, actor=self.actor.name,
                                   role=self.actor.role)
        before = None
        if policy.audited(key) and key in SNAPSHOTS:
            try:
                before = SNAPSHOTS[key](self._container, arguments)
            except (PostroomError, AttributeError):  # nothing there: the call will say so
                before = None
        return _Call(arguments, before)

    def done(self, key: str, call: _Call, result: Any) -> None:
        if policy.audited(key):
            self._audit.record(self.actor, key, target=_target(call.arguments),
                               before=call.before,
                               after=result if result is not None else call.arguments)

    def failed(self, key: str, call: _Call, exc: BaseException) -> None:
        if not policy.audited(key):
            return
        denied = isinstance(exc, PermissionDenied)
        self._audit.record(self.actor, key, target=_target(call.arguments), before=call.before,
                           after=call.arguments, outcome="denied" if denied else "error",
                           detail=f"{type(exc).__name__}: {exc}"[:500])


def guarded(container: Any, actor: Actor, audit: AuditLog) -> GuardedView:
    return GuardedView(container, actor, audit)
