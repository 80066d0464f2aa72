"""Archive sinks beside SMTP: a directory (one fsynced .eml per copy) and an IMAP folder
(APPEND to a real Dovecot), through the real archiver, outbox, ledger and `archive verify`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postroom.app import Postroom
from postroom.archive.ledger_ops import verify_ledger
from postroom.archive.stores import imap_copies, parse_imap_url, tree_copies
from postroom.archive.verify import Scope, verify_archive
from postroom.domain.states import LogStatus
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import write_csv
from tests.integration.dovecot import Dovecot, dovecot_instance
from tests.integration.postfix import _user

BOX_USER = "pr-archive-imap"


def _delivery(postroom: Postroom, tmp_path: Path, n: int) -> int:
    rows = [{"email": f"p{i}@example.net", "first_name": f"P{i}"} for i in range(n)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "people.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hi {{ recipient.first_name }}",
                                             "text": "Hi {{ recipient.first_name }}",
                                             "from_address": "news@postroom.example",
                                             "email_bcc": True, "max_retries": 0})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).ok
    return delivery.id


def test_directory_sink_writes_one_file_per_copy_and_retries_while_it_cannot(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    root = tmp_path / "vault"
    root.write_text("not a directory yet")  # the sink cannot write: copies wait
    relay = capture(reject_ratio=0.25)
    options = {"sink": "directory", "directory": root, "drain_seconds": 0.5}
    postroom = make_postroom(database_url, relay, archive_options=options)
    delivery_id = _delivery(postroom, tmp_path, 30)
    asyncio.run(postroom.sending.send(delivery_id))
    sent = {log.id: log for log in postroom.store.list_logs(delivery_id, limit=100)
            if log.status is LogStatus.SENT}
    assert 10 < len(sent) < 30
    assert postroom.store.archive_pending(delivery_id) == len(sent)  # nothing lost
    assert postroom.store.ledger_head().count == 0

    root.unlink()  # the administrator fixes the mount
    assert asyncio.run(postroom.archive.flush(wait_seconds=10)) == 0
    files = sorted(root.rglob("*"))
    emls = [f for f in files if f.is_file()]
    assert len(emls) == len(sent) and not [f for f in emls if f.name.startswith(".")]
    for path in emls:
        parts = path.relative_to(root).parts
        assert re.fullmatch(r"\d{4}/\d{2}/\d{2}", "/".join(parts[:3])), parts
        delivery, log = map(int, parts[3].removesuffix(".eml").split("-"))
        assert delivery == delivery_id and log in sent
        assert oct(path.stat().st_mode & 0o777) == "0o640"
    entries = list(postroom.store.ledger_entries())
    assert len(entries) == len(sent)
    assert all(e.ack.startswith("file ") and (root / e.ack[5:]).is_file() for e in entries)
    assert verify_ledger(postroom.store, None).ok
    report = verify_archive(postroom.store, tree_copies(root, max_bytes=1 << 20),
                            Scope(delivery_id), now=postroom.clock())
    assert report.ok and report.verified == len(sent) and report.lag_seconds is None


@pytest.fixture
def imap_box() -> Iterator[Dovecot]:
    if os.geteuid() == 0:
        _user(BOX_USER)
        maildir = Path(f"/home/{BOX_USER}/Maildir")
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", f"{BOX_USER}:", str(maildir)], check=True)
    yield from dovecot_instance(BOX_USER)


def test_imap_sink_appends_each_copy_once(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path, imap_box: Dovecot,
) -> None:
    relay = capture(reject_ratio=0.25)
    options = {"sink": "imap", "imap_url": imap_box.url(),
               "imap_password": imap_box.password, "connections": 2}
    postroom = make_postroom(sqlite_url, relay, archive_options=options)
    delivery_id = _delivery(postroom, tmp_path, 20)
    asyncio.run(postroom.sending.send(delivery_id))
    sent = [log for log in postroom.store.list_logs(delivery_id, limit=100)
            if log.status is LogStatus.SENT]
    assert postroom.store.archive_pending(delivery_id) == 0
    entries = list(postroom.store.ledger_entries())
    assert len(entries) == len(sent) and all(e.ack.startswith("imap INBOX") for e in entries)
    reader = imap_copies(parse_imap_url(imap_box.url()), imap_box.password, max_bytes=1 << 20)
    report = verify_archive(postroom.store, reader, Scope(delivery_id), now=postroom.clock())
    assert report.ok and (report.read, report.verified) == (len(sent), len(sent))


def test_journal_format_wraps_each_copy_and_the_ledger_hashes_the_original(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    from email import message_from_bytes
    from email.policy import default

    relay, archive = capture(), capture()
    postroom = make_postroom(database_url, relay, archive=archive,
                             archive_options={"format": "journal"})
    delivery_id = _delivery(postroom, tmp_path, 6)
    asyncio.run(postroom.sending.send(delivery_id))
    originals = {m.data for m in relay.messages}
    reports = [m.data for m in archive.messages]
    assert len(reports) == 6 and not originals & set(reports)
    for data in reports:
        parsed = message_from_bytes(data, policy=default)
        assert parsed.get_content_type() == "multipart/mixed"
        [attached] = [p for p in parsed.iter_parts()
                      if p.get_content_type() == "message/rfc822"]
        assert attached.get_content().as_bytes() and b"X-Postroom-Journal: 1" in data
    entries = list(postroom.store.ledger_entries())
    assert sorted(e.sha256 for e in entries) == sorted(
        hashlib.sha256(o).hexdigest() for o in originals)
    store = tmp_path / "journal"
    store.mkdir()
    for i, data in enumerate(reports):
        (store / f"{i}.eml").write_bytes(b"Received: by the archive\r\n" + data)
    report = verify_archive(postroom.store, tree_copies(store, max_bytes=1 << 20),
                            Scope(delivery_id), now=postroom.clock())
    assert report.ok and report.verified == 6


def test_directory_sink_workers_killed_while_archiving_lose_no_copy(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    """The kill test of test_crash_safety.py with the directory sink: `postroom worker`
    processes SIGKILLed at random moments. Every sent log's copy is in the directory (verify:
    nothing missing, altered or unexpected), duplicates only among copies in doubt, one ledger
    entry per copy and a chain that verifies."""
    import random
    import signal
    import time

    from postroom.domain.states import DeliveryState
    from tests.integration.workers_support import (
        start_worker,
        started_delivery,
        stop_worker,
        write_config,
    )

    count = int(os.environ.get("POSTROOM_KILL_TEST_RECIPIENTS", "4000"))
    workers = 1 if database_url.startswith("sqlite") else 2
    relay, unused = capture(), capture()
    root = tmp_path / "vault"
    postroom = make_postroom(database_url, relay,
                             archive_options={"sink": "directory", "directory": root})
    delivery_id = started_delivery(postroom, tmp_path, count)
    config = write_config(tmp_path / "w.toml", database_url, relay, unused)
    text = config.read_text().replace(
        "[archive]\n", f'[archive]\nsink = "directory"\ndirectory = "{root}"\n')
    config.write_text(text)

    def done() -> bool:
        if postroom.store.get_delivery(delivery_id).state is not DeliveryState.FINISHED:
            return False
        return postroom.store.archive_pending(delivery_id) == 0

    rng = random.Random(count + workers)
    procs = [start_worker(config, tmp_path / f"w{i}.log") for i in range(workers)]
    kills = 0
    try:
        while kills < 3 * workers and not done():
            time.sleep(rng.uniform(0.3, 2.0))
            index = rng.randrange(workers)
            procs[index].send_signal(signal.SIGKILL)
            procs[index].wait(10)
            kills += 1
            procs[index] = start_worker(config, tmp_path / f"w{index}.log")
        deadline = time.monotonic() + 600
        while not done():
            assert time.monotonic() < deadline, "the delivery did not finish"
            time.sleep(0.5)
    finally:
        codes = [stop_worker(p) for p in procs]
    assert codes == [0] * workers and kills >= 1
    assert unused.messages == []  # every copy went to the directory, none to a relay

    report = postroom.reports.report(delivery_id)
    sent = report.by_status.get(LogStatus.SENT, 0)
    assert sent == count
    check = verify_archive(postroom.store, tree_copies(root, max_bytes=1 << 20),
                           Scope(delivery_id), now=postroom.clock())
    assert (check.missing, check.altered, check.unexpected) == (0, 0, 0), check.items
    assert check.verified == count and check.duplicated <= report.doubt.archive
    head = postroom.store.ledger_head()
    assert head.count == count and verify_ledger(postroom.store, None).ok
    leftovers = list(root.rglob(".*.tmp"))
    print(f"\n{database_url.split(':')[0]}, {workers} worker(s), {count} recipients, {kills} "
          f"kills: archive copies in doubt {report.doubt.archive}, duplicated files "
          f"{check.duplicated}, temporary files left by kills {len(leftovers)}")
