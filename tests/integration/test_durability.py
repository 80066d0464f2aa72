"""Durability under slow connections and database faults (issues 10 and 11).

An accepted message is recorded (with its archive copy) while another connection stalls;
`archive flush` and working workers do not deadlock; workers outlive a PostgreSQL restart.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postroom.app import Postroom
from postroom.delivery.shaping import DomainLimits, ShapingSettings
from postroom.domain.states import DeliveryState, LogStatus
from postroom.settings import ArchiveSettings, SendingSettings, Settings, SmtpRelay
from postroom.storage.retrying import RetryingStore
from postroom.storage.schema import archive_outbox, delivery_logs
from postroom.storage.sql import SqlStore
from postroom.testing.archive_check import check_archive
from postroom.testing.smtp_server import CaptureServer, Hold, Script, Sleep
from postroom.wiring import build
from tests.conftest import ARCHIVE
from tests.integration.private_pg import PrivatePostgres, private_postgres
from tests.integration.workers_support import (
    start_worker,
    started_delivery,
    stop_worker,
    write_config,
)

__all__ = ["private_postgres"]  # the fixture, used by name


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    assert _eventually(condition, timeout), f"timed out waiting for {what}"


@pytest.fixture
def stores() -> Iterator[list[SqlStore]]:
    opened: list[SqlStore] = []
    yield opened
    for store in opened:
        store.close()


def _recorded(postroom: Postroom, delivery_id: int) -> tuple[int, int]:
    """(logs recorded sent, archive copies in the outbox) of a delivery, read from the store."""
    with postroom.store.engine.connect() as conn:
        sent = conn.scalar(select(func.count()).where(
            delivery_logs.c.delivery_id == delivery_id,
            delivery_logs.c.status == LogStatus.SENT))
        copies = conn.scalar(select(func.count()).where(
            archive_outbox.c.delivery_id == delivery_id))
    return int(sent or 0), int(copies or 0)


def _eventually(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _settled_count(relay: CaptureServer, *, at_least: int, timeout: float) -> int:
    """How many messages the relay accepted once that stopped growing (for a second)."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(relay.messages)
        if count != seen:
            seen, since = count, time.monotonic()
        elif count >= at_least and time.monotonic() - since >= 1.0:
            return count
        time.sleep(0.05)
    raise AssertionError(f"the relay accepted {seen} messages, not {at_least} and then no more")


def test_accepted_messages_are_recorded_while_another_connection_stalls(
    capture: Callable[..., CaptureServer], stores: list[SqlStore], database_url: str,
    tmp_path: Path,
) -> None:
    gate = threading.Event()
    # The first recipient's DATA is answered only when the test says so: its connection
    # waits, the other connection sends everything else, one message per SMTP session (so
    # one group each, in quick succession).
    relay = capture(script=Script().on_data("r00000@example.com", Hold(gate)))
    archive = capture()
    # The SMTP timeout is longer than the test's wait: a timeout would end the stall (and
    # record everything with it) before the test looks.
    postroom = build(Settings(
        database_url=database_url,
        smtp=SmtpRelay(host="127.0.0.1", port=relay.port, timeout_seconds=120),
        sending=SendingSettings(connections=2, wait_for_retries_seconds=0),
        archive=ArchiveSettings(enabled=True, bcc_address=[ARCHIVE], drain_seconds=5,
                                relay=SmtpRelay(host="127.0.0.1", port=archive.port)),
        shaping=ShapingSettings(default=DomainLimits(messages_per_connection=1))))
    stores.append(postroom.store)
    delivery_id = started_delivery(postroom, tmp_path, 8)
    sending = threading.Thread(target=lambda: asyncio.run(postroom.sending.send(delivery_id)))
    sending.start()
    try:
        accepted = _settled_count(relay, at_least=7, timeout=60)  # the free connection's
        # Every message the relay accepted is in the store, with its archive copy, while the
        # stalled connection still waits (before the fix: the last group waited for it).
        assert _eventually(lambda: _recorded(postroom, delivery_id) == (accepted, accepted), 10), \
            (accepted, _recorded(postroom, delivery_id))
        assert not gate.is_set() and sending.is_alive()
    finally:
        gate.set()
        sending.join(120)
    assert postroom.store.get_delivery(delivery_id).state is DeliveryState.FINISHED
    assert _recorded(postroom, delivery_id) == (8, 8)
    assert Counter(m.rcpt_tos for m in relay.messages).most_common(1)[0][1] == 1


