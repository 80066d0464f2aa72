"""Email BCC stays on unless an administrator turns it off (DESIGN.md §4).

A finer check than a method's permission: an operator may update a template or create a
delivery, but not turn Email BCC off where the template has it on. Services call
`check_email_bcc_kept` with the before and after values; it asks `current_actor()`, set by the
guard. A call made with no actor (Postroom's own code, not on anyone's behalf) is not checked.
"""

from __future__ import annotations

from postroom.accounts.actor import current_actor
from postroom.accounts.permissions import Permission
from postroom.errors import PermissionDenied

__all__ = ["check_email_bcc_kept"]


def check_email_bcc_kept(*, was_on: bool, now_on: bool, where: str) -> None:
    """PermissionDenied (archive:manage) when the acting user turns Email BCC off on `where`
    without the permission to."""
    actor = current_actor()
    if not was_on or now_on or actor is None or actor.can(Permission.ARCHIVE_MANAGE):
        return
    raise PermissionDenied(
        Permission.ARCHIVE_MANAGE.value, actor=actor.name, role=actor.role,
        detail=f"{actor.name} ({actor.role}) cannot turn Email BCC off on {where}: that needs "
               f"the permission {Permission.ARCHIVE_MANAGE.value} (an administrator)")
