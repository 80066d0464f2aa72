"""Issue 14 figures: `archive verify` over a large Maildir, and the hash ledger's cost on sending.

    python bench/archive_proof.py verify [--copies 100000]
    python bench/archive_proof.py ledger [--recipients 5000] [--rounds 2]

`verify`: a SQLite database with one delivery whose N logs were sent and archived, and a Maildir
holding each copy the way Postfix stores it (trace block on top, LF line ends); the check runs
in a child process, which reports copies per second and its peak RSS.
`ledger`: the same delivery sent with Email BCC on to Postfix's smtp-sink on loopback (relay and
archive, bench/throughput.py's `Sink`), with `archive.ledger` on and off, alternating; wall time
of `send` (which drains the archive outbox before it returns). Prints JSON; writes nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(Path(__file__).resolve().parent)]

from sqlalchemy import insert  # noqa: E402
from throughput import Sink  # noqa: E402 - bench/throughput.py: smtp-sink on loopback

from postroom.archive.stores import tree_copies  # noqa: E402
from postroom.archive.verify import Scope, verify_archive  # noqa: E402
from postroom.settings import ArchiveSettings, SendingSettings, Settings, SmtpRelay  # noqa: E402
from postroom.storage.schema import archive_outbox, delivery_logs  # noqa: E402
from postroom.wiring import build  # noqa: E402

TRACE = (b"Return-Path: <archive-bounces@example.com>\nX-Original-To: vault@example.org\n"
         b"Delivered-To: vault@example.org\nReceived: from localhost (localhost [127.0.0.1])\n"
         b"\tby localhost (Postfix) with ESMTP id 4F1 for <vault@example.org>\n")


def _message(log_id: int, delivery_id: int, salt: str) -> bytes:
    body = (f"Dear reader {log_id},\r\n" + "Lorem ipsum dolor sit amet, consectetur. " * 40
            + "\r\n")
    return (f"Message-ID: <{log_id}.{delivery_id}.{salt}@news.example>\r\n"
            f"From: News <news@news.example>\r\nTo: <p{log_id}@example.net>\r\n"
            f"Subject: Issue {log_id}\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body).encode()


def prepare_verify(work: Path, copies: int) -> tuple[str, Path, int]:
    url = f"sqlite:///{work / 'bench.db'}"
    postroom = build(Settings(database_url=url))
    postroom.templates.create_template("t", {"subject": "s", "text": "t",
                                             "from_address": "news@news.example"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    now = datetime.now(UTC)
    maildir = work / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    with postroom.store.engine.begin() as conn:
        for start in range(1, copies + 1, 5000):
            logs, outbox = [], []
            for log_id in range(start, min(copies, start + 4999) + 1):
                data = _message(log_id, delivery.id, delivery.salt)
                sha = hashlib.sha256(data).hexdigest()
                logs.append({"id": log_id, "delivery_id": delivery.id,
                             "email": f"p{log_id}@example.net", "status": "sent",
                             "detail": "", "attempts": 1, "smtp_reply": "250 ok",
                             "message_id": f"<{log_id}.{delivery.id}.{delivery.salt}"
                                           "@news.example>",
                             "sent_at": now, "size": len(data), "sha256": sha,
                             "updated_at": now, "in_doubt": 0, "attempting": False})
                outbox.append({"log_id": log_id, "delivery_id": delivery.id,
                               "state": "archived", "attempts": 1, "next_attempt_at": now,
                               "sha256": sha, "reply": "250 ok", "created_at": now,
                               "archived_at": now, "in_doubt": 0})
                name = f"{1_700_000_000 + log_id}.M{log_id}P1.bench"
                (maildir / "new" / name).write_bytes(TRACE + data.replace(b"\r\n", b"\n"))
            conn.execute(insert(delivery_logs), logs)
            conn.execute(insert(archive_outbox), outbox)
    postroom.store.close()
    return url, maildir, delivery.id


def run_verify(url: str, maildir: Path, delivery_id: int) -> dict[str, Any]:
    postroom = build(Settings(database_url=url))
    started = time.perf_counter()
    report = verify_archive(postroom.store, tree_copies(maildir, max_bytes=1 << 26),
                            Scope(delivery_id), now=datetime.now(UTC))
    seconds = time.perf_counter() - started
    return {"copies": report.read, "verified": report.verified, "ok": report.ok,
            "seconds": round(seconds, 2), "copies_per_second": round(report.read / seconds),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def send_once(work: Path, recipients: int, ledger: bool, relay: Sink,
              archive: Sink) -> dict[str, Any]:
    url = f"sqlite:///{work / f'send-{secrets.token_hex(4)}.db'}"
    seed = "11" * 32
    settings = Settings(
        database_url=url, smtp=SmtpRelay(host="127.0.0.1", port=relay.port),
        sending=SendingSettings(connections=8),
        archive=ArchiveSettings(enabled=True, bcc_address=["vault@example.org"],
                                relay=SmtpRelay(host="127.0.0.1", port=archive.port),
                                ledger=ledger, ledger_key=seed, drain_seconds=600))
    postroom = build(settings)
    csv = work / "people.csv"
    csv.write_text("email,first_name\n" + "".join(f"p{i}@example.net,P{i}\n"
                                                  for i in range(recipients)))
    postroom.recipients.import_recipients(csv)
    postroom.templates.create_template("t", {"subject": "Hi {{ recipient.first_name }}",
                                             "text": "Dear {{ recipient.first_name }}\n"
                                             + "x" * 2000,
                                             "from_address": "news@news.example",
                                             "email_bcc": True})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).ok
    started = time.perf_counter()
    summary = asyncio.run(postroom.sending.send(delivery.id))
    seconds = time.perf_counter() - started
    entries = postroom.store.ledger_head().count
    postroom.store.close()
    return {"ledger": ledger, "sent": summary.sent,
            "archive_pending": postroom.store.archive_pending(delivery.id),
            "ledger_entries": entries, "seconds": round(seconds, 2),
            "messages_per_second": round(summary.sent / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["verify", "ledger", "verify-child"])
    parser.add_argument("--copies", type=int, default=100_000)
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--args", default="")
    options = parser.parse_args()
    if options.what == "verify-child":
        url, maildir, delivery = json.loads(options.args)
        print(json.dumps(run_verify(url, Path(maildir), delivery)))
        return
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        work = Path(tmp)
        if options.what == "verify":
            started = time.perf_counter()
            url, maildir, delivery = prepare_verify(work, options.copies)
            prepared = time.perf_counter() - started
            child = subprocess.run([sys.executable, __file__, "verify-child", "--args",
                                    json.dumps([url, str(maildir), delivery])],
                                   check=True, capture_output=True, text=True)
            result = json.loads(child.stdout)
            result["prepare_seconds"] = round(prepared, 1)
            print(json.dumps(result))
            return
        with Sink(work, "relay") as relay, Sink(work, "archive") as archive:
            for _ in range(options.rounds):  # the order alternates per round
                for ledger in ((True, False) if _ % 2 == 0 else (False, True)):
                    print(json.dumps(send_once(work, options.recipients, ledger, relay,
                                               archive)), flush=True)


if __name__ == "__main__":
    main()
