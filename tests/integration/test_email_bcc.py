"""Email BCC end to end, against real SMTP servers on loopback (issue 2, acceptance 2-4 and 6).

The recipients' relay and the archive relay are capture servers with scripted replies; the
delivery runs through the real engine, store (SQLite and PostgreSQL) and SMTP client.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from postroom.app import Postroom
from postroom.domain.states import DeliveryState, LogStatus
from postroom.testing.archive_check import check_archive
from postroom.testing.smtp_server import CaptureServer, Drop, Script, is_rejected
from tests.conftest import ARCHIVE, write_csv

N = 1000


def _people(n: int) -> list[dict[str, str]]:
    return [{"email": f"person{i:04d}@Example.net", "first_name": f"Zoë{i}",
             "last_name": "Test", "tier": ["gold", "silver"][i % 2]} for i in range(n)]


def _delivery(postroom: Postroom, tmp_path: Path, rows: list[dict[str, str]], *,
              bcc: bool = True, **extra: object) -> int:
    postroom.recipients.import_recipients(write_csv(tmp_path / "people.csv", rows))
    postroom.templates.create_template("t", {
        "subject": "Hello {{ recipient.first_name }} ({{ recipient.tier }})",
        "html": "<p>Dear {{ recipient.first_name }} {{ recipient.last_name }}</p>",
        "text": "Dear {{ recipient.first_name }}, your tier is {{ recipient.tier }}.\n",
        "from_address": "news@postroom.example", "errors_to": "bounces@postroom.example",
        "email_bcc": bcc, **extra,
    })
    delivery, _ = postroom.deliveries.create_delivery("t")
    report = postroom.deliveries.analyze(delivery.id)
    assert report.ok, report.errors
    return delivery.id


def _all_logs(postroom: Postroom, delivery_id: int) -> list:  # type: ignore[type-arg]
    return postroom.store.list_logs(delivery_id, limit=100_000)


def test_archive_holds_exactly_the_accepted_messages(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    def refused_at_data(address: str) -> bool:
        return is_rejected("data:" + address, 0.02)

    relay = capture(reject_ratio=0.10, script=Script().on_data(
        refused_at_data, "554 5.7.1 Message refused by content filter"))
    archive = capture()
    postroom = make_postroom(database_url, relay, archive=archive)
    # A content-filter refusal is soft (retried) by the shipped rules: no retries here, so
    # that it fails within this run.
    delivery_id = _delivery(postroom, tmp_path, _people(N), max_retries=0)

    summary = asyncio.run(postroom.sending.send(delivery_id))

    logs = _all_logs(postroom, delivery_id)
    emails = [log.email for log in logs]
    at_rcpt = {e for e in emails if is_rejected(e, 0.10)}
    at_data = {e for e in emails if e not in at_rcpt and refused_at_data(e)}
    assert 60 < len(at_rcpt) < 140 and 5 < len(at_data) < 40  # the script really refused some
    failed = {log.email for log in logs if log.status is LogStatus.FAILED}
    sent = [log for log in logs if log.status is LogStatus.SENT]
    assert failed == at_rcpt | at_data
    assert len(sent) == N - len(failed) == summary.sent
    assert summary.state is DeliveryState.FINISHED

    # What the relay received is what the log says was sent, each exactly once.
    assert sorted(r for m in relay.messages for r in m.rcpt_tos) == sorted(x.email for x in sent)
    # The archive: one byte-identical copy per accepted message, none for refused ones,
    # BCC address in no header, only in RCPT TO.
    check = check_archive(logs, relay.messages, archive.messages, bcc_address=ARCHIVE)
    assert check.ok, check.problems
    assert len(archive.messages) == len(sent)
    for message in archive.messages:
        assert message.rcpt_tos == (ARCHIVE,)
        assert message.mail_from == "archive-bounces@example.com"
    # Failed logs carry the reply and a reason; the report agrees with the logs.
    for log in logs:
        if log.email in at_rcpt:
            assert log.smtp_reply.startswith("550 5.1.1") and log.failure_type == "hard"
        elif log.email in at_data:
            assert log.smtp_reply.startswith("554 5.7.1")
    report = postroom.reports.report(delivery_id).to_json()
    assert report["by_status"] == {"sent": len(sent), "failed": len(failed)}
    assert report["archive"] == {"pending": 0, "archived": len(sent), "failed": 0}
    # The recipient's message carries the SHA-256 recorded in its log.
    by_id = {log.message_id: log for log in sent}
    for message in relay.messages:
        mid = str(message_from_bytes(message.data, policy=default)["Message-ID"])
        assert hashlib.sha256(message.data).hexdigest() == by_id[mid].sha256


def test_archive_relay_down_does_not_block_recipients_and_nothing_is_lost(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    archive = capture()
    archive.stop()  # the archive relay is down for the whole send
    postroom = make_postroom(sqlite_url, relay, archive=archive,
                             archive_options={"drain_seconds": 0.5})
    delivery_id = _delivery(postroom, tmp_path, _people(200))

    summary = asyncio.run(postroom.sending.send(delivery_id))

    assert summary.sent == 200 and len(relay.messages) == 200
    assert summary.state is DeliveryState.FINISHED
    assert summary.archive_pending == 200
    assert postroom.reports.report(delivery_id).archive["pending"] == 200

    archive.start()  # back on the same port
    left = asyncio.run(postroom.archive.flush(wait_seconds=10))
    assert left == 0
    check = check_archive(_all_logs(postroom, delivery_id), relay.messages, archive.messages,
                          bcc_address=ARCHIVE)
    assert check.ok, check.problems
    assert len(archive.messages) == 200
    # A second flush sends nothing again.
    assert asyncio.run(postroom.archive.flush(wait_seconds=1)) == 0
    assert len(archive.messages) == 200


def test_copies_tried_thousands_of_times_are_still_retried_and_the_fault_is_logged(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """An archive down for days: copies retried every `max_backoff_seconds` pile up
    attempts. The backoff of the 1,025th attempt overflowed (2.0 ** 1024) and ended the
    archive loop, and a worker with it. Here the copies stay pending and the log says why,
    once; when the relay is back, they all go."""
    from sqlalchemy import update

    from postroom.storage.schema import archive_outbox

    relay = capture()
    archive = capture()
    archive.stop()
    postroom = make_postroom(sqlite_url, relay, archive=archive,
                             archive_options={"drain_seconds": 0.3})
    delivery_id = _delivery(postroom, tmp_path, _people(30))
    assert asyncio.run(postroom.sending.send(delivery_id)).archive_pending == 30
    with postroom.store.engine.begin() as conn:
        conn.execute(update(archive_outbox).values(attempts=5000))

    caplog.clear()  # the send's own archive loop said it too
    with caplog.at_level("WARNING", logger="postroom.delivery.archive"):
        assert asyncio.run(postroom.archive.flush(wait_seconds=1)) == 30
    faults = [r.getMessage() for r in caplog.records
              if r.name == "postroom.delivery.archive"]
    assert len(faults) == 1 and "archive copies cannot be delivered" in faults[0], faults

    archive.start()
    assert asyncio.run(postroom.archive.flush(wait_seconds=10)) == 0
    assert len(archive.messages) == 30


def test_archive_relay_returning_during_the_run_gets_every_copy(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    archive = capture(script=Script().on_rcpt(ARCHIVE, "421 4.3.2 Archive busy", times=30))
    postroom = make_postroom(sqlite_url, relay, archive=archive)
    delivery_id = _delivery(postroom, tmp_path, _people(100))

    summary = asyncio.run(postroom.sending.send(delivery_id))

    assert summary.sent == 100 and summary.archive_pending == 0
    check = check_archive(_all_logs(postroom, delivery_id), relay.messages, archive.messages,
                          bcc_address=ARCHIVE)
    assert check.ok, check.problems


def test_temporary_failures_are_retried_and_sent_and_archived_once(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    people = _people(60)
    at_rcpt_421 = people[1]["email"].replace("Example.net", "example.net")
    at_rcpt_451 = people[2]["email"].replace("Example.net", "example.net")
    at_data_451 = people[3]["email"].replace("Example.net", "example.net")
    dropped = people[4]["email"].replace("Example.net", "example.net")
    script = (Script()
              .on_rcpt(at_rcpt_421, "421 4.7.0 Try again later, closing connection", times=1)
              .on_rcpt(at_rcpt_451, "451 4.3.0 Temporary local problem", times=2)
              .on_data(at_data_451, "451 4.3.0 Queue full, try later", times=1)
              .on_data(dropped, Drop(), times=1))
    relay = capture(script=script)
    archive = capture()
    postroom = make_postroom(database_url, relay, archive=archive)
    delivery_id = _delivery(postroom, tmp_path, people)

    summary = asyncio.run(postroom.sending.send(delivery_id))

    assert summary.state is DeliveryState.FINISHED
    logs = {log.email: log for log in _all_logs(postroom, delivery_id)}
    assert all(log.status is LogStatus.SENT for log in logs.values())
    assert logs[at_rcpt_421].attempts == 2
    assert logs[at_rcpt_451].attempts == 3
    assert logs[at_data_451].attempts == 2
    assert logs[dropped].attempts == 2
    for address in (at_rcpt_421, at_rcpt_451, at_data_451, dropped):
        assert len(relay.received_for(address)) == 1
    assert len(relay.messages) == 60
    check = check_archive(list(logs.values()), relay.messages, archive.messages,
                          bcc_address=ARCHIVE)
    assert check.ok, check.problems
    assert len(archive.messages) == 60


def test_retries_left_for_a_later_run_are_sent_by_it(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    people = _people(10)
    slow = people[0]["email"].replace("Example.net", "example.net")
    relay = capture(script=Script().on_rcpt(slow, "451 4.3.0 Later", times=1))
    archive = capture()
    # No quick retry and no waiting: the deferred message stays pending after the run.
    postroom = make_postroom(sqlite_url, relay, archive=archive,
                             sending={"quick_retries": 0, "wait_for_retries_seconds": 0})
    delivery_id = _delivery(postroom, tmp_path, people)

    first = asyncio.run(postroom.sending.send(delivery_id))
    assert first.sent == 9 and first.deferred == 1
    assert first.state is DeliveryState.SENDING
    pending = postroom.deliveries.logs(delivery_id, status="pending")
    assert [log.email for log in pending] == [slow]
    assert pending[0].next_attempt_at is not None

    # Make the retry due now, as the clock would after the retry period.
    later = postroom.clock() + (pending[0].next_attempt_at - postroom.clock()) * 2
    postroom.clock = lambda: later
    second = asyncio.run(postroom.sending.send(delivery_id))
    assert second.sent == 1 and second.state is DeliveryState.FINISHED
    assert len(relay.received_for(slow)) == 1
    assert len(archive.messages) == 10


def test_header_injection_from_recipient_data_adds_no_header_and_no_recipient(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    archive = capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive)
    rows = [{"email": "victim@example.org", "first_name": "\r\nBcc: attacker@example.com",
             "last_name": "X\nCc: other@example.com", "tier": "gold\r\nX-Injected: 1"}]
    delivery_id = _delivery(postroom, tmp_path, rows)

    summary = asyncio.run(postroom.sending.send(delivery_id))

    assert summary.sent == 1
    [message] = relay.messages
    assert message.rcpt_tos == ("victim@example.org",)
    assert relay.rcpt_attempts == ["victim@example.org"]
    parsed = message_from_bytes(message.data, policy=default)
    assert parsed["Bcc"] is None and parsed["Cc"] is None and parsed["X-Injected"] is None
    assert len(parsed.get_all("To") or []) == 1
    assert "attacker@example.com" in str(parsed["To"])  # inert, inside the display name
    header_block = message.data.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith((b"bcc:", b"cc:", b"x-injected:"))
                   for line in header_block.split(b"\r\n"))
    [copy] = archive.messages
    assert copy.data == message.data and copy.rcpt_tos == (ARCHIVE,)


def test_bcc_off_sends_no_copy(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    archive = capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive)
    delivery_id = _delivery(postroom, tmp_path, _people(20), bcc=False)

    summary = asyncio.run(postroom.sending.send(delivery_id))

    assert summary.sent == 20 and archive.messages == []
    assert postroom.reports.report(delivery_id).archive == {"pending": 0, "archived": 0,
                                                            "failed": 0}
