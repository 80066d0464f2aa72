"""Email BCC cannot be turned off by an operator where a template has it on (DESIGN.md §4,
issue 13 acceptance 3): refused with the permission named, and audited."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from postroom.accounts.actor import Actor, acting
from postroom.accounts.permissions import permissions_of
from postroom.app import Postroom
from postroom.errors import PermissionDenied
from postroom.testing.smtp_server import CaptureServer

CONTENT = {"subject": "Hi", "text": "Hello\n", "from_address": "news@postroom.example"}


def actor(role: str) -> Actor:
    return Actor(role, role, permissions_of(role), "console", "192.0.2.20")


def test_only_an_administrator_turns_email_bcc_off(
        capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
        database_url: str) -> None:
    postroom = make_postroom(database_url, capture())
    postroom.templates.create_template("kept", {**CONTENT, "email_bcc": True})
    postroom.templates.create_template("plain", {**CONTENT, "email_bcc": False})
    for role in ("operator", "sender"):
        with acting(actor(role)):
            with pytest.raises(PermissionDenied, match="archive:manage") as denied:
                postroom.templates.update_template("kept", {"email_bcc": False})
            assert denied.value.permission == "archive:manage"
            with pytest.raises(PermissionDenied, match="cannot turn Email BCC off"):
                postroom.deliveries.create_delivery("kept", overrides={"email_bcc": False})
            # what an operator may do: other changes, BCC on, and off where it was off
            postroom.templates.update_template("kept", {"subject": f"Hi from {role}"})
            postroom.templates.update_template("plain", {"email_bcc": True})
            postroom.templates.update_template("plain", {"email_bcc": True, "subject": "x"})
            postroom.deliveries.create_delivery("kept", overrides={"subject": "Override"})
    assert postroom.store.get_template("kept").properties.email_bcc is True
    assert [d.properties.email_bcc for d in postroom.store.list_deliveries()] == [True, True]
    with acting(actor("admin")):
        delivery, _ = postroom.deliveries.create_delivery("kept", overrides={"email_bcc": False})
        changed = postroom.templates.update_template("kept", {"email_bcc": False})
        assert not changed.properties.email_bcc
    assert not delivery.properties.email_bcc


def test_the_refusal_is_audited(capture: Callable[..., CaptureServer],
                                make_postroom: Callable[..., Postroom], sqlite_url: str) -> None:
    postroom = make_postroom(sqlite_url, capture())
    postroom.templates.create_template("kept", {**CONTENT, "email_bcc": True})
    operator = postroom.acting_as(actor("operator"))
    with pytest.raises(PermissionDenied):
        operator.templates.update_template("kept", {"email_bcc": False})
    with pytest.raises(PermissionDenied):
        operator.deliveries.create_delivery("kept", overrides={"email_bcc": False})
    rows = postroom.accounts.audit()
    assert [(e.actor, e.action, e.target, e.outcome) for e in reversed(rows)] == [
        ("operator", "templates.update_template", "kept", "denied"),
        ("operator", "deliveries.create_delivery", "kept", "denied"),
    ]
    assert all("archive:manage" in e.detail for e in rows)
    assert rows[1].before["properties"]["email_bcc"] is True  # the template as it was
    assert rows[1].after == {"name": "kept", "data": {"email_bcc": False}}


def test_deleting_a_template_with_email_bcc_on_takes_an_administrator(
        capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
        sqlite_url: str) -> None:
    """Else an operator turns it off by deleting the template and making it again without."""
    postroom = make_postroom(sqlite_url, capture())
    postroom.templates.create_template("kept", {**CONTENT, "email_bcc": True})
    postroom.templates.create_template("plain", {**CONTENT, "email_bcc": False})
    operator = postroom.acting_as(actor("operator"))
    with pytest.raises(PermissionDenied, match="cannot turn Email BCC off on template 'kept'"):
        operator.templates.delete_template("kept")
    assert postroom.store.get_template("kept").properties.email_bcc is True
    operator.templates.delete_template("plain")  # nothing to stop: an operator may
    [denied] = [e for e in postroom.accounts.audit() if e.outcome == "denied"]
    assert (denied.actor, denied.action, denied.target) == (
        "operator", "templates.delete_template", "kept")
    postroom.acting_as(actor("admin")).templates.delete_template("kept")
    assert "kept" not in [t.name for t in postroom.store.list_templates()]
