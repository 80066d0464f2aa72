"""What `GET /metrics` and `health` read from the store, counted when they ask.

Counting at the time of asking (not in process memory) makes every process that serves
`/metrics` report the same numbers, whichever workers did the sending (ADR 0018b). Each query
is one indexed or sequential pass over one table; none holds a lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, case, func, select

from postroom.storage.schema import archive_outbox, as_utc, bounces, delivery_logs

__all__ = ["StoreMetrics", "oldest_pending_archive", "read_metrics"]


@dataclass(frozen=True, slots=True)
class StoreMetrics:
    logs_by_status: dict[str, int]  # delivery logs (one per message) by status
    sent_total: int  # logs ever accepted by the next hop (a later bounce does not subtract)
    sent_recent: int  # of those, accepted within the `recent` window
    archive_by_state: dict[str, int]  # archive copies: pending, archived, failed
    archive_oldest_pending: datetime | None  # when the oldest pending copy was recorded
    bounces_by_state: dict[str, int]  # stored bounce mail: new, processed, unattributed, ...



def oldest_pending_archive(engine: Engine) -> datetime | None:
    """When the oldest archive copy still pending was recorded (None: none is pending)."""
    query = select(func.min(archive_outbox.c.created_at)).where(
        archive_outbox.c.state == "pending")
    with engine.connect() as conn:
        return as_utc(conn.execute(query).scalar())


def read_metrics(engine: Engine, *, now: datetime, recent: timedelta) -> StoreMetrics:
    """The counts, as the store holds them at `now`."""
    since = now - recent
    with engine.connect() as conn:
        logs = {str(status): int(n) for status, n in conn.execute(
            select(delivery_logs.c.status, func.count()).group_by(delivery_logs.c.status))}
        sent_total, sent_recent = conn.execute(select(
            func.count(delivery_logs.c.sent_at),
            func.coalesce(func.sum(case((delivery_logs.c.sent_at >= since, 1), else_=0)), 0),
        )).one()
        archive = {str(state): int(n) for state, n in conn.execute(
            select(archive_outbox.c.state, func.count()).group_by(archive_outbox.c.state))}
        stored = {str(state): int(n) for state, n in conn.execute(
            select(bounces.c.state, func.count()).group_by(bounces.c.state))}
    return StoreMetrics(logs, int(sent_total), int(sent_recent), archive,
                        oldest_pending_archive(engine), stored)
