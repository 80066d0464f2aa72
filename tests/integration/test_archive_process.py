"""`archive.own_process`: a send's archive copies go from a second process (ADR 0030), with
the same outcome as the in-process loop: every accepted message archived once, nothing for a
refused one, copies left pending (and the fault said) when the archive relay is down."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from postroom.app import Postroom
from postroom.domain.states import DeliveryState, LogStatus
from postroom.storage.schema import archive_outbox, workers
from postroom.testing.archive_check import check_archive
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import ARCHIVE
from tests.integration.test_email_bcc import _all_logs, _delivery, _people


def test_a_second_process_archives_each_accepted_message_once(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    relay = capture(reject_ratio=0.1)
    archive = capture()
    postroom = make_postroom(database_url, relay, archive=archive,
                             archive_options={"own_process": True})
    delivery_id = _delivery(postroom, tmp_path, _people(300))

    summary = asyncio.run(postroom.sending.send(delivery_id))

    logs = _all_logs(postroom, delivery_id)
    sent = [log for log in logs if log.status is LogStatus.SENT]
    assert summary.state is DeliveryState.FINISHED and 200 < summary.sent == len(sent) < 300
    assert (summary.archived, summary.archive_pending, summary.archive_fault) == (
        len(sent), 0, "")
    check = check_archive(logs, relay.messages, archive.messages, bcc_address=ARCHIVE)
    assert check.ok, check.problems
    assert len(archive.messages) == len(sent)
    with postroom.store.engine.connect() as conn:
        claimers = set(conn.scalars(select(archive_outbox.c.claimed_by).where(
            archive_outbox.c.delivery_id == delivery_id)))
        senders = conn.execute(select(workers.c.kind, workers.c.pid, workers.c.stopped_at)).all()
    assert claimers == {None}  # every copy recorded, no lease left behind
    [child] = [row for row in senders if row.kind == "archive"]
    assert child.pid != os.getpid() and child.stopped_at is not None  # another process, ended
    assert postroom.store.ledger_head().count == len(sent)


def test_a_second_process_that_cannot_reach_the_relay_leaves_the_copies_pending(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    archive = capture()
    archive.stop()
    postroom = make_postroom(sqlite_url, relay, archive=archive,
                             archive_options={"own_process": True, "drain_seconds": 0.5})
    delivery_id = _delivery(postroom, tmp_path, _people(40))

    summary = asyncio.run(postroom.sending.send(delivery_id))

    assert summary.sent == 40 and summary.state is DeliveryState.FINISHED
    assert summary.archived == 0 and summary.archive_pending == 40
    assert "could not be reached" in summary.archive_fault, summary.archive_fault
    archive.start()
    assert asyncio.run(postroom.archive.flush(wait_seconds=10)) == 0
    assert len(archive.messages) == 40
