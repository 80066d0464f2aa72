"""Recording a batch of send results costs a fixed number of statements (issue 16, point 3):
address states and texts to qualify are written once per batch, not once per message. On
SQLite and PostgreSQL alike; the statements are counted at the DB-API cursor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from postroom.app import Postroom
from postroom.bounces.quarantine import AddressEvent, AddressStatus
from postroom.domain.models import LogUpdate, Target
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.states import DeliveryState, LogStatus
from postroom.storage.schema import archive_outbox, delivery_logs
from postroom.storage.sql import SqlStore
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import write_csv

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
UNKNOWN = "550 5.1.1 <{}>: Recipient address rejected: User unknown"


@pytest.fixture
def store(capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
          database_url: str, tmp_path: Path) -> tuple[SqlStore, int]:
    postroom = make_postroom(database_url, capture(), bcc=False, clock=lambda: T0)
    rows = [{"email": f"r{i:03d}@example.com"} for i in range(60)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hi", "text": "Hello\n"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).ok
    postroom.store.move_delivery(delivery.id, DeliveryState.SENDING, T0)
    return postroom.store, delivery.id


@contextmanager
def _counted(store: SqlStore) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", count)


def _updates(batch: list[Target], emails: dict[int, str]) -> list[LogUpdate]:
    """Of every five: one refused (user unknown), one deferred with a text no rule knows
    (two different texts in all), three sent."""
    updates = []
    for index, target in enumerate(batch):
        if index % 5 == 0:
            updates.append(LogUpdate(
                log_id=target.log_id, status=LogStatus.FAILED, attempts=1, next_attempt_at=None,
                failure_type=FailureType.HARD, failure_reason=FailureReason.USER_UNKNOWN,
                smtp_reply=UNKNOWN.format(emails[target.log_id])))
        elif index % 5 == 1:
            updates.append(LogUpdate(
                log_id=target.log_id, status=LogStatus.PENDING, attempts=1,
                next_attempt_at=T0 + timedelta(hours=1), failure_type=FailureType.SOFT,
                failure_reason=FailureReason.UNDEFINED, to_qualify=True,
                smtp_reply=f"451 {('odd', 'strange')[index % 2]} thing at {index}"))
        else:
            updates.append(LogUpdate(log_id=target.log_id, status=LogStatus.SENT, attempts=1,
                                     next_attempt_at=None, smtp_reply="250 OK", sent_at=T0))
    return updates


def _record(store: SqlStore, delivery_id: int, size: int) -> tuple[list[str], list[str]]:
    """Claim and record `size` logs, half of whose refused addresses have a history; the
    statements of `record()`, and the refused addresses."""
    batch = store.claim_due(delivery_id, T0, size, LEASE, worker="w")
    assert len(batch) == size
    emails = {t.log_id: t.recipient.email for t in batch}
    updates = _updates(batch, emails)
    refused = [emails[u.log_id] for u in updates if u.status is LogStatus.FAILED]
    with store.engine.begin() as conn:  # an earlier soft error for every other one
        store.apply_address_events(conn, [
            (address, AddressEvent.failure(FailureType.SOFT, FailureReason.MAILBOX_FULL,
                                           "452 4.2.2 mailbox full"))
            for address in refused[::2]], T0 - timedelta(days=1))
    with _counted(store) as statements:
        store.record(updates, T0)
    return statements, refused


def test_recording_a_batch_costs_the_same_statements_whatever_its_size(
        store: tuple[SqlStore, int]) -> None:
    sql, delivery_id = store

    small, refused_small = _record(sql, delivery_id, 10)
    large, refused_large = _record(sql, delivery_id, 50)

    print(f"statements per record(): {len(small)} for 10 results, {len(large)} for 50", large)
    assert len(large) == len(small) <= 7, (small, large)
    for address in refused_small + refused_large:  # user unknown: quarantined at once
        state = sql.get_address(address)
        assert state is not None and state.status is AddressStatus.QUARANTINE
        assert state.last_reason is FailureReason.USER_UNKNOWN
    counts = {row["normalized"]: row["count"] for row in sql.list_unqualified()}
    assert sorted(counts.values()) == [6, 6]  # 2 + 10 deferrals, two texts, counted apart


def test_claiming_archive_copies_is_one_statement_on_sqlite(store: tuple[SqlStore, int]) -> None:
    """The archive loop's claim (issue 16, point 3): on SQLite one UPDATE ... RETURNING takes
    the copies, and one SELECT after its commit reads their bytes (ADR 0033); on PostgreSQL,
    lock, update, read the rows and their bytes. Either way the copies come in id order, each
    once, with the bytes that were recorded."""
    sql, delivery_id = store
    batch = sql.claim_due(delivery_id, T0, 12, LEASE, worker="w")
    data = {t.log_id: f"copy of {t.log_id}\r\n".encode() for t in batch}
    sql.record([LogUpdate(log_id=t.log_id, status=LogStatus.SENT, attempts=1,
                          next_attempt_at=None, smtp_reply="250 OK", sent_at=T0,
                          archive_data=data[t.log_id]) for t in batch], T0)

    with _counted(sql) as statements:
        first = sql.claim_archive(T0, 5, LEASE, delivery_id=delivery_id, worker="a")
    rest = sql.claim_archive(T0, 50, LEASE, worker="a")
    held = sql.claim_archive(T0 + LEASE - timedelta(seconds=1), 50, LEASE, worker="b")
    taken_over = sql.claim_archive(T0 + LEASE + timedelta(seconds=1), 50, LEASE,
                                   delivery_id=delivery_id, worker="b")

    if sql.engine.dialect.name == "sqlite":
        assert statements == ["UPDATE", "SELECT"]
    else:
        assert len(statements) <= 4, statements
    assert len(first) == 5 and len(rest) == 7 and held == []
    copies = first + rest
    assert [c.id for c in copies] == sorted(c.id for c in copies)
    assert len({c.id for c in copies}) == 12
    assert {c.log_id: c.data for c in copies} == data
    assert all(c.delivery_id == delivery_id and c.attempts == 0 for c in copies)
    assert [c.id for c in taken_over] == [c.id for c in copies]
    with sql.engine.connect() as conn:  # a takeover counts each copy in doubt, once
        doubts = conn.execute(select(archive_outbox.c.in_doubt, archive_outbox.c.claimed_by)).all()
    assert sorted(doubts) == [(1, "b")] * 12


def test_a_claim_whose_read_fails_gives_its_logs_back(store: tuple[SqlStore, int]) -> None:
    """The claimed logs' recipients are read after the claim (on SQLite, after its commit):
    when that read fails, the logs are not left leased to a sender that never got them."""
    sql, delivery_id = store

    def fail_the_read(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("SELECT") and "JOIN recipients" in statement:
            raise RuntimeError("the database went away")

    event.listen(sql.engine, "before_cursor_execute", fail_the_read)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            sql.claim_due(delivery_id, T0, 12, LEASE, worker="a")
    finally:
        event.remove(sql.engine, "before_cursor_execute", fail_the_read)
    taken = sql.claim_due(delivery_id, T0, 12, LEASE, worker="b")  # no lease to wait for
    assert len(taken) == 12
    with sql.engine.connect() as conn:
        holders = conn.execute(select(delivery_logs.c.claimed_by)
                               .where(delivery_logs.c.claimed_by.is_not(None))).scalars().all()
    assert holders == ["b"] * 12
