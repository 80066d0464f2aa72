"""The guard: `Postroom.acting_as(actor)` checks each service call against the permission table,
runs it as the actor, and audits changes (denials too), with no secret in the audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from postroom.accounts.actor import Actor, current_actor
from postroom.accounts.audit import AuditLog
from postroom.accounts.guard import guarded
from postroom.accounts.permissions import permissions_of
from postroom.accounts.records import AuditFilter
from postroom.app import Postroom
from postroom.errors import PermissionDenied
from postroom.testing.smtp_server import CaptureServer

PASSWORD = "a password of some length"


def actor(role: str, name: str = "") -> Actor:
    return Actor(name or role, role, permissions_of(role), "console", "192.0.2.10")


def test_permissions_are_checked_and_changes_audited(
        capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
        database_url: str) -> None:
    postroom = make_postroom(database_url, capture())
    viewer = postroom.acting_as(actor("viewer"))
    with pytest.raises(PermissionDenied, match="users:manage") as denied:
        viewer.accounts.create_user("mallory", "admin", PASSWORD)
    assert denied.value.permission == "users:manage"
    admin = postroom.acting_as(actor("admin", "ann"))
    admin.accounts.create_user("olga", "operator", PASSWORD)
    made = admin.accounts.create_token("olga", name="ci")
    admin.accounts.set_password("olga", PASSWORD + " new")
    disabled = admin.accounts.disable_user("olga")
    assert disabled.disabled
    assert [u.name for u in admin.accounts.list_users()] == ["olga"]  # users:manage: audited
    assert admin.accounts.audit(limit=1)[0].action == "accounts.list_users"  # a read: not

    entries = postroom.accounts.audit()
    assert [(e.actor, e.action, e.target, e.outcome) for e in reversed(entries)] == [
        ("viewer", "accounts.create_user", "mallory", "denied"),
        ("ann", "accounts.create_user", "olga", "ok"),
        ("ann", "accounts.create_token", "olga", "ok"),
        ("ann", "accounts.set_password", "olga", "ok"),
        ("ann", "accounts.disable_user", "olga", "ok"),
        ("ann", "accounts.list_users", "", "ok"),
    ]
    last = entries[1]
    assert (last.before["disabled"], last.after["disabled"]) == (False, True)
    assert (last.role, last.origin, last.remote) == ("admin", "console", "192.0.2.10")
    assert entries[5].detail == "lacks the permission users:manage"
    dump = json.dumps([e.to_json() for e in entries])
    for secret in [PASSWORD, made.token, made.token[3:]]:
        assert secret not in dump
    assert entries[3].after["info"]["name"] == "ci"  # the token's public face is kept


def test_methods_outside_the_table_and_non_services_are_refused(
        capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
        sqlite_url: str) -> None:
    postroom = make_postroom(sqlite_url, capture())
    admin = postroom.acting_as(actor("admin"))
    with pytest.raises(PermissionDenied, match="not in the permission table"):
        admin.accounts.store  # noqa: B018  (the raw store is no service method)
    with pytest.raises(AttributeError):
        admin.settings  # noqa: B018
    with pytest.raises(AttributeError):
        admin.accounts._hasher  # noqa: B018
    [entry] = postroom.accounts.audit(AuditFilter(outcome="denied"))
    assert entry.action == "accounts.store"


class Sending:
    """A stand-in concern with an async method, to show the guard waits for it."""

    def __init__(self) -> None:
        self.seen: list[Actor | None] = []

    async def send(self, delivery_id: int) -> dict[str, int]:
        await asyncio.sleep(0)
        self.seen.append(current_actor())
        if delivery_id < 0:
            raise ValueError("no such delivery")
        return {"delivery": delivery_id, "sent": 3}


def test_async_methods_run_as_the_actor_and_are_audited(
        capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
        sqlite_url: str) -> None:
    postroom = make_postroom(sqlite_url, capture())
    sending = Sending()
    container = SimpleNamespace(sending=sending, accounts=postroom.accounts)
    audit = AuditLog(postroom.accounts.store, postroom.clock)
    sender, viewer = actor("sender", "sue"), actor("viewer", "vic")

    assert asyncio.run(guarded(container, sender, audit).sending.send(7)) == {
        "delivery": 7, "sent": 3}
    assert sending.seen == [sender] and current_actor() is None
    with pytest.raises(ValueError):
        asyncio.run(guarded(container, sender, audit).sending.send(-1))
    with pytest.raises(PermissionDenied, match="deliveries:send"):
        asyncio.run(guarded(container, viewer, audit).sending.send(8))
    assert len(sending.seen) == 2  # the viewer's call never ran
    rows = [(e.actor, e.target, e.outcome, e.after) for e in
            reversed(postroom.accounts.audit(AuditFilter(action="sending")))]
    assert rows == [("sue", "7", "ok", {"delivery": 7, "sent": 3}),
                    ("sue", "-1", "error", {"delivery_id": -1}),
                    ("vic", "8", "denied", None)]


def test_quarantine_and_rule_changes_keep_before_and_after(
        capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
        sqlite_url: str) -> None:
    postroom = make_postroom(sqlite_url, capture())
    operator = postroom.acting_as(actor("operator", "otto"))
    assert operator.quarantine.denylist(["Spam@Example.COM"]) == 1
    assert operator.quarantine.release_addresses(["Spam@example.com"]) == 1
    with pytest.raises(PermissionDenied, match="rules:manage"):
        operator.bounces.add_rule(rule_id="r1", pattern="mailbox is full", status="",
                                  failure_type="soft", reason=5, description="", position=None)
    admin = postroom.acting_as(actor("admin", "ann"))
    admin.bounces.add_rule(rule_id="r1", pattern="mailbox is full", status="",
                           failure_type="soft", reason=5, description="full", position=None)
    admin.bounces.edit_rule("r1", pattern="mailbox (is )?full")
    denylisted, released, refused, added, edited = reversed(postroom.accounts.audit())
    assert (denylisted.target, denylisted.before["addresses"]) == (
        "Spam@Example.COM", {"Spam@Example.COM": "valid"})
    assert released.before["addresses"]["Spam@example.com"]["status"] == "denylisted"
    assert released.after == 1 and released.actor == "otto"
    assert (refused.outcome, refused.action) == ("denied", "bounces.add_rule")
    assert added.after["pattern"] == "mailbox is full" and added.before is None
    assert (edited.before["pattern"], edited.after["pattern"]) == (
        "mailbox is full", "mailbox (is )?full")
