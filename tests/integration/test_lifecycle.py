"""Pause, resume and stop while a delivery is sending; validity; analysis on re-run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from postroom.app import Postroom
from postroom.domain.outcomes import FailureReason
from postroom.domain.states import DeliveryState, LogStatus
from postroom.testing.archive_check import check_archive
from postroom.testing.smtp_server import CaptureServer, Script
from tests.conftest import ARCHIVE, write_csv


def _setup(postroom: Postroom, tmp_path: Path, n: int) -> int:
    rows = [{"email": f"p{i:03d}@example.com", "first_name": f"P{i}"} for i in range(n)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "p.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hi {{ recipient.first_name }}",
                                             "text": "Hello {{ recipient.first_name }}\n",
                                             "email_bcc": True})
    delivery, _ = postroom.deliveries.create_delivery("t")
    return delivery.id


def test_pause_during_send_then_resume_sends_each_message_once(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay, archive = capture(), capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive, sending={"batch_size": 20})
    delivery_id = _setup(postroom, tmp_path, 300)
    done = 0

    def pause_after_50(n: int) -> None:
        nonlocal done
        done += n
        if done == 50:
            postroom.deliveries.pause(delivery_id)

    first = asyncio.run(postroom.sending.send(delivery_id, progress=pause_after_50))
    assert first.state is DeliveryState.PAUSED
    assert 50 <= first.sent < 300
    assert postroom.deliveries.pending_count(delivery_id) == 300 - first.sent

    postroom.deliveries.resume(delivery_id)
    second = asyncio.run(postroom.sending.send(delivery_id))
    assert second.state is DeliveryState.FINISHED
    assert first.sent + second.sent == 300
    assert len(relay.messages) == 300
    assert len({m.rcpt_tos for m in relay.messages}) == 300
    logs = postroom.store.list_logs(delivery_id, limit=1000)
    check = check_archive(logs, relay.messages, archive.messages, bcc_address=ARCHIVE)
    assert check.ok, check.problems


def test_stop_during_send_cancels_the_rest(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay, archive = capture(), capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive, sending={"batch_size": 20})
    delivery_id = _setup(postroom, tmp_path, 300)
    done = 0

    def stop_after_40(n: int) -> None:
        nonlocal done
        done += n
        if done == 40:
            postroom.deliveries.stop(delivery_id)

    summary = asyncio.run(postroom.sending.send(delivery_id, progress=stop_after_40))
    assert summary.state is DeliveryState.STOPPED
    report = postroom.reports.report(delivery_id).to_json()
    assert report["by_status"]["sent"] == len(relay.messages) == summary.sent
    assert report["by_status"]["cancelled"] == 300 - summary.sent
    assert postroom.deliveries.pending_count(delivery_id) == 0
    # Messages in flight when the delivery stopped were recorded as sent, and archived.
    logs = postroom.store.list_logs(delivery_id, limit=1000)
    check = check_archive(logs, relay.messages, archive.messages, bcc_address=ARCHIVE)
    assert check.ok, check.problems


def test_pending_messages_fail_when_validity_ends(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture(script=Script().on_rcpt(lambda a: True, "451 4.3.0 Try later"))
    postroom = make_postroom(sqlite_url, relay, bcc=False,
                             sending={"quick_retries": 0, "wait_for_retries_seconds": 0})
    _setup(postroom, tmp_path, 5)
    delivery, _ = postroom.deliveries.create_delivery("t", overrides={"email_bcc": False})
    first = asyncio.run(postroom.sending.send(delivery.id))
    assert first.deferred == 5 and first.state is DeliveryState.SENDING

    six_days_later = postroom.clock() + timedelta(days=6)
    postroom.clock = lambda: six_days_later
    second = asyncio.run(postroom.sending.send(delivery.id))
    assert second.state is DeliveryState.FINISHED and second.sent == 0
    logs = postroom.store.list_logs(delivery.id)
    assert {log.status for log in logs} == {LogStatus.FAILED}
    assert {log.failure_reason for log in logs} == {FailureReason.UNREACHABLE}


def test_failed_reanalysis_keeps_the_previous_logs(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    postroom = make_postroom(sqlite_url, relay)
    rows = [{"email": f"p{i}@example.com", "city": "Faro"} for i in range(10)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "p.csv", rows))
    postroom.templates.create_template("t", {"subject": "News from {{ recipient.city }}",
                                             "text": "x\n"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).pending == 10
    assert postroom.deliveries.analyze(delivery.id).pending == 10  # ready → analyzing again
    # A new recipient without the `city` field breaks the subject for that recipient.
    postroom.recipients.import_recipients(write_csv(tmp_path / "q.csv",
                                                    [{"email": "new@example.com"}]))

    report = postroom.deliveries.analyze(delivery.id)

    assert not report.ok
    assert any("recipient.city" in e and "new@example.com" in e for e in report.errors)
    assert postroom.store.get_delivery(delivery.id).state is DeliveryState.FAILED
    logs = postroom.store.list_logs(delivery.id)
    assert len(logs) == 10 and "new@example.com" not in {log.email for log in logs}
    assert relay.messages == []
