"""Permission strings and the roles shipped with Postroom.

A role is a set of permissions. Read permissions end in ``:read``; everything else changes
something and is audited. `deliveries:send` is apart from `deliveries:manage` (as in listmonk v4):
an operator prepares a delivery, a sender starts it.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType

__all__ = ["ROLES", "Permission", "permissions_of"]


class Permission(StrEnum):
    RECIPIENTS_READ = "recipients:read"
    RECIPIENTS_MANAGE = "recipients:manage"          # import, edit, opt out
    TEMPLATES_READ = "templates:read"
    TEMPLATES_MANAGE = "templates:manage"            # create, update, duplicate, delete
    DELIVERIES_READ = "deliveries:read"              # list, report (counts only)
    DELIVERIES_MANAGE = "deliveries:manage"          # create, analyze, proof, resolve review
    DELIVERIES_SEND = "deliveries:send"              # send, start, pause, resume, stop, resend
    LOGS_READ = "logs:read"                          # per-recipient logs of every delivery
    BOUNCES_READ = "bounces:read"                    # bounces, rules, unqualified texts
    BOUNCES_MANAGE = "bounces:manage"                # fetch, process, receive
    RULES_MANAGE = "rules:manage"                    # qualification rules
    QUARANTINE_READ = "quarantine:read"
    QUARANTINE_MANAGE = "quarantine:manage"          # release, denylist
    ARCHIVE_READ = "archive:read"                    # archive status, ledger
    ARCHIVE_VERIFY = "archive:verify"                # verify the archive and the ledger
    ARCHIVE_MANAGE = "archive:manage"                # Email BCC off, flush, ledger keys
    OPERATIONS_READ = "operations:read"              # health, metrics, workers
    OPERATIONS_MANAGE = "operations:manage"          # run workers, purge mirrors
    USERS_MANAGE = "users:manage"                    # users, roles, other users' tokens
    AUDIT_READ = "audit:read"
    SETTINGS_READ = "settings:read"                  # instance settings (never secrets)


_ALL = frozenset(Permission)
_READ = frozenset(p for p in Permission if p.value.endswith(":read")
                  and p not in {Permission.LOGS_READ, Permission.ARCHIVE_READ,
                                Permission.AUDIT_READ, Permission.SETTINGS_READ})
_OPERATOR = _READ | {
    Permission.RECIPIENTS_MANAGE, Permission.TEMPLATES_MANAGE, Permission.DELIVERIES_MANAGE,
    Permission.LOGS_READ, Permission.QUARANTINE_MANAGE,
}
_SENDER = _OPERATOR | {Permission.DELIVERIES_SEND}
_COMPLIANCE = _READ | {
    Permission.LOGS_READ, Permission.ARCHIVE_READ, Permission.ARCHIVE_VERIFY,
    Permission.AUDIT_READ,
}

ROLES: MappingProxyType[str, frozenset[Permission]] = MappingProxyType({
    "admin": _ALL,
    "operator": frozenset(_OPERATOR),
    "sender": frozenset(_SENDER),
    "viewer": _READ,
    "compliance": frozenset(_COMPLIANCE),
})


def permissions_of(role: str) -> frozenset[Permission]:
    """The permissions of a shipped role; `KeyError` names an unknown one."""
    return ROLES[role]
