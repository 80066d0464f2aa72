"""`sending.processes`: helper processes send their share of one delivery beside `send`
(app/send_process.py, ADR 0031), with the outcome of a single process: every recipient tried
once, one archive copy per accepted message and none for a refused one, counts and progress
summed over the processes, and no log left claimed when the run ends or is halted."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from postroom.app import Postroom
from postroom.domain.states import DeliveryState, LogStatus
from postroom.settings import Settings
from postroom.storage.schema import delivery_logs, workers
from postroom.testing.archive_check import check_archive
from postroom.testing.smtp_server import CaptureServer, Hold, Script
from postroom.wiring import build
from tests.conftest import ARCHIVE
from tests.integration.test_email_bcc import _all_logs, _delivery, _people


def _senders(postroom: Postroom) -> list[tuple[str, int, int, bool]]:
    """(kind, pid, sent, ended) of every sender that registered."""
    with postroom.store.engine.connect() as conn:
        rows = conn.execute(select(workers.c.kind, workers.c.pid, workers.c.sent,
                                   workers.c.stopped_at)).all()
    return [(row.kind, row.pid, row.sent, row.stopped_at is not None) for row in rows]


def _open_when_two_send(postroom: Postroom, gate: threading.Event) -> None:
    """Set `gate` once two senders run (the helper process has started), or after 60 s (the
    test then fails on the helper's share)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(
            1 for kind, _, _, ended in _senders(postroom) if kind == "send" and not ended) < 2:
        time.sleep(0.05)
    gate.set()


def _claimed(postroom: Postroom, delivery_id: int) -> int:
    with postroom.store.engine.connect() as conn:
        return len(conn.scalars(select(delivery_logs.c.id).where(
            delivery_logs.c.delivery_id == delivery_id,
            delivery_logs.c.claimed_by.is_not(None))).all())


