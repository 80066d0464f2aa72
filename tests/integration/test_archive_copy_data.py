"""A copy's bytes live in `archive_copy_data` (revision 0009, ADR 0033), on SQLite and
PostgreSQL: written with the outbox row in the commit that makes the log `sent`, read by the
claim, deleted when the copy is archived and only then; kept for a pending or failed copy. The
migration moves the bytes of copies not yet archived, exactly, and its way back restores them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, create_engine, insert, inspect, select, text

from postroom.domain.models import ArchiveResult, ArchiveState, LogUpdate
from postroom.domain.states import LogStatus
from postroom.errors import StateError
from postroom.storage import migrate
from postroom.storage.schema import archive_copy_data, archive_outbox, deliveries, delivery_logs
from postroom.storage.sql import SqlStore, open_store

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
BODIES = {1: b"Subject: one\r\n\r\npending\r\n", 2: b"Subject: two\r\n\r\nrefused\r\n",
          3: b"Subject: three\r\n\r\n\x00\xff binary \r\n.\r\n"}


def _delivery_with_logs(conn: Connection, count: int) -> list[int]:
    """A delivery and `count` pending logs, written as analysis leaves them."""
    execute = conn.execute
    delivery_id = execute(insert(deliveries).values(
        name="d", template_name="t", state="sending", properties={}, audience={}, salt="s",
        slowdowns={}, created_at=T0).returning(deliveries.c.id)).scalar_one()
    return [execute(insert(delivery_logs).values(
        delivery_id=delivery_id, email=f"r{n}@example.com", status="pending",
        next_attempt_at=T0, updated_at=T0).returning(delivery_logs.c.id)).scalar_one()
        for n in range(count)]


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    store = open_store(database_url)
    yield store
    store.close()


def _sent(store: SqlStore, log_ids: list[int]) -> None:
    store.record([LogUpdate(log_id=log_id, status=LogStatus.SENT, attempts=1,
                            next_attempt_at=None, smtp_reply="250 OK", sent_at=T0,
                            message_id=f"<{log_id}@example.com>", size=len(BODIES[n]),
                            sha256=hashlib.sha256(BODIES[n]).hexdigest(),
                            archive_data=BODIES[n])
                  for n, log_id in zip(BODIES, log_ids, strict=True)], T0)


def _kept(store: SqlStore) -> dict[int, bytes]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(archive_copy_data.c.log_id,
                                        archive_copy_data.c.data)).all())


def test_bytes_are_kept_until_the_copy_is_archived(store: SqlStore) -> None:
    with store.engine.begin() as conn:
        logs = _delivery_with_logs(conn, 3)
    _sent(store, logs)
    assert _kept(store) == {log: BODIES[n] for n, log in zip(BODIES, logs, strict=True)}
    assert "data" not in {c["name"] for c in inspect(store.engine).get_columns("archive_outbox")}

    copies = store.claim_archive(T0, 10, LEASE, worker="w")
    assert [(c.log_id, c.data) for c in copies] == [
        (log, BODIES[n]) for n, log in zip(BODIES, logs, strict=True)]
    archived, refused, later = copies
    store.record_archive([
        ArchiveResult(archived.id, ArchiveState.ARCHIVED, "250 2.0.0 queued"),
        ArchiveResult(refused.id, ArchiveState.FAILED, "554 5.7.1 refused"),
        ArchiveResult(later.id, ArchiveState.PENDING, "451 later", next_attempt_at=T0)], T0)
    assert _kept(store) == {refused.log_id: refused.data, later.log_id: later.data}

    # The failed copy is sent again with its exact bytes once the archive side is fixed.
    assert store.retry_failed_archive(T0) == 1
    again = store.claim_archive(T0 + LEASE, 10, LEASE, worker="w")
    assert sorted((c.log_id, c.data) for c in again) == sorted(
        [(refused.log_id, refused.data), (later.log_id, later.data)])
    store.record_archive([ArchiveResult(c.id, ArchiveState.ARCHIVED, "250 ok") for c in again],
                         T0 + LEASE)
    assert _kept(store) == {}
    assert store.archive_counts() == {archived.delivery_id: {"archived": 3}}


def test_an_archived_result_that_did_not_apply_keeps_the_bytes(store: SqlStore) -> None:
    """A result for a copy that is no longer pending (failed meanwhile) changes nothing, and its
    bytes stay for the retry."""
    with store.engine.begin() as conn:
        logs = _delivery_with_logs(conn, 3)
    _sent(store, logs)
    first, *_ = store.claim_archive(T0, 10, LEASE, worker="w")
    store.record_archive([ArchiveResult(first.id, ArchiveState.FAILED, "554 no")], T0)
    store.record_archive([ArchiveResult(first.id, ArchiveState.ARCHIVED, "250 late")], T0)
    assert _kept(store)[first.log_id] == first.data
    assert store.archive_counts()[first.delivery_id]["failed"] == 1


def test_a_claimed_copy_without_its_bytes_is_an_error_not_an_empty_message(
        store: SqlStore) -> None:
    with store.engine.begin() as conn:
        logs = _delivery_with_logs(conn, 3)
    _sent(store, logs)
    with store.engine.begin() as conn:
        conn.execute(archive_copy_data.delete().where(archive_copy_data.c.log_id == logs[1]))
    with pytest.raises(StateError, match=f"logs \\[{logs[1]}\\] have no bytes"):
        store.claim_archive(T0, 10, LEASE, worker="w")
    # The failed claim gave its copies back untouched: another worker takes them at once,
    # with no doubt counted (none was sent).
    with store.engine.begin() as conn:
        conn.execute(insert(archive_copy_data).values(log_id=logs[1], data=BODIES[2]))
    again = store.claim_archive(T0, 10, LEASE, worker="other")
    assert [(c.log_id, c.data) for c in again] == [
        (log, BODIES[n]) for n, log in zip(BODIES, logs, strict=True)]
    with store.engine.connect() as conn:
        assert conn.execute(select(archive_outbox.c.in_doubt)).scalars().all() == [0, 0, 0]


def test_the_migration_moves_the_bytes_of_copies_not_yet_archived(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        migrate.upgrade(engine, "0008")
        with engine.begin() as conn:
            logs = _delivery_with_logs(conn, 3)
            delivery_id = conn.execute(select(delivery_logs.c.delivery_id)).scalars().first()
            for log, state, data in ((logs[0], "pending", BODIES[1]),
                                     (logs[1], "failed", BODIES[3]),
                                     (logs[2], "archived", None)):
                conn.execute(text(
                    "INSERT INTO archive_outbox (log_id, delivery_id, state, attempts, "
                    "next_attempt_at, in_doubt, data, sha256, reply, created_at) VALUES "
                    "(:log, :delivery, :state, 0, :at, 0, :data, :sha, '', :at)"),
                    {"log": log, "delivery": delivery_id, "state": state, "data": data,
                     "sha": "0" * 64, "at": T0.replace(tzinfo=None)})
        assert migrate.upgrade(engine) is True
        with engine.connect() as conn:
            moved = dict(conn.execute(select(archive_copy_data.c.log_id,
                                             archive_copy_data.c.data)).all())
            states = dict(conn.execute(select(archive_outbox.c.log_id,
                                              archive_outbox.c.state)).all())
        assert moved == {logs[0]: BODIES[1], logs[1]: BODIES[3]}
        assert states == {logs[0]: "pending", logs[1]: "failed", logs[2]: "archived"}

        migrate.downgrade(engine, "0008")
        with engine.connect() as conn:
            back: dict[int, bytes | None] = dict(
                conn.execute(text("SELECT log_id, data FROM archive_outbox")).all())
            assert not inspect(conn).has_table("archive_copy_data")
        assert {log: (bytes(data) if data is not None else None)
                for log, data in back.items()} == {
            logs[0]: BODIES[1], logs[1]: BODIES[3], logs[2]: None}
    finally:
        engine.dispose()

