"""The AnalysisStore protocol in memory, for the analysis tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime

from postroom.delivery.analysis import AudienceRow, LogRow
from postroom.domain.models import Delivery, NewLog, Recipient
from postroom.domain.states import DeliveryState


def audience_row(recipient: Recipient, position: int = 0) -> AudienceRow:
    """The row a store reads for `recipient` (custom fields as a dict, as PostgreSQL's driver
    may give them; analysis also takes their JSON text)."""
    return (recipient.id, recipient.email, recipient.first_name, recipient.last_name,
            str(recipient.email_format), recipient.opted_out, recipient.fields,
            recipient.email.lower(), position)


class MemoryStore:
    """Targets in the order given (a real store sorts them by address); an address's status is
    its recipients' `address_status`."""

    def __init__(self, delivery: Delivery, audience: list[Recipient], batch_size: int = 3):
        self.delivery = delivery
        self.audience = audience
        self.batch_size = batch_size
        self.logs: list[NewLog] = []
        self.states: list[tuple[DeliveryState, str | None]] = []

    def get_delivery(self, delivery_id: int) -> Delivery:
        return self.delivery

    def move_delivery(self, delivery_id: int, target: DeliveryState, now: datetime, *,
                      error: str | None = None) -> Delivery:
        self.states.append((target, error))
        self.delivery = replace(self.delivery, state=target)
        return self.delivery

    def iter_audience(self, delivery: Delivery, batch_size: int = 1000) -> Iterator[Recipient]:
        return iter(self.audience)

    def audience_rows(self, delivery: Delivery) -> Iterator[Sequence[AudienceRow]]:
        rows = [audience_row(r, i) for i, r in enumerate(self.audience)]
        for start in range(0, len(rows), self.batch_size):
            yield rows[start:start + self.batch_size]

    def held_addresses(self) -> dict[str, str]:
        return {r.email: r.address_status for r in self.audience
                if r.address_status in ("denylisted", "quarantine")}

    def replace_logs(self, delivery_id: int, logs: Iterable[LogRow | NewLog],
                     now: datetime) -> None:
        self.logs = [row if isinstance(row, NewLog) else NewLog(*row) for row in logs]
