"""Crash safety (issue 5, acceptance 2 and 3): workers killed with SIGKILL mid-delivery, an
archive relay down for half a delivery, a flaky recipients' relay. Nothing is lost, duplicates
stay within what the report marks in doubt, the archive holds one copy per sent log."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from postroom.app import Postroom
from postroom.domain.models import ArchiveState
from postroom.domain.states import DeliveryState, LogStatus
from postroom.testing.archive_check import check_archive
from postroom.testing.smtp_server import CaptureServer, Drop, Script
from tests.conftest import ARCHIVE
from tests.integration.workers_support import (
    start_worker,
    started_delivery,
    stop_worker,
    write_config,
)

RECIPIENTS = int(os.environ.get("POSTROOM_KILL_TEST_RECIPIENTS", "20000"))
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.MULTILINE | re.IGNORECASE)


def _message_id(data: bytes) -> bytes:
    match = _MESSAGE_ID.search(data.split(b"\r\n\r\n", 1)[0])
    assert match is not None
    return match.group(1)


def _done(postroom: Postroom, delivery_id: int) -> bool:
    if postroom.store.get_delivery(delivery_id).state is not DeliveryState.FINISHED:
        return False
    counts = postroom.store.archive_counts(delivery_id).get(delivery_id, {})
    return counts.get(ArchiveState.PENDING, 0) == 0


def test_workers_killed_at_random_moments_lose_nothing(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    # Two workers on PostgreSQL; on SQLite one worker process sends (docs/operations.md).
    workers = 1 if database_url.startswith("sqlite") else 2
    relay, archive = capture(), capture()
    postroom = make_postroom(database_url, relay, archive=archive)
    delivery_id = started_delivery(postroom, tmp_path, RECIPIENTS)
    config = write_config(tmp_path / "w.toml", database_url, relay, archive)
    rng = random.Random(RECIPIENTS * 10 + workers)
    procs = [start_worker(config, tmp_path / f"w{i}.log") for i in range(workers)]
    kills = [3] * workers
    try:
        while any(kills):
            # A random moment while the delivery is under way.
            time.sleep(rng.uniform(0.5, 3.0))
            if _done(postroom, delivery_id):
                break
            index = rng.choice([i for i, left in enumerate(kills) if left])
            procs[index].send_signal(signal.SIGKILL)
            procs[index].wait(10)
            kills[index] -= 1
            procs[index] = start_worker(config, tmp_path / f"w{index}.log")
        deadline = time.monotonic() + 600
        while not _done(postroom, delivery_id):
            assert time.monotonic() < deadline, "the delivery did not finish"
            time.sleep(0.5)
    finally:
        codes = [stop_worker(p) for p in procs]
    assert codes == [0] * workers
    assert not any(kills), f"the delivery finished before every kill happened: {kills}"

    report = postroom.reports.report(delivery_id)
    assert report.by_status == {LogStatus.SENT: RECIPIENTS}, "every log final, all sent"
    received = Counter(m.rcpt_tos[0] for m in relay.messages)
    assert len(received) == RECIPIENTS, "every recipient's message arrived"
    # Each log can be received once more per time its fate was in doubt: the recipients who
    # got it twice (or more) are among the logs in doubt, the extra copies among the episodes.
    twice = sum(1 for n in received.values() if n > 1)
    extra_messages = sum(n - 1 for n in received.values())
    assert twice <= report.doubt.logs, (twice, report.doubt)
    assert extra_messages <= report.doubt.events, (extra_messages, report.doubt)

    copies = Counter(_message_id(m.data) for m in archive.messages)
    logs = postroom.store.list_logs(delivery_id, limit=RECIPIENTS + 1)
    sent_ids = {log.message_id.encode() for log in logs if log.message_id}
    assert set(copies) == sent_ids, "a copy for every sent log, none for anything else"
    extra = sum(1 for n in copies.values() if n > 1)
    assert extra <= report.doubt.archive, (extra, report.doubt)
    assert report.archive[ArchiveState.ARCHIVED] == RECIPIENTS
    print(f"\n{database_url.split(':')[0]}, {workers} worker(s), {RECIPIENTS} recipients, "
          f"{3 * workers} kills: in doubt {report.doubt.logs} logs / "
          f"{report.doubt.archive} archive copies; received twice {twice} "
          f"({extra_messages} extra messages); archive copies twice {extra}")


def test_archive_down_for_half_and_a_flaky_relay_reconcile_exactly(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    count = 2000
    flaky = random.Random(5)
    relay = capture(script=Script().on_data(lambda _: flaky.random() < 0.10, Drop()))
    parked = capture()
    archive_port = parked.port
    parked.stop()  # the archive relay is down...
    postroom = make_postroom(database_url, relay, archive=parked,
                             sending={"quick_retries": 20, "quick_retry_seconds": 0.02,
                                      "pause_after_transport_failures": 0},
                             archive_options={"drain_seconds": 30})
    delivery_id = started_delivery(postroom, tmp_path, count)
    archives: list[CaptureServer] = []
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if done >= count // 2 and not archives:  # ...for the first half of the delivery
            archives.append(capture(port=archive_port))

    summary = asyncio.run(postroom.sending.send(delivery_id, progress=progress))
    assert summary.state is DeliveryState.FINISHED and archives
    archive = archives[0]
    assert summary.archive_pending == 0
    logs = postroom.store.list_logs(delivery_id, limit=count + 1)
    assert sum(log.status is LogStatus.SENT for log in logs) == count
    # A connection dropped before the reply never delivers: each recipient exactly once.
    received = Counter(m.rcpt_tos for m in relay.messages)
    assert len(received) == count and set(received.values()) == {1}
    check = check_archive(logs, relay.messages, archive.messages, bcc_address=ARCHIVE)
    assert check.ok, check.problems
    assert check.archive_received == check.sent_logs == count
    doubt = postroom.reports.report(delivery_id).doubt
    assert doubt.events > 0, "the dropped connections were counted in doubt"
