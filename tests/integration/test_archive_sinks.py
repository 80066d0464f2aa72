"""Archive sinks beside SMTP: a directory (one fsynced .eml per copy) and an IMAP folder
(APPEND to a real Dovecot), through the real archiver, outbox, ledger and `archive verify`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.app import Postroom
from postroom.archive.ledger_ops import verify_ledger
from postroom.archive.status import read_sink_figures
from postroom.archive.stores import imap_copies, parse_imap_url, tree_copies
from postroom.archive.verify import Scope, VerifyReport, verify_archive
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


def test_per_sink_figures_follow_each_copy_to_the_sink_that_took_it(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    """Copies archived through the relay, then the instance switched to a directory it cannot
    write yet: `archive status` and the report count each copy under its own sink."""
    relay, archive = capture(), capture()
    before = make_postroom(database_url, relay, archive=archive)
    first = _delivery(before, tmp_path, 5)
    asyncio.run(before.sending.send(first))
    assert len(archive.messages) == 5
    root = tmp_path / "vault"
    root.write_text("not a directory yet")
    after = make_postroom(database_url, relay, archive_options={
        "sink": "directory", "directory": root, "drain_seconds": 0.5})
    second, _ = after.deliveries.create_delivery("t")
    assert after.deliveries.analyze(second.id).ok
    asyncio.run(after.sending.send(second.id))

    figures = read_sink_figures(after.store, after.settings.archive)
    assert [(f.sink, f.configured, f.sent, f.archived, f.pending, f.failed) for f in figures] == [
        ("directory", True, 5, 0, 5, 0), ("smtp", False, 5, 5, 0, 0)]
    assert f"archive directory {root}" in figures[0].last_error and not figures[1].last_error
    assert [f.sink for f in after.reports.report(first).archive_sinks] == ["directory", "smtp"]
    assert after.reports.report(first).archive_sinks[1].archived == 5
    assert after.reports.report(second.id).archive_sinks == [figures[0]]

    root.unlink()
    assert asyncio.run(after.archive.flush(wait_seconds=10)) == 0
    assert [(f.sink, f.archived, f.pending, f.last_error)
            for f in read_sink_figures(after.store, after.settings.archive)] == [
        ("directory", 5, 0, ""), ("smtp", 5, 0, "")]


@pytest.fixture
def imap_box() -> Iterator[Dovecot]:
    def fresh_maildir() -> None:  # under Dovecot's lock: no other run is serving it now
        _user(BOX_USER)
        maildir = Path(f"/home/{BOX_USER}/Maildir")
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", f"{BOX_USER}:", str(maildir)], check=True)

    yield from dovecot_instance(BOX_USER, prepare=fresh_maildir if os.geteuid() == 0 else None)


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


class HoldingProxy:
    """A TCP proxy to the IMAP server that, once armed, withholds the server's answer to the
    next APPEND it stores (`OK [APPENDUID ...]`) and sets `held`: the copy is in the folder
    and its sender has not heard so. Killing the sender then leaves a copy in doubt for sure
    (random kills seldom land in that window). Nothing else is changed or held."""

    def __init__(self, port: int):
        import socket
        import threading

        self._target = port
        self.armed = threading.Event()
        self.held = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target), timeout=10)
                upstream.settimeout(None)
            except OSError:  # the server refused this one: its client sees it closed, and
                client.close()  # the proxy goes on accepting (a dead proxy hangs the test)
                continue
            threading.Thread(target=self._pump, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True),
                             daemon=True).start()

    def _pump(self, source: Any, sink: Any, from_server: bool) -> None:
        import socket

        holding = False
        try:
            while chunk := source.recv(65536):
                if (from_server and self.armed.is_set() and not self.held.is_set()
                        and b"OK [APPENDUID" in chunk):
                    holding = True
                    self.held.set()
                if not holding:
                    sink.sendall(chunk)
        except OSError:
            pass
        finally:
            # shutdown() first: the opposite pump is blocked in recv() on these sockets, and
            # a bare close() from this thread neither wakes it nor sends the FIN, so the
            # server kept every killed worker's connection open, until Dovecot's limit of 10
            # per user and address refused all logins ([LIMIT]) and the test hung.
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    end.close()

    def close(self) -> None:
        self._server.close()


def _kill_while_archiving(postroom: Postroom, database_url: str, tmp_path: Path,
                          capture: Callable[..., CaptureServer], count: int, sink: str,
                          secrets: dict[str, str] | None = None,
                          proxy: HoldingProxy | None = None,
                          server_log: Path | None = None) -> tuple[int, int]:
    """test_crash_safety.py's kill test with another sink (`sink`: its lines of [archive]):
    `postroom worker` processes (1 on SQLite, 2 on PostgreSQL) SIGKILLed at random moments
    and restarted, until the delivery is finished and no copy is pending. With a `proxy`, the
    first kill is of every worker while the proxy holds an APPEND's answer. Returns the
    delivery and the number of kills; every worker stopped cleanly at the end."""
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

    workers = 1 if database_url.startswith("sqlite") else 2
    relay = capture()  # the workers send the recipients' messages here
    unused = capture()  # the archive relay: a sink other than smtp never uses it
    delivery_id = started_delivery(postroom, tmp_path, count)
    config = write_config(tmp_path / "w.toml", database_url, relay, unused)
    config.write_text(config.read_text().replace("[archive]\n", f"[archive]\n{sink}"))

    def done() -> bool:
        if postroom.store.get_delivery(delivery_id).state is not DeliveryState.FINISHED:
            return False
        return postroom.store.archive_pending(delivery_id) == 0

    rng = random.Random(count + workers)
    logs = [tmp_path / f"w{i}.log" for i in range(workers)]
    shown = [*logs, server_log] if server_log is not None else logs
    procs = [start_worker(config, log, secrets) for log in logs]
    kills = 0
    try:
        if proxy is not None:
            proxy.armed.set()
            assert proxy.held.wait(120), "no APPEND went through the proxy"
            for index in range(workers):
                procs[index].send_signal(signal.SIGKILL)
                procs[index].wait(10)
                kills += 1
                procs[index] = start_worker(config, logs[index], secrets)
        while kills < (workers if proxy else 0) + 3 * workers and not done():
            time.sleep(rng.uniform(0.3, 2.0))
            index = rng.randrange(workers)
            procs[index].send_signal(signal.SIGKILL)
            procs[index].wait(10)
            kills += 1
            procs[index] = start_worker(config, logs[index], secrets)
        deadline = time.monotonic() + 600
        while not done():
            assert time.monotonic() < deadline, _stuck(postroom, delivery_id, procs, shown)
            # a worker runs until stopped: one that ended by itself is a failure, not a wait
            assert all(p.poll() is None for p in procs), _stuck(postroom, delivery_id, procs,
                                                                 shown)
            time.sleep(0.5)
    finally:
        codes = [stop_worker(p) for p in procs]
    assert codes == [0] * workers and kills >= 1
    assert unused.messages == []  # every copy went to the sink, none to a relay
    assert len(relay.messages) >= count
    return delivery_id, kills


def _stuck(postroom: Postroom, delivery_id: int, procs: list[Any], logs: list[Path]) -> str:
    """What a kill test that did not finish leaves to look at: the workers' exit codes, the
    delivery's state, its logs and copies by state, why the pending copies are not taken
    (claimed, not due yet, their last replies), and the end of each worker's log and of the
    archive server's, where there is one."""
    from sqlalchemy import and_, func, select

    from postroom.domain.models import ArchiveState
    from postroom.storage.schema import archive_outbox, delivery_logs

    lines = [f"the delivery did not finish: workers' exit codes {[p.poll() for p in procs]}, "
             f"delivery {postroom.store.get_delivery(delivery_id).state}"]
    with postroom.store.engine.connect() as conn:
        for table, column in ((delivery_logs, delivery_logs.c.status),
                              (archive_outbox, archive_outbox.c.state)):
            counts = conn.execute(select(column, func.count()).where(
                table.c.delivery_id == delivery_id).group_by(column)).all()
            lines.append(f"{table.name}: {dict((str(k), n) for k, n in counts)}")
        o, now = archive_outbox.c, postroom.clock()
        pending = and_(o.delivery_id == delivery_id, o.state == ArchiveState.PENDING)
        claimed = conn.scalar(select(func.count()).where(pending, o.claimed_until > now))
        later = conn.scalar(select(func.count()).where(pending, o.next_attempt_at > now))
        holders = conn.execute(select(o.claimed_by, func.count(), func.max(o.claimed_until))
                               .where(pending, o.claimed_by.is_not(None))
                               .group_by(o.claimed_by)).all()
        replies = conn.execute(select(o.reply, func.count()).where(pending).group_by(o.reply)
                               .order_by(func.count().desc()).limit(3)).all()
        lines += [f"pending copies at {now}: {claimed} claimed, {later} not due yet; "
                  f"holders {[tuple(h) for h in holders]}",
                  f"their last replies: {[tuple(r) for r in replies]}"]
    for log in logs:
        if not log.exists():
            continue
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        lines += [f"--- {log.name}", *tail]
    return "\n".join(lines)


