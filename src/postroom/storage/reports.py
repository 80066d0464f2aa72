"""Reads for reports and the logs pages: counts by status, reason and domain, the send window,
the failed recipients, one log and filtered pages of logs. Mixed into `SqlStore`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, func, or_, select

from postroom.domain.models import DeliveryLog
from postroom.domain.states import LogStatus
from postroom.errors import NotFoundError
from postroom.storage.common import to_log
from postroom.storage.schema import address_status, archive_outbox, as_utc, delivery_logs

__all__ = ["ReportStore"]


class ReportStore:
    engine: Engine

    def get_log(self, log_id: int) -> DeliveryLog:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(delivery_logs, archive_outbox.c.state.label("archive_state"))
                .outerjoin(archive_outbox, archive_outbox.c.log_id == delivery_logs.c.id)
                .where(delivery_logs.c.id == log_id)).first()
        if row is None:
            raise NotFoundError(f"no delivery log #{log_id}")
        return to_log(row)

    def log_counts(self, delivery_id: int) -> list[tuple[str, str | None, int | None, int]]:
        """(status, failure type, reason, count) for one delivery."""
        c = delivery_logs.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.status, c.failure_type, c.failure_reason, func.count())
                .where(c.delivery_id == delivery_id)
                .group_by(c.status, c.failure_type, c.failure_reason)).all()
        return [(str(s), t, r, int(n)) for s, t, r, n in rows]

    def domain_counts(self, delivery_id: int | None, limit: int = 20) -> list[
        tuple[str, str, int]
    ]:
        """(recipient domain, status, count), the domains with most logs first."""
        c = delivery_logs.c
        query = select(c.domain, c.status, func.count()).group_by(c.domain, c.status)
        if delivery_id is not None:
            query = query.where(c.delivery_id == delivery_id)
        with self.engine.connect() as conn:
            rows = [(str(d or ""), str(s), int(n)) for d, s, n in conn.execute(query)]
        totals: dict[str, int] = {}
        for domain, _, count in rows:
            totals[domain] = totals.get(domain, 0) + count
        top = set(sorted(totals, key=lambda d: -totals[d])[:limit])
        return [row for row in rows if row[0] in top]

    def failure_counts(self, *, since: datetime | None = None) -> list[
        tuple[str | None, int | None, str, int]
    ]:
        """Failed logs across deliveries: (failure type, reason, recipient domain, count)."""
        c = delivery_logs.c
        query = (select(c.failure_type, c.failure_reason, c.domain, func.count())
                 .where(c.status == LogStatus.FAILED)
                 .group_by(c.failure_type, c.failure_reason, c.domain))
        if since is not None:
            query = query.where(c.updated_at >= since)
        with self.engine.connect() as conn:
            return [(t, r, str(d or ""), int(n)) for t, r, d, n in conn.execute(query)]

    def send_window(self, delivery_id: int) -> tuple[datetime | None, datetime | None, int]:
        c = delivery_logs.c
        with self.engine.connect() as conn:
            first, last, count = conn.execute(
                select(func.min(c.sent_at), func.max(c.sent_at), func.count(c.sent_at))
                .where(c.delivery_id == delivery_id, c.sent_at.is_not(None))).one()
        return as_utc(first), as_utc(last), int(count)

    def failed_recipients(self, delivery_id: int, reasons: Sequence[int] | None) -> list[int]:
        """Recipients whose logs failed (with one of `reasons`) and whose address is not in
        quarantine or on the denylist now."""
        c = delivery_logs.c
        query = (select(c.recipient_id)
                 .outerjoin(address_status, address_status.c.address == c.email)
                 .where(c.delivery_id == delivery_id, c.status == LogStatus.FAILED,
                        c.recipient_id.is_not(None),
                        or_(address_status.c.status.is_(None),
                            address_status.c.status.not_in(["quarantine", "denylisted"])))
                 .order_by(c.id))
        if reasons:
            query = query.where(c.failure_reason.in_(list(reasons)))
        with self.engine.connect() as conn:
            return [int(r) for r in conn.scalars(query)]

    def list_logs(self, delivery_id: int, *, status: str | None = None,
                  reason: int | None = None, email: str | None = None,
                  archive: str | None = None, limit: int = 100,
                  offset: int = 0) -> list[DeliveryLog]:
        query = (select(delivery_logs, archive_outbox.c.state.label("archive_state"))
                 .outerjoin(archive_outbox, archive_outbox.c.log_id == delivery_logs.c.id)
                 .where(delivery_logs.c.delivery_id == delivery_id))
        if status:
            query = query.where(delivery_logs.c.status == status)
        if reason is not None:
            query = query.where(delivery_logs.c.failure_reason == reason)
        if email:
            query = query.where(delivery_logs.c.email.contains(email, autoescape=True))
        if archive == "none":
            query = query.where(archive_outbox.c.id.is_(None))
        elif archive:
            query = query.where(archive_outbox.c.state == archive)
        query = query.order_by(delivery_logs.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [to_log(row) for row in conn.execute(query)]
