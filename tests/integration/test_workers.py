"""Workers: sharing a delivery, SIGTERM, pausing on transport failures, in-doubt messages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from postroom.app import Postroom
from postroom.domain.states import DeliveryState, LogStatus
from postroom.storage.schema import delivery_logs
from postroom.testing.archive_check import check_archive
from postroom.testing.smtp_server import CaptureServer, Drop, Script, Sleep
from tests.conftest import ARCHIVE
from tests.integration.workers_support import (
    start_worker,
    started_delivery,
    stop_worker,
    write_config,
)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _claimed(postroom: Postroom, delivery_id: int) -> int:
    with postroom.store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).where(
            delivery_logs.c.delivery_id == delivery_id,
            delivery_logs.c.claimed_by.is_not(None))) or 0)


def _archive_ok(postroom: Postroom, delivery_id: int, relay: CaptureServer,
                archive: CaptureServer) -> None:
    logs = postroom.store.list_logs(delivery_id, limit=100_000)
    check = check_archive(logs, relay.messages, archive.messages, bcc_address=ARCHIVE)
    assert check.ok, check.problems


def test_two_workers_share_a_delivery_and_sigterm_stops_them_cleanly(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    relay = capture(script=Script().on_data(lambda _: True, Sleep(0.01)))
    archive = capture()
    postroom = make_postroom(database_url, relay, archive=archive)
    delivery_id = started_delivery(postroom, tmp_path, 400)
    config = write_config(tmp_path / "w.toml", database_url, relay, archive)
    workers = [start_worker(config, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        _wait(lambda: len(relay.messages) >= 100, 60, "100 messages")
        assert [stop_worker(w) for w in workers] == [0, 0]
    finally:
        for w in workers:
            stop_worker(w)
    # In-flight messages were recorded, the rest given back: nothing held, nothing in doubt.
    assert _claimed(postroom, delivery_id) == 0
    sent = sum(n for status, _, _, n in postroom.store.log_counts(delivery_id)
               if status == LogStatus.SENT)
    assert sent == len(relay.messages) < 400
    assert postroom.reports.report(delivery_id).doubt.logs == 0
    stopped = [w for w in postroom.operations.workers() if w.kind == "worker"]
    assert len(stopped) == 2 and all(w.stopped_at is not None for w in stopped)
    assert all(w.sent > 0 for w in stopped), "both workers took part"

    again = [start_worker(config, tmp_path / f"again{i}.log") for i in range(2)]
    try:
        _wait(lambda: postroom.store.get_delivery(delivery_id).state is DeliveryState.FINISHED
              and len(archive.messages) == 400, 120, "the delivery to finish")
    finally:
        assert [stop_worker(w) for w in again] == [0, 0]
    received = Counter(m.rcpt_tos for m in relay.messages)
    assert len(received) == 400 and set(received.values()) == {1}
    _archive_ok(postroom, delivery_id, relay, archive)


def test_consecutive_transport_failures_pause_the_delivery(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    down = capture()
    port = down.port
    down.stop()  # nothing listens there now: every connection is refused
    archive = capture()
    postroom = make_postroom(database_url, down, archive=archive,
                             sending={"pause_after_transport_failures": 6, "connections": 2})
    delivery_id = started_delivery(postroom, tmp_path, 50)
    summary = asyncio.run(postroom.sending.send(delivery_id))
    assert summary.state is DeliveryState.PAUSED
    assert "6 transport failures in a row" in summary.paused_reason
    assert summary.sent == 0 and summary.failed == 0
    assert postroom.deliveries.pending_count(delivery_id) == 50, "no recipient burnt"
    assert postroom.store.get_delivery(delivery_id).last_error == summary.paused_reason
    assert postroom.store.address_counts() == {}, "a relay outage says nothing of addresses"

    relay = capture(port=port)
    postroom.deliveries.resume(delivery_id)
    assert postroom.store.get_delivery(delivery_id).last_error == ""
    assert asyncio.run(postroom.sending.send(delivery_id)).state is DeliveryState.FINISHED
    assert len({m.rcpt_tos for m in relay.messages}) == len(relay.messages) == 50
    _archive_ok(postroom, delivery_id, relay, archive)


def test_a_message_accepted_but_unanswered_is_resent_and_counted_in_doubt(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    script = Script()
    for address in ("r00003@example.com", "r00007@example.com"):
        script.on_data(address, Drop(after_accepting=True), times=1)
    relay, archive = capture(script=script), capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive)
    delivery_id = started_delivery(postroom, tmp_path, 20)
    summary = asyncio.run(postroom.sending.send(delivery_id))
    assert summary.state is DeliveryState.FINISHED and summary.in_doubt == 2
    twice = [rcpts for rcpts, n in Counter(m.rcpt_tos for m in relay.messages).items() if n > 1]
    assert sorted(twice) == [("r00003@example.com",), ("r00007@example.com",)]
    doubt = postroom.reports.report(delivery_id).doubt
    assert (doubt.logs, doubt.events, doubt.review) == (2, 2, 0)
    assert len(twice) <= doubt.logs
    assert len(archive.messages) == 20  # one copy per sent log, duplicates or not


def test_at_most_once_sets_unanswered_messages_aside_until_an_operator_decides(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    script = Script().on_data("r00004@example.com", Drop(after_accepting=True), times=1)
    relay, archive = capture(script=script), capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive,
                             sending={"in_doubt": "review"})
    delivery_id = started_delivery(postroom, tmp_path, 10)
    summary = asyncio.run(postroom.sending.send(delivery_id))
    assert summary.state is DeliveryState.SENDING, "waits for the operator"
    assert len(relay.messages) == 10, "not resent"
    [log] = postroom.deliveries.logs(delivery_id, status=LogStatus.REVIEW)
    assert log.email == "r00004@example.com" and "in doubt" in log.detail
    assert postroom.deliveries.resolve_review(delivery_id, resend=False) == 1
    assert postroom.store.get_delivery(delivery_id).state is DeliveryState.FINISHED
    assert postroom.reports.report(delivery_id).by_status == {"sent": 9, "failed": 1}


def test_a_worker_finishes_a_delivery_whose_sender_died_before_finishing_it(
        capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
        database_url: str, tmp_path: Path) -> None:
    """A sender recorded every log and was killed before moving the delivery to `finished`
    (the kill test of test_archive_sinks.py once hung on this): no log is claimable, and a
    worker must still come to the delivery and finish it, sending nothing again."""
    from postroom.domain.models import LogUpdate

    relay = capture()
    postroom = make_postroom(database_url, relay, archive=capture())
    delivery_id = started_delivery(postroom, tmp_path, 5)
    store, now = postroom.store, postroom.clock()
    taken = store.claim_due(delivery_id, now, 50, timedelta(seconds=60), worker="dead")
    store.mark_attempting([t.log_id for t in taken], worker="dead", now=now)
    store.record([LogUpdate(log_id=t.log_id, status=LogStatus.SENT, attempts=1,
                            next_attempt_at=None, smtp_reply="250 OK", sent_at=now,
                            archive_data=b"Subject: x\r\n\r\nbody\r\n", sha256=None)
                  for t in taken], now)
    assert store.get_delivery(delivery_id).state is DeliveryState.SENDING
    summary = asyncio.run(postroom.sending.work(asyncio.Event(), until_idle=True))
    assert store.get_delivery(delivery_id).state is DeliveryState.FINISHED
    assert [(run.delivery_id, run.sent) for run in summary.runs] == [(delivery_id, 0)]
    assert relay.messages == []


def test_workers_and_health_commands(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay, archive = capture(), capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive)
    delivery_id = started_delivery(postroom, tmp_path, 5)
    config = write_config(tmp_path / "w.toml", sqlite_url, relay, archive)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        return subprocess.run([sys.executable, "-m", "postroom", "--config", str(config),
                               *args], capture_output=True, text=True, env=env, timeout=60)

    # Messages due and nobody sending them (the lease in w.toml is 2 s): a problem.
    time.sleep(2.1)
    unhealthy = cli("health", "--json")
    assert unhealthy.returncode == 1
    assert "no live sender" in json.loads(unhealthy.stdout)["problems"][0]

    worker = start_worker(config, tmp_path / "w.log")
    try:
        _wait(lambda: len(archive.messages) == 5, 30, "the delivery")
        listed = json.loads(cli("workers", "--json").stdout)
        assert [(w["kind"], w["state"]) for w in listed] == [("worker", "alive")]
        healthy = cli("health", "--json")
        assert healthy.returncode == 0, healthy.stdout
        assert json.loads(healthy.stdout)["live_workers"] == 1
    finally:
        assert stop_worker(worker) == 0
    assert postroom.store.get_delivery(delivery_id).state is DeliveryState.FINISHED
    listed = json.loads(cli("workers", "--json").stdout)
    assert [w["state"] for w in listed] == ["stopped"] and listed[0]["sent"] == 5