def _copies_in_doubt(postroom: Postroom, delivery_id: int) -> set[int]:
    from sqlalchemy import select

    from postroom.storage.schema import archive_outbox

    o = archive_outbox.c
    with postroom.store.engine.connect() as conn:
        return set(conn.scalars(select(o.log_id).where(o.delivery_id == delivery_id,
                                                      o.in_doubt > 0)))


def _check_after_kills(postroom: Postroom, delivery_id: int, count: int,
                       check: VerifyReport) -> tuple[int, int]:
    """No copy lost, altered or unexpected; every duplicate is a copy in doubt, named by
    verify; one ledger entry per copy. Returns (copies in doubt, duplicates)."""
    report = postroom.reports.report(delivery_id)
    assert report.by_status.get(LogStatus.SENT, 0) == count
    assert (check.missing, check.altered, check.unexpected) == (0, 0, 0), check.items
    assert check.verified == count
    doubt = _copies_in_doubt(postroom, delivery_id)
    assert len(doubt) == report.doubt.archive
    named = {item["log"] for item in check.items.get("duplicated", [])}
    assert len(named) <= check.duplicated <= len(doubt)  # one extra copy per copy in doubt
    assert named <= doubt, (named - doubt, "a duplicate of a copy that was not in doubt")
    head = postroom.store.ledger_head()
    assert head.count == count and verify_ledger(postroom.store, None).ok
    [figures] = report.archive_sinks
    assert (figures.archived, figures.pending, figures.failed) == (count, 0, 0)
    assert figures.in_doubt == len(doubt)
    return len(doubt), check.duplicated


