"""Storage of recipients: the CSV import's upsert, lookups by address, opting out. Mixed into
`SqlStore`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, or_, select, update

from postroom.domain.models import Recipient, RecipientRow, UpsertCounts
from postroom.storage.common import chunks, insert_new, to_recipient
from postroom.storage.schema import recipients

__all__ = ["RecipientStore"]


class RecipientStore:
    engine: Engine

    def upsert_recipients(self, rows: Sequence[RecipientRow], now: datetime) -> UpsertCounts:
        """Insert new recipients and update existing ones (matched by email), in one transaction.

        An update changes only the columns the row was given and merges custom fields. New
        addresses are inserted first (`insert_new`), so the existing rows' fields are read under
        the write lock or their row locks: an import running at the same time is waited for and
        merged with, never overwritten (tests/integration/test_store_races.py).
        """
        latest = {row.email: row for row in rows}  # the last row for an address wins
        with self.engine.begin() as conn:
            fresh = insert_new(conn, recipients, [
                {"email": row.email, "email_key": row.email.lower(),
                 "first_name": row.first_name, "last_name": row.last_name,
                 "email_format": str(row.email_format), "opted_out": row.opted_out,
                 "fields": row.fields or {}, "created_at": now, "updated_at": now}
                for row in latest.values()], "email")
            known = [email for email in latest if email not in fresh]
            existing = {
                row.email: row.fields or {}
                for row in conn.execute(select(recipients.c.email, recipients.c.fields)
                                        .where(recipients.c.email.in_(known))
                                        .with_for_update())
            } if known else {}
            for email, fields in existing.items():
                row = latest[email]
                values: dict[str, Any] = {"fields": {**fields, **(row.fields or {})},
                                          "updated_at": now}
                for column in row.given:
                    value = getattr(row, column)
                    values[column] = str(value) if column == "email_format" else value
                conn.execute(update(recipients).where(recipients.c.email == email)
                             .values(**values))
        return UpsertCounts(inserted=len(fresh), updated=len(existing))

    def recipient_ids(self, emails: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self.engine.connect() as conn:
            for batch in chunks(emails):
                query = select(recipients.c.email, recipients.c.id).where(
                    recipients.c.email.in_(batch)
                )
                found.update({row.email: row.id for row in conn.execute(query)})
        return found

    def count_recipients(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(recipients)) or 0)

    def recipient_by_email(self, email: str) -> Recipient | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(recipients).where(
                or_(recipients.c.email == email,
                    recipients.c.email_key == email.lower()))
                .order_by(recipients.c.id).limit(1)).first()
        return to_recipient(row) if row is not None else None

    def opt_out(self, recipient_id: int, now: datetime) -> bool:
        """Opt a recipient out; False when they already were."""
        with self.engine.begin() as conn:
            return conn.execute(update(recipients)
                                .where(recipients.c.id == recipient_id,
                                       recipients.c.opted_out.is_(False))
                                .values(opted_out=True, updated_at=now)).rowcount == 1
