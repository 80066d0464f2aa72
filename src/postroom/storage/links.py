"""Storage behind the links in a message: mirror pages, a log's recipient and Message-ID salt
(unsubscribe, returned mail), the instance's secrets. Mixed into `SqlStore`."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from postroom.domain.models import Delivery, Recipient
from postroom.storage.common import to_recipient
from postroom.storage.deliveries import DeliveryStore
from postroom.storage.schema import (
    deliveries,
    delivery_logs,
    instance_secrets,
    mirror_pages,
    recipients,
)

__all__ = ["LinkStore"]


class LinkStore(DeliveryStore):
    engine: Engine

    def mirror_page(self, log_id: int) -> tuple[bytes, datetime, Delivery] | None:
        """(HTML bytes, expiry, delivery) of one message's mirror page, if it has one."""
        with self.engine.connect() as conn:
            row = conn.execute(select(mirror_pages, deliveries.c.id.label("d"))
                               .join(deliveries, deliveries.c.id == mirror_pages.c.delivery_id)
                               .where(mirror_pages.c.log_id == log_id)).first()
        if row is None:
            return None
        return zlib.decompress(row.html), row.expires_at, self.get_delivery(row.d)

    def purge_mirror_pages(self, now: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(mirror_pages)
                                .where(mirror_pages.c.expires_at <= now)).rowcount

    def log_recipient(self, log_id: int) -> Recipient | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(recipients).join(
                delivery_logs, delivery_logs.c.recipient_id == recipients.c.id)
                .where(delivery_logs.c.id == log_id)).first()
        return to_recipient(row) if row is not None else None

    def log_delivery_salt(self, log_id: int) -> tuple[int, str] | None:
        """(delivery id, salt) of a log: what a returned Message-ID must carry."""
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries.c.id, deliveries.c.salt)
                               .join(delivery_logs, delivery_logs.c.delivery_id ==
                                     deliveries.c.id)
                               .where(delivery_logs.c.id == log_id)).first()
        return (int(row[0]), str(row[1])) if row is not None else None

    def instance_secret(self, name: str, make: Callable[[], str]) -> str:
        """A secret kept in the database, made once (by `make`) on first use."""
        with self.engine.begin() as conn:
            value = conn.scalar(select(instance_secrets.c.value)
                                .where(instance_secrets.c.name == name))
            if value is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(instance_secrets).values(name=name, value=make()))
                except IntegrityError:
                    pass  # another process made it first
                value = conn.scalar(select(instance_secrets.c.value)
                                    .where(instance_secrets.c.name == name))
        return str(value)
