"""The archive hash ledger on real stores (SQLite and PostgreSQL) behind a real archive relay.

The ledger is filled by the production path (the archiver recording copies `archived`), and
tampered with by editing the tables directly, as an insider with database access would.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from postroom.app import Postroom
from postroom.archive.ledger_ops import verify_ledger
from postroom.archive.signing import Signer, new_private_key_hex
from postroom.domain.states import LogStatus
from postroom.storage.schema import archive_checkpoints, archive_ledger, archive_outbox
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import write_csv

SEED, PUBLIC = new_private_key_hex()


def _people(n: int) -> list[dict[str, str]]:
    return [{"email": f"person{i:04d}@example.net", "first_name": f"P{i}"} for i in range(n)]


def _delivery(postroom: Postroom, tmp_path: Path, n: int) -> int:
    postroom.recipients.import_recipients(write_csv(tmp_path / "people.csv", _people(n)))
    postroom.templates.create_template("t", {
        "subject": "Hello {{ recipient.first_name }}", "text": "Dear {{ recipient.first_name }}",
        "from_address": "news@postroom.example", "errors_to": "bounces@postroom.example",
        "email_bcc": True, "max_retries": 0})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).ok
    return delivery.id


def _ledger_options(**more: Any) -> dict[str, Any]:
    return {"ledger_key": SEED, "checkpoint_every": 10, **more}


def test_every_archived_copy_is_entered_once_and_the_chain_verifies(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    relay = capture(reject_ratio=0.2)
    archive = capture()
    postroom = make_postroom(database_url, relay, archive=archive,
                             archive_options=_ledger_options())
    delivery_id = _delivery(postroom, tmp_path, 60)
    asyncio.run(postroom.sending.send(delivery_id))

    sent = {log.id: log for log in postroom.store.list_logs(delivery_id, limit=1000)
            if log.status is LogStatus.SENT}
    assert 30 < len(sent) < 60  # some refused: they get no copy and no entry
    entries = list(postroom.store.ledger_entries())
    assert [e.seq for e in entries] == list(range(1, len(sent) + 1))
    assert {e.log for e in entries} == set(sent)
    for entry in entries:
        log = sent[entry.log]
        assert (entry.message_id, entry.sha256, entry.size) == (log.message_id, log.sha256,
                                                                log.size)
        assert entry.accepted_at == log.sent_at and entry.ack.startswith("250")
    # The archive got exactly the bytes the ledger hashes.
    assert sorted(hashlib.sha256(m.data).hexdigest() for m in archive.messages) == sorted(
        e.sha256 for e in entries)

    report = verify_ledger(postroom.store, PUBLIC)
    assert report.ok and report.count == len(sent)
    counts = [cp.count for cp in postroom.store.ledger_checkpoints()]
    assert report.checkpoints_verified == len(counts) >= 2
    # the first copy's, then one each time 10 more entries came (copies are entered by group)
    assert all(10 <= b - a < 10 + 25 for a, b in itertools.pairwise(counts[1:]))


def _fault(postroom: Postroom) -> int | None:
    report = verify_ledger(postroom.store, PUBLIC)
    assert not report.ok
    return None if report.fault is None else report.fault.seq


def test_ledger_verify_names_an_edited_deleted_or_swapped_entry(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    relay, archive = capture(), capture()
    postroom = make_postroom(database_url, relay, archive=archive,
                             archive_options=_ledger_options())
    asyncio.run(postroom.sending.send(_delivery(postroom, tmp_path, 20)))
    assert verify_ledger(postroom.store, PUBLIC).ok
    engine = postroom.store.engine
    c = archive_ledger.c
    with engine.connect() as conn:
        original = {r.seq: r._asdict() for r in conn.execute(select(archive_ledger))}
    assert len(original) == 20

    def restore() -> None:
        with engine.begin() as conn:
            conn.execute(delete(archive_ledger))
            conn.execute(archive_ledger.insert(), list(original.values()))
        assert verify_ledger(postroom.store, PUBLIC).ok

    with engine.begin() as conn:  # an edited hash
        conn.execute(update(archive_ledger).where(c.seq == 5).values(hash="0" * 63 + "1"))
    assert _fault(postroom) == 5
    restore()

    with engine.begin() as conn:  # an edited fact (the copy's hash), its entry hash kept
        conn.execute(update(archive_ledger).where(c.seq == 12).values(sha256="a" * 64))
    assert _fault(postroom) == 12
    restore()

    with engine.begin() as conn:  # a deleted entry
        conn.execute(delete(archive_ledger).where(c.seq == 7))
    assert _fault(postroom) == 8
    restore()

    with engine.begin() as conn:  # a swapped pair: their contents trade places
        row3, row4 = original[3], original[4]
        conn.execute(delete(archive_ledger).where(c.seq.in_([3, 4])))
        conn.execute(archive_ledger.insert(), [{**row4, "seq": 3}, {**row3, "seq": 4}])
    assert _fault(postroom) == 3
    restore()

    with engine.begin() as conn:  # the last entry deleted: the head and checkpoint disagree
        conn.execute(delete(archive_ledger).where(c.seq == 20))
    report = verify_ledger(postroom.store, PUBLIC)
    assert report.fault is None and report.head_problem is not None and not report.ok
    restore()

    with engine.begin() as conn:  # a forged checkpoint signature
        conn.execute(update(archive_checkpoints).values(signature="00" * 64))
    report = verify_ledger(postroom.store, PUBLIC)
    assert report.checkpoint_problems and not report.ok


def test_concurrent_archivers_append_one_chain(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    """Four archivers (each its own store connection pool, as separate workers have) drain
    one outbox at once: one chain, every copy exactly once, no gap, no fork."""
    relay = capture()
    archive = capture()
    archive.stop()  # down while the delivery is sent: every copy waits in the outbox
    sender = make_postroom(database_url, relay, archive=archive,
                           archive_options=_ledger_options(drain_seconds=0))
    delivery_id = _delivery(sender, tmp_path, 400)
    asyncio.run(sender.sending.send(delivery_id))
    assert sender.store.archive_pending(delivery_id) == 400
    archive.start()
    workers = [make_postroom(database_url, relay, archive=archive,
                             archive_options=_ledger_options(connections=2))
               for _ in range(4)]
    errors: list[BaseException] = []

    def flush(postroom: Postroom) -> None:
        try:
            asyncio.run(postroom.archive.flush(wait_seconds=10))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=flush, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    entries = list(sender.store.ledger_entries())
    assert [e.seq for e in entries] == list(range(1, 401))
    with sender.store.engine.connect() as conn:
        archived = set(conn.scalars(select(archive_outbox.c.log_id)
                                    .where(archive_outbox.c.state == "archived")))
    assert len(archived) == 400 and {e.log for e in entries} == archived
    report = verify_ledger(sender.store, PUBLIC)
    assert report.ok, (report.fault, report.head_problem, report.checkpoint_problems)
    # several archivers really took part
    assert len({m.peer for m in archive.messages}) >= 4


def test_checkpoint_on_demand_and_no_key_no_checkpoint(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay, archive = capture(), capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive)  # no ledger key
    asyncio.run(postroom.sending.send(_delivery(postroom, tmp_path, 5)))
    assert postroom.store.ledger_head().count == 5
    assert postroom.store.ledger_checkpoints() == []
    checkpoint = postroom.store.ledger_checkpoint(Signer(SEED), postroom.clock())
    assert (checkpoint.count, checkpoint.head) == (5, postroom.store.ledger_head().head)
    assert verify_ledger(postroom.store, PUBLIC).ok


def test_verify_a_directory_duplicates_proofs_other_deliveries_and_strangers(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    database_url: str, tmp_path: Path,
) -> None:
    from datetime import timedelta

    from postroom.archive.stores import tree_copies
    from postroom.archive.verify import Scope, verify_archive

    relay, archive = capture(reject_ratio=0.3), capture()
    postroom = make_postroom(database_url, relay, archive=archive)
    first = _delivery(postroom, tmp_path, 20)
    asyncio.run(postroom.sending.send(first))
    postroom.templates.create_template("u", {"subject": "Other", "text": "Other",
                                             "from_address": "news@postroom.example",
                                             "email_bcc": True})
    second, _ = postroom.deliveries.create_delivery("u")
    assert postroom.deliveries.analyze(second.id).ok
    asyncio.run(postroom.sending.send(second.id))
    store = tmp_path / "archive"
    for i, message in enumerate(archive.messages):
        day = store / "2026" / "01" / f"{i % 3 + 1:02d}"
        day.mkdir(parents=True, exist_ok=True)
        (day / f"{i}.eml").write_bytes(b"Received: from relay\r\n" + message.data)

    def report(scope: Scope) -> Any:
        return verify_archive(postroom.store, tree_copies(store, max_bytes=1 << 20), scope,
                              now=postroom.clock())

    sent_first = sum(1 for log in postroom.store.list_logs(first, limit=1000)
                     if log.status is LogStatus.SENT)
    whole = report(Scope())
    assert whole.ok and whole.expected == whole.verified == len(archive.messages)
    one = report(Scope(first))
    assert one.ok and one.expected == one.verified == sent_first
    assert one.out_of_scope == len(archive.messages) - sent_first
    # a sent-time range that holds nothing: every copy is out of scope, none expected
    later = report(Scope(since=postroom.clock() + timedelta(days=1)))
    assert later.ok and later.expected == 0 and later.out_of_scope == len(archive.messages)

    extra = store / "extra"
    extra.mkdir()
    first_copy = next(m.data for m in archive.messages  # a copy of the first delivery
                      if re.search(rb"Message-ID: <\d+\." + str(first).encode() + rb"\.",
                                   m.data))
    (extra / "dup.eml").write_bytes(first_copy)  # the same copy twice
    proof = re.sub(rb"Message-ID: <\d+\.", b"Message-ID: <proof.1.", first_copy, count=1)
    (extra / "proof.eml").write_bytes(proof)
    (extra / "stranger.eml").write_bytes(b"Message-ID: <x@elsewhere>\r\n\r\nhello\r\n")
    (extra / ".tmp-partial.eml").write_bytes(b"half written")  # a sink's temporary name
    result = report(Scope(first))
    assert (result.duplicated, result.unexpected, result.missing, result.altered) == (1, 2, 0, 0)
    reasons = sorted(item["reason"] for item in result.items["unexpected"])
    assert reasons == ["a message Postroom never sent", "a proof"]