def _message_id(data: bytes) -> bytes:
    match = re.search(rb"^Message-ID:\s*(<[^>]+>)", data.split(b"\r\n\r\n", 1)[0],
                      re.MULTILINE | re.IGNORECASE)
    assert match is not None
    return match.group(1)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def test_archive_flush_against_two_archiving_workers_never_deadlocks(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    private_postgres: PrivatePostgres, tmp_path: Path,
) -> None:
    count = 300
    relay = capture()
    archives = [capture()]
    archive_port = archives[0].port
    url = private_postgres.url
    postroom = make_postroom(url, relay, archive=archives[0])
    delivery_id = started_delivery(postroom, tmp_path, count)
    config = write_config(tmp_path / "w.toml", url, relay, archives[0],
                          sending="database_wait_seconds = 60")
    workers = [start_worker(config, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        for round_ in range(20):  # the archive relay goes down at round 4, back at round 10
            if round_ == 4:
                archives[0].stop()
            elif round_ == 10:
                archives.append(capture(port=archive_port))
            asyncio.run(postroom.archive.flush(wait_seconds=0.3))
        _wait(lambda: postroom.store.get_delivery(delivery_id).state is DeliveryState.FINISHED
              and postroom.store.archive_pending(delivery_id) == 0, 180,
              "every copy archived")
        assert [w.poll() for w in workers] == [None, None], "both workers still run"
        assert [stop_worker(w) for w in workers] == [0, 0]
    finally:
        for w in workers:
            stop_worker(w)
    log = private_postgres.log()
    assert "deadlock detected" not in log, log[-3000:]
    logs = postroom.store.list_logs(delivery_id, limit=count + 1)
    received = [m for server in archives for m in server.messages]
    check = check_archive(logs, relay.messages, received, bcc_address=ARCHIVE)
    assert check.ok, check.problems
    copies = Counter(m.data for m in received)
    twice = sum(n - 1 for n in copies.values())
    assert twice <= postroom.reports.report(delivery_id).doubt.archive
    assert postroom.operations.health().ok, postroom.operations.health().problems


def test_two_workers_outlive_a_postgresql_restart_and_a_third_waits_for_it(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    private_postgres: PrivatePostgres, tmp_path: Path,
) -> None:
    count = 600
    relay = capture(script=Script().on_data(lambda _: True, Sleep(0.02)))
    archive = capture()
    url = private_postgres.url
    postroom = make_postroom(url, relay, archive=archive)
    delivery_id = started_delivery(postroom, tmp_path, count)
    config = write_config(tmp_path / "w.toml", url, relay, archive,
                          sending="database_wait_seconds = 60")
    workers = [start_worker(config, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        _wait(lambda: len(relay.messages) >= 100, 60, "100 messages")
        private_postgres.restart()
        _wait(lambda: len(relay.messages) >= 250, 60, "250 messages")
        private_postgres.stop()
        workers.append(start_worker(config, tmp_path / "w2.log"))  # the database is down
        _wait(lambda: "database error in opening the database" in _text(tmp_path / "w2.log"),
              60, "the third worker to find the database down")
        time.sleep(1)
        assert [w.poll() for w in workers] == [None, None, None], "all wait for the database"
        private_postgres.start()
        store = RetryingStore(postroom.store, wait_seconds=30)  # the test's own pool, too
        _wait(lambda: store.get_delivery(delivery_id).state is DeliveryState.FINISHED
              and store.archive_pending(delivery_id) == 0, 180, "the delivery to finish")
        assert [w.poll() for w in workers] == [None, None, None], "every worker survived"
        assert [stop_worker(w) for w in workers] == [0, 0, 0]
    finally:
        for w in workers:
            stop_worker(w)
    assert "database back" in _text(tmp_path / "w2.log")
    report = postroom.reports.report(delivery_id)
    assert report.by_status == {LogStatus.SENT: count}, "every log final, all sent"
    received = Counter(m.rcpt_tos for m in relay.messages)
    assert len(received) == count, "nothing lost"
    # Leases are 2 s here, so the 0.3 s restart and the stop outlast some: what was on the
    # wire then is resent, and counted in doubt, as after a crash.
    twice = sum(1 for n in received.values() if n > 1)
    assert twice <= report.doubt.logs, (twice, report.doubt)
    assert sum(n - 1 for n in received.values()) <= report.doubt.events, report.doubt
    # One archive copy per sent log, the bytes of one of the messages the relay received
    # (a message resent after a lease ran out is rendered again, with its own Date: the copy
    # is the one the first recorder sent).
    logs = postroom.store.list_logs(delivery_id, limit=count + 1)
    relayed: dict[bytes, set[bytes]] = {}
    for message in relay.messages:
        relayed.setdefault(_message_id(message.data), set()).add(message.data)
    archived = Counter(_message_id(m.data) for m in archive.messages)
    assert sorted(archived) == sorted(log.message_id.encode() for log in logs
                                      if log.message_id)
    assert sum(n - 1 for n in archived.values()) <= report.doubt.archive
    assert all(m.data in relayed[_message_id(m.data)] for m in archive.messages)
