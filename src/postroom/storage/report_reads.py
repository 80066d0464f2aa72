"""Reads for a delivery's report beyond the counts: its throughput over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, func, select

from postroom.storage.schema import delivery_logs

__all__ = ["Timeline", "sent_timeline"]

MAX_BUCKETS = 60


@dataclass(frozen=True, slots=True)
class Timeline:
    """Messages accepted per bucket of `bucket_seconds`, from `start` on."""

    start: datetime
    bucket_seconds: float
    counts: list[int]

    def rates(self) -> list[float]:
        """Messages per second in each bucket."""
        return [count / self.bucket_seconds for count in self.counts]


def buckets(first: datetime, last: datetime) -> tuple[float, int]:
    """The bucket width (at least 1 s) and how many (at most MAX_BUCKETS) cover first..last,
    the last acceptance included."""
    span = (last - first).total_seconds()
    width = max(1.0, span / MAX_BUCKETS)
    return width, min(MAX_BUCKETS, int(span // width) + 1)


def sent_timeline(engine: Engine, delivery_id: int, first: datetime | None,
                  last: datetime | None) -> Timeline | None:
    """The delivery's acceptances (`sent_at`) counted per bucket between its first and last
    one, in one pass over its logs (one filtered count per bucket). None: nothing sent."""
    if first is None or last is None:
        return None
    width, count = buckets(first, last)
    edges = [first + timedelta(seconds=width * i) for i in range(count + 1)]
    c = delivery_logs.c
    columns = [func.count().filter(and_(c.sent_at >= edges[i], c.sent_at < edges[i + 1]))
               for i in range(count - 1)]
    columns.append(func.count().filter(c.sent_at >= edges[count - 1]))  # up to `last`
    with engine.connect() as conn:
        row = conn.execute(select(*columns).where(c.delivery_id == delivery_id,
                                                  c.sent_at.is_not(None))).one()
    return Timeline(first, width, [int(n) for n in row])
