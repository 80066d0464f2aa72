"""Reads for the recipients pages of the console and API: a page of recipients (searched),
and one recipient's history (each delivery that targeted them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, func, or_, select

from postroom.domain.models import Recipient
from postroom.storage.common import to_recipient
from postroom.storage.schema import address_status, deliveries, delivery_logs, recipients

__all__ = ["HistoryRow", "ScanLimitError", "count_matching", "filtered_page",
           "recipient_history", "recipient_page"]

_SCAN_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One delivery log of a recipient, with its delivery's name."""

    log_id: int
    delivery_id: int
    delivery_name: str
    status: str
    failure_type: str | None
    failure_reason: int | None
    detail: str
    sent_at: datetime | None
    updated_at: datetime | None


def _matching(search: str | None) -> Select[Any]:
    status = address_status.c.status.label("address_status")
    query = select(recipients, status).outerjoin(
        address_status, address_status.c.address == recipients.c.email)
    if search:
        pattern = search.lower()
        query = query.where(or_(
            recipients.c.email_key.contains(pattern, autoescape=True),
            func.lower(recipients.c.first_name).contains(pattern, autoescape=True),
            func.lower(recipients.c.last_name).contains(pattern, autoescape=True)))
    return query


def recipient_page(engine: Engine, *, search: str | None, limit: int,
                   offset: int) -> list[Recipient]:
    """Recipients in id order whose address or name contains `search` (any case)."""
    query = _matching(search).order_by(recipients.c.id).limit(limit).offset(offset)
    with engine.connect() as conn:
        return [to_recipient(row, row.address_status or "valid") for row in conn.execute(query)]


def count_matching(engine: Engine, search: str | None) -> int:
    query = select(func.count()).select_from(_matching(search).subquery())
    with engine.connect() as conn:
        return int(conn.scalar(query) or 0)


class ScanLimitError(Exception):
    """A filtered listing would read more recipients than its bound."""


def filtered_page(engine: Engine, *, search: str | None, wanted: Callable[[Recipient], bool],
                  limit: int, offset: int, max_scan: int) -> tuple[list[Recipient], int]:
    """The page of recipients (id order) matching `search` (in SQL) and `wanted` (the audience
    filters' own predicate, in Python: the rule a delivery's audience uses), and how many match
    in all. Reads the search's matches in id batches, at most `max_scan` of them."""
    page: list[Recipient] = []
    total = scanned = 0
    after = 0
    while True:
        query = _matching(search).where(recipients.c.id > after).order_by(
            recipients.c.id).limit(_SCAN_BATCH)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return page, total
        scanned += len(rows)
        if scanned > max_scan:
            raise ScanLimitError(f"more than {max_scan} recipients to read")
        for row in rows:
            recipient = to_recipient(row, row.address_status or "valid")
            if wanted(recipient):
                if offset <= total < offset + limit:
                    page.append(recipient)
                total += 1
        after = rows[-1].id


def recipient_history(engine: Engine, recipient_id: int, *, limit: int) -> list[HistoryRow]:
    """The recipient's delivery logs, newest delivery first."""
    c = delivery_logs.c
    query = (select(c.id, c.delivery_id, deliveries.c.name, c.status, c.failure_type,
                    c.failure_reason, c.detail, c.sent_at, c.updated_at)
             .join(deliveries, deliveries.c.id == c.delivery_id)
             .where(c.recipient_id == recipient_id)
             .order_by(c.delivery_id.desc(), c.id.desc()).limit(limit))
    with engine.connect() as conn:
        return [HistoryRow(*row) for row in conn.execute(query)]
