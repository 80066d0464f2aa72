"""Read-then-write store methods against a second writer that commits between the read and
the write (two Postroom instances on one database, as two processes are).

pysqlite begins a transaction only before the first INSERT, UPDATE or DELETE: a SELECT that comes
first runs outside it, so what it read can be stale by the time the write lands; on PostgreSQL
(read committed) a plain SELECT does not lock the rows it read either. Each method here reads the
rows it changes only under its write lock (SQLite) or their row locks (PostgreSQL), which its
first write statement takes. `_before_first_write` makes the interleaving happen: the second
writer commits just before the first write statement on the contended table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from postroom.app import Postroom
from postroom.domain.models import RecipientRow
from postroom.storage.schema import recipients
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import write_csv

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
# How long the first writer lets the second one run before going on: long enough for a second
# writer that is not blocked to commit; one that is blocked finishes after the first's commit.
OVERLAP_SECONDS = 1.0


@contextmanager
def _before_first_write(first: Postroom, table: str,
                        second_writer: Callable[[], object]) -> Iterator[None]:
    """While in the block, `second_writer` runs (in a thread) just before the first INSERT,
    UPDATE or DELETE on `table` that `first` runs; the block's end waits for that writer and
    re-raises its error."""
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []

    def run() -> None:
        try:
            second_writer()
        except BaseException as exc:  # handed to the test's thread below
            errors.append(exc)

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = statement.lower().split()
        if threads or not words or words[0] not in ("insert", "update", "delete") \
                or table not in words[:4]:
            return
        thread = threading.Thread(target=run, daemon=True)
        threads.append(thread)
        thread.start()
        thread.join(OVERLAP_SECONDS)

    event.listen(first.store.engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(first.store.engine, "before_cursor_execute", before)
        for thread in threads:
            thread.join(60)
    assert threads, f"no write on {table} ran"
    if errors:
        raise errors[0]


@pytest.fixture
def two(make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
        database_url: str) -> tuple[Postroom, Postroom]:
    relay = capture()
    first = make_postroom(database_url, relay, bcc=False, clock=lambda: T0)
    return first, make_postroom(database_url, relay, bcc=False, clock=lambda: T0)


def test_slowdowns_of_two_processes_are_both_kept(two: tuple[Postroom, Postroom],
                                                  tmp_path: Path) -> None:
    first, second = two
    first.recipients.import_recipients(write_csv(tmp_path / "a.csv", [{"email": "a@x.org"}]))
    first.templates.create_template("t", {"subject": "Hi", "text": "Hello\n"})
    delivery, _ = first.deliveries.create_delivery("t")
    slow = {"domain": "gmail.com", "since": "2026-11-27T12:00:00+00:00", "seconds": 4.0}
    slower = {"domain": "yahoo.com", "since": "2026-11-27T12:00:01+00:00", "seconds": 5.0}

    with _before_first_write(first, "deliveries",
                           lambda: second.store.record_slowdowns(delivery.id, [slower])):
        first.store.record_slowdowns(delivery.id, [slow])

    assert [s["domain"] for s in first.store.slowdowns(delivery.id)] == ["gmail.com",
                                                                         "yahoo.com"]


def test_two_imports_of_one_address_merge_their_fields(two: tuple[Postroom, Postroom]) -> None:
    first, second = two
    first.store.upsert_recipients([RecipientRow(email="ann@x.org", fields={"plan": "gold"},
                                                given=frozenset())], T0)

    with _before_first_write(first, "recipients", lambda: second.store.upsert_recipients(
            [RecipientRow(email="ann@x.org", fields={"city": "Lyon"}, given=frozenset()),
             RecipientRow(email="bob@x.org", fields={"city": "Metz"}, given=frozenset())], T0)):
        counts = first.store.upsert_recipients(
            [RecipientRow(email="ann@x.org", fields={"team": "red"}, given=frozenset()),
             RecipientRow(email="bob@x.org", fields={"team": "blue"}, given=frozenset())], T0)

    with first.store.engine.connect() as conn:
        stored = dict(conn.execute(select(recipients.c.email, recipients.c.fields)
                                   .order_by(recipients.c.email)).all())
    assert stored == {"ann@x.org": {"plan": "gold", "city": "Lyon", "team": "red"},
                      "bob@x.org": {"city": "Metz", "team": "blue"}}
    # `bob` was new to the second import, which committed first: the first updated it.
    assert (counts.inserted, counts.updated) == (0, 2)


def test_denylisting_keeps_a_failure_recorded_meanwhile(two: tuple[Postroom, Postroom]) -> None:
    first, second = two
    from postroom.bounces.quarantine import AddressEvent
    from postroom.domain.outcomes import FailureReason, FailureType

    bounce = AddressEvent.failure(FailureType.SOFT, FailureReason.MAILBOX_FULL, "452 full")
    first.store.denylist_addresses(["old@x.org"], "seed", T0)  # the table is not empty

    def failure_meanwhile() -> None:
        with second.store.engine.begin() as conn:
            second.store.apply_address_events(conn, [("eve@x.org", bounce)], T0)

    with _before_first_write(first, "address_status", failure_meanwhile):
        assert first.store.denylist_addresses(["eve@x.org"], "by an operator", T0) == 1

    state = first.store.get_address("eve@x.org")
    assert state is not None
    assert str(state.status) == "denylisted"
    assert state.error_count == 2  # the mailbox-full failure, then the denylisting
