"""Which permission each application-service method needs, in one table.

Keys are ``"<concern>.<method>"``: the attribute of the `Postroom` container and the method of
that service. `None` marks a public method (mirror pages and unsubscribe links, log-in). A
method missing from the table is refused (fail closed); a test checks every public service
method has an entry. Methods needing a permission that does not end in ``:read`` are audited.
"""

from __future__ import annotations

from types import MappingProxyType

from postroom.accounts.permissions import Permission as P

__all__ = ["REQUIRED", "audited", "required"]

REQUIRED: MappingProxyType[str, P | None] = MappingProxyType({
    # recipients
    "recipients.import_recipients": P.RECIPIENTS_MANAGE,
    "recipients.count_recipients": P.RECIPIENTS_READ,
    "recipients.list_recipients": P.RECIPIENTS_READ,
    "recipients.recipient_history": P.RECIPIENTS_READ,
    # templates
    "templates.list_templates": P.TEMPLATES_READ,
    "templates.get_template": P.TEMPLATES_READ,
    "templates.content_problems": P.TEMPLATES_READ,
    "templates.template_changed_since": P.TEMPLATES_READ,
    "templates.preview": P.TEMPLATES_READ,
    "templates.create_template": P.TEMPLATES_MANAGE,
    "templates.update_template": P.TEMPLATES_MANAGE,
    "templates.duplicate_template": P.TEMPLATES_MANAGE,
    "templates.delete_template": P.TEMPLATES_MANAGE,
    # deliveries
    "deliveries.list_deliveries": P.DELIVERIES_READ,
    "deliveries.get_delivery": P.DELIVERIES_READ,
    "deliveries.pending_count": P.DELIVERIES_READ,
    "deliveries.create_delivery": P.DELIVERIES_MANAGE,
    "deliveries.analyze": P.DELIVERIES_MANAGE,
    "deliveries.resolve_review": P.DELIVERIES_MANAGE,
    "deliveries.start": P.DELIVERIES_SEND,
    "deliveries.pause": P.DELIVERIES_SEND,
    "deliveries.resume": P.DELIVERIES_SEND,
    "deliveries.retry": P.DELIVERIES_SEND,
    "deliveries.stop": P.DELIVERIES_SEND,
    "deliveries.resend": P.DELIVERIES_SEND,
    "deliveries.logs": P.LOGS_READ,
    # sending (async IO)
    "sending.send": P.DELIVERIES_SEND,
    "sending.send_share": P.DELIVERIES_SEND,  # a helper process of `send` (ADR 0031)
    "sending.work": P.OPERATIONS_MANAGE,
    # proofs (async IO)
    "proofs.proof": P.DELIVERIES_MANAGE,
    # links: what recipients reach from a message
    "links.mirror_url": P.LOGS_READ,
    "links.open_mirror": None,
    "links.unsubscribe": None,
    "links.check_unsubscribe": None,
    "links.purge_mirrors": P.OPERATIONS_MANAGE,
    # archive
    "archive.flush": P.ARCHIVE_MANAGE,
    "archive.status": P.ARCHIVE_READ,
    "archive.verify": P.ARCHIVE_VERIFY,
    "archive.ledger_head": P.ARCHIVE_READ,
    "archive.ledger_checkpoints": P.ARCHIVE_READ,
    "archive.ledger_checkpoint": P.ARCHIVE_MANAGE,
    "archive.verify_ledger": P.ARCHIVE_VERIFY,
    "archive.export_ledger": P.ARCHIVE_VERIFY,
    # bounces and rules
    "bounces.take": P.BOUNCES_MANAGE,
    "bounces.receive": P.BOUNCES_MANAGE,
    "bounces.process": P.BOUNCES_MANAGE,
    "bounces.examine": P.BOUNCES_READ,
    "bounces.list_bounces": P.BOUNCES_READ,
    "bounces.bounce_results_of": P.BOUNCES_READ,
    "bounces.list_unqualified": P.BOUNCES_READ,
    "bounces.rules": P.BOUNCES_READ,
    "bounces.test_rule": P.BOUNCES_READ,
    "bounces.add_rule": P.RULES_MANAGE,
    "bounces.edit_rule": P.RULES_MANAGE,
    "bounces.delete_rule": P.RULES_MANAGE,
    # quarantine
    "quarantine.list_addresses": P.QUARANTINE_READ,
    "quarantine.get_address": P.QUARANTINE_READ,
    "quarantine.release_addresses": P.QUARANTINE_MANAGE,
    "quarantine.denylist": P.QUARANTINE_MANAGE,
    # reports
    "reports.report": P.DELIVERIES_READ,
    "reports.non_deliverables": P.BOUNCES_READ,
    "reports.metrics": P.OPERATIONS_READ,
    # operations
    "operations.health": P.OPERATIONS_READ,
    "operations.workers": P.OPERATIONS_READ,
    "operations.worker_alive": P.OPERATIONS_READ,
    "operations.worker_state": P.OPERATIONS_READ,
    # accounts
    "accounts.authenticate_password": None,
    "accounts.authenticate_token": None,
    "accounts.resume_session": None,
    "accounts.list_users": P.USERS_MANAGE,
    "accounts.create_user": P.USERS_MANAGE,
    "accounts.disable_user": P.USERS_MANAGE,
    "accounts.set_password": P.USERS_MANAGE,
    "accounts.list_tokens": P.USERS_MANAGE,
    "accounts.create_token": P.USERS_MANAGE,
    "accounts.revoke_token": P.USERS_MANAGE,
    "accounts.audit": P.AUDIT_READ,
})


def required(key: str) -> P | None:
    """The permission `key` needs; `KeyError` for a method nobody classified (refuse it)."""
    return REQUIRED[key]


def audited(key: str) -> bool:
    permission = REQUIRED[key]
    return permission is not None and not permission.value.endswith(":read")
