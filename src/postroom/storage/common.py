"""What the parts of `SqlStore` share: rows → records, batches of ids, the lease test, the
insert of rows not stored yet."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Connection, Table, or_
from sqlalchemy.dialects import postgresql, sqlite

from postroom.domain.models import (
    ArchiveState,
    Audience,
    Delivery,
    DeliveryLog,
    EmailFormat,
    Recipient,
)
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.properties import Properties
from postroom.domain.states import DeliveryState, LogStatus

__all__ = ["CHUNK", "chunks", "insert_new", "to_delivery", "to_log", "to_recipient", "unclaimed"]

CHUNK = 500  # ids in one IN (...) list, rows in one batch
T = TypeVar("T")


def insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]], key: str) -> set[Any]:
    """Insert the rows whose `key` (a unique column) is not stored yet; the keys inserted.

    Made the first statement of a read-then-write transaction, it is what makes the read safe:
    on SQLite it takes the write lock (pysqlite begins a transaction only before a write, so a
    SELECT first would read outside it); on PostgreSQL it waits for another transaction
    inserting the same key, where a plain INSERT would fail on the unique constraint. The rows
    read next (`FOR UPDATE` on PostgreSQL) are then the latest, and stay so until the commit.
    """
    if not rows:
        return set()
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    statement = (dialect.insert(table).on_conflict_do_nothing(index_elements=[key])
                 .returning(table.c[key]))
    return set(conn.scalars(statement, rows))


def to_recipient(row: Any, address_status: str = "valid") -> Recipient:
    """`address_status`: the row's own column when it has one (the audience query joins it)."""
    return Recipient(
        id=row.id,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        email_format=EmailFormat(row.email_format),
        opted_out=bool(row.opted_out),
        fields=dict(row.fields or {}),
        address_status=address_status,
    )


def to_delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        name=row.name,
        template_name=row.template_name,
        state=DeliveryState(row.state),
        properties=Properties.model_validate(row.properties),
        audience=Audience.from_json(row.audience),
        salt=row.salt,
        last_error=row.last_error,
        created_at=row.created_at,
        analyzed_at=row.analyzed_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def to_log(row: Any) -> DeliveryLog:
    return DeliveryLog(
        id=row.id,
        delivery_id=row.delivery_id,
        recipient_id=row.recipient_id,
        email=row.email,
        status=LogStatus(row.status),
        failure_type=FailureType(row.failure_type) if row.failure_type else None,
        failure_reason=(
            FailureReason(row.failure_reason) if row.failure_reason is not None else None
        ),
        detail=row.detail,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        smtp_reply=row.smtp_reply,
        message_id=row.message_id,
        sent_at=row.sent_at,
        size=row.size,
        sha256=row.sha256,
        archive_state=ArchiveState(row.archive_state) if row.archive_state else None,
    )


def chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def unclaimed(claimed_until: Any, now: datetime | BindParameter[Any]) -> Any:
    """The lease test: no one holds the row, or its holder's lease ran out by `now` (a time,
    or a bound parameter in a statement built once)."""
    return or_(claimed_until.is_(None), claimed_until <= now)