def test_two_processes_send_a_delivery_each_message_once_with_its_one_copy(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    both_running = threading.Event()  # the relay holds every message until then
    relay = capture(reject_ratio=0.1,
                    script=Script().on_data(lambda _: True, Hold(both_running)))
    archive = capture()
    postroom = make_postroom(database_url, relay, archive=archive,
                             sending={"processes": 2, "connections": 2, "batch_size": 20})
    delivery_id = _delivery(postroom, tmp_path, _people(400))
    settled: list[int] = []
    watcher = threading.Thread(target=_open_when_two_send, args=(postroom, both_running))
    watcher.start()

    summary = asyncio.run(postroom.sending.send(delivery_id, progress=settled.append))
    watcher.join()

    logs = _all_logs(postroom, delivery_id)
    sent = [log for log in logs if log.status is LogStatus.SENT]
    failed = [log for log in logs if log.status is LogStatus.FAILED]
    assert summary.state is DeliveryState.FINISHED and summary.helper_errors == []
    assert (summary.sent, summary.failed) == (len(sent), len(failed))
    assert len(sent) + len(failed) == 400 and 300 < len(sent) < 400
    assert sum(settled) == 400  # the helper's progress reached the caller
    # each recipient tried once: one RCPT per address across both processes' connections
    tried = [r for message in relay.messages for r in message.rcpt_tos]
    assert len(sent) == len(relay.messages) and len(tried) == len(set(tried))
    assert (summary.archived, summary.archive_pending) == (len(sent), 0)
    check = check_archive(logs, relay.messages, archive.messages, bcc_address=ARCHIVE)
    assert check.ok, check.problems
    senders = [s for s in _senders(postroom) if s[0] == "send"]
    assert len(senders) == 2 and all(ended for *_, ended in senders)
    [helper] = [s for s in senders if s[1] != os.getpid()]
    assert 0 < helper[2] < len(sent)  # the helper sent a share, not all
    assert _claimed(postroom, delivery_id) == 0


def test_a_halt_reaches_the_helpers_and_leaves_nothing_claimed(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    archive = capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive,
                             sending={"processes": 2, "connections": 1, "batch_size": 10})
    delivery_id = _delivery(postroom, tmp_path, _people(3000))
    halt = asyncio.Event()
    settled: list[int] = []

    def progress(count: int) -> None:
        settled.append(count)
        if sum(settled) >= 200:
            halt.set()

    summary = asyncio.run(postroom.sending.send(delivery_id, progress=progress, halt=halt))

    logs = _all_logs(postroom, delivery_id)
    sent = [log for log in logs if log.status is LogStatus.SENT]
    pending = [log for log in logs if log.status is LogStatus.PENDING]
    assert summary.interrupted == "halted" and summary.helper_errors == []
    assert summary.sent == len(sent) and 200 <= len(sent) < 3000
    assert len(sent) + len(pending) == 3000  # the rest waits for the next run
    assert len(relay.messages) == len(sent)  # what went was recorded, by either process
    assert _claimed(postroom, delivery_id) == 0
    assert all(ended for kind, _, _, ended in _senders(postroom) if kind == "send")


def test_a_helper_killed_mid_send_is_reported_and_its_logs_are_sent_by_the_parent(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    both_running = threading.Event()
    relay = capture(script=Script().on_data(lambda _: True, Hold(both_running)))
    archive = capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive,
                             sending={"processes": 2, "connections": 2, "batch_size": 20,
                                      "lease_seconds": 2, "wait_for_retries_seconds": 10})
    delivery_id = _delivery(postroom, tmp_path, _people(200))
    killed: list[int] = []

    def kill_the_helper() -> None:
        _open_when_two_send(postroom, threading.Event())  # waits until both run
        [pid] = [pid for kind, pid, _, ended in _senders(postroom)
                 if kind == "send" and pid != os.getpid() and not ended]
        time.sleep(0.5)  # it has claimed a batch and holds it on the wire
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        both_running.set()

    killer = threading.Thread(target=kill_the_helper)
    killer.start()
    summary = asyncio.run(postroom.sending.send(delivery_id))
    killer.join()

    assert killed
    [error] = summary.helper_errors
    assert "exit code -9" in error and "lease runs out" in error
    logs = _all_logs(postroom, delivery_id)
    assert all(log.status is LogStatus.SENT for log in logs)  # its logs taken over and sent
    assert summary.state is DeliveryState.FINISHED
    assert _claimed(postroom, delivery_id) == 0


def _send_as_a_parent(settings: Settings, delivery_id: int) -> None:
    """A `postroom send` of its own, in a process the test can kill."""
    postroom = build(settings)
    asyncio.run(postroom.sending.send(delivery_id))


def _ended(pid: int) -> bool:
    """Whether process `pid` has ended (gone, or a zombie no one reaps: it is not ours)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_a_helper_whose_parent_dies_halts_by_itself(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    both_running = threading.Event()
    relay = capture(script=Script().on_data(lambda _: True, Hold(both_running)))
    archive = capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive,
                             sending={"processes": 2, "connections": 2, "batch_size": 20})
    delivery_id = _delivery(postroom, tmp_path, _people(2000))
    parent = multiprocessing.get_context("spawn").Process(
        target=_send_as_a_parent, args=(postroom.context.settings, delivery_id))
    parent.start()
    assert parent.pid is not None
    try:
        _open_when_two_send(postroom, threading.Event())
        [helper] = [pid for kind, pid, _, ended in _senders(postroom)
                    if kind == "send" and pid != parent.pid and not ended]
        os.kill(parent.pid, signal.SIGKILL)
        parent.join(10)
    finally:
        both_running.set()  # the messages on the wire get their replies
        if parent.is_alive():
            parent.kill()
    deadline = time.monotonic() + 30
    while not _ended(helper) and time.monotonic() < deadline:
        time.sleep(0.05)

    assert _ended(helper)
    # it halted as told, not killed: it recorded what it had sent and signed off
    assert [ended for kind, pid, _, ended in _senders(postroom) if pid == helper] == [True]
    sent = [log for log in _all_logs(postroom, delivery_id) if log.status is LogStatus.SENT]
    # what it had taken when it noticed (16 to 80 seen), not the rest of the delivery (1,980
    # when a helper does not notice)
    assert 0 < len(sent) <= 500 and len(sent) <= len(relay.messages)
