"""The shipped roles (issue 13): what each may do, and what the actor refuses."""

from __future__ import annotations

import pytest

from postroom.accounts.actor import Actor, acting, cli_actor, current_actor
from postroom.accounts.permissions import ROLES, Permission
from postroom.accounts.policy import REQUIRED, audited
from postroom.errors import PermissionDenied


def test_sending_is_its_own_permission() -> None:
    assert Permission.DELIVERIES_SEND not in ROLES["operator"]
    assert ROLES["sender"] == ROLES["operator"] | {Permission.DELIVERIES_SEND}


def test_viewer_reads_only_and_sees_no_logs_archive_or_audit() -> None:
    assert all(p.value.endswith(":read") for p in ROLES["viewer"])
    for hidden in (Permission.LOGS_READ, Permission.ARCHIVE_READ, Permission.AUDIT_READ):
        assert hidden not in ROLES["viewer"]


def test_compliance_reads_logs_archive_and_audit_but_changes_nothing() -> None:
    compliance = ROLES["compliance"]
    assert {Permission.LOGS_READ, Permission.ARCHIVE_READ, Permission.ARCHIVE_VERIFY,
            Permission.AUDIT_READ} <= compliance
    assert all(p.value.endswith(":read") or p is Permission.ARCHIVE_VERIFY for p in compliance)


def test_only_admin_manages_users_rules_and_the_archive() -> None:
    for permission in (Permission.USERS_MANAGE, Permission.RULES_MANAGE,
                       Permission.ARCHIVE_MANAGE):
        assert [role for role, perms in ROLES.items() if permission in perms] == ["admin"]


def test_denial_names_the_missing_permission() -> None:
    viewer = Actor("vera", "viewer", ROLES["viewer"], "api", "127.0.0.1")
    viewer.require(Permission.DELIVERIES_READ)
    with pytest.raises(PermissionDenied) as caught:
        viewer.require(Permission.DELIVERIES_SEND)
    assert caught.value.permission == "deliveries:send"
    assert "deliveries:send" in str(caught.value)


def test_acting_sets_and_restores_the_current_actor() -> None:
    outer = cli_actor("ops")
    assert current_actor() is None
    with acting(outer):
        assert current_actor() is outer
    assert current_actor() is None


def test_audit_covers_changes_not_reads() -> None:
    assert audited("deliveries.start") and audited("templates.update_template")
    assert not audited("deliveries.logs") and not audited("links.open_mirror")
    assert REQUIRED["links.unsubscribe"] is None