def test_directory_sink_workers_killed_while_archiving_lose_no_copy(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    """The kill test of test_crash_safety.py with the directory sink. Every sent log's copy is
    in the directory (verify: nothing missing, altered or unexpected), duplicates only among
    copies in doubt, one ledger entry per copy and a chain that verifies."""
    count = int(os.environ.get("POSTROOM_KILL_TEST_RECIPIENTS", "4000"))
    root = tmp_path / "vault"
    postroom = make_postroom(database_url, capture(),
                             archive_options={"sink": "directory", "directory": root})
    delivery_id, kills = _kill_while_archiving(
        postroom, database_url, tmp_path, capture, count,
        f'sink = "directory"\ndirectory = "{root}"\n')
    check = verify_archive(postroom.store, tree_copies(root, max_bytes=1 << 20),
                           Scope(delivery_id), now=postroom.clock())
    doubt, duplicated = _check_after_kills(postroom, delivery_id, count, check)
    assert postroom.reports.report(delivery_id).archive_sinks[0].sink == "directory"
    leftovers = list(root.rglob(".*.tmp"))
    print(f"\n{database_url.split(':')[0]}, directory sink, {count} recipients, {kills} "
          f"kills: archive copies in doubt {doubt}, duplicated files {duplicated}, "
          f"temporary files left by kills {len(leftovers)}")


def test_imap_sink_workers_killed_while_archiving_lose_no_copy(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path, imap_box: Dovecot,
) -> None:
    """The same kill test with the IMAP sink, APPENDing to a real Dovecot: a worker killed
    between the server's OK and the recording leaves the copy in doubt, and the copy is
    appended again: the folder then holds it twice, and verify names exactly those."""
    count = int(os.environ.get("POSTROOM_KILL_TEST_RECIPIENTS", "2000"))
    postroom = make_postroom(database_url, capture(), archive_options={
        "sink": "imap", "imap_url": imap_box.url(), "imap_password": imap_box.password})
    proxy = HoldingProxy(imap_box.port)  # the workers APPEND through it
    through = f"imap://{imap_box.user}@127.0.0.1:{proxy.port}/INBOX"
    try:
        delivery_id, kills = _kill_while_archiving(
            postroom, database_url, tmp_path, capture, count,
            f'sink = "imap"\nimap_url = "{through}"\n',
            {"POSTROOM_ARCHIVE__IMAP_PASSWORD": imap_box.password}, proxy, imap_box.log)
    finally:
        proxy.close()
    reader = imap_copies(parse_imap_url(imap_box.url()), imap_box.password, max_bytes=1 << 20)
    check = verify_archive(postroom.store, reader, Scope(delivery_id), now=postroom.clock())
    assert check.read == count + check.duplicated  # the folder holds nothing else
    doubt, duplicated = _check_after_kills(postroom, delivery_id, count, check)
    assert doubt >= 1 and duplicated >= 1  # the held APPEND: stored, unrecorded, sent again
    assert postroom.reports.report(delivery_id).archive_sinks[0].sink == "imap"
    print(f"\n{database_url.split(':')[0]}, IMAP sink, {count} recipients, {kills} kills: "
          f"archive copies in doubt {doubt}, appended twice {duplicated}")
