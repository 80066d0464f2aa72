"""`archive verify` end to end: Postfix delivers the Email BCC copies into a Maildir, Dovecot
serves it over IMAP, and the archive is tampered with the way it could be in real life."""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.app import Postroom
from postroom.archive.reconcile import fingerprint
from postroom.archive.stores import tree_copies
from postroom.archive.verify import Scope, VerifyReport, verify_archive
from postroom.domain.states import LogStatus
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import write_csv
from tests.integration.dovecot import Dovecot, dovecot_instance
from tests.integration.postfix import DOMAIN, Postfix, postfix_instance

ARCHIVE_USER = "pr-archive"


class _Relay:  # make_postroom wants something with a port
    def __init__(self, port: int):
        self.port = port


@pytest.fixture
def postfix(capture: Callable[..., CaptureServer]) -> Iterator[Postfix]:
    """The shared Postfix fixture, plus a system user (a fresh Maildir) for the archive."""
    remote = capture()
    yield from postfix_instance(remote.port, users=(ARCHIVE_USER,))


@pytest.fixture
def dovecot(postfix: Postfix) -> Iterator[Dovecot]:
    yield from dovecot_instance(ARCHIVE_USER)


def _cli_verify(tmp_path: Path, database: str, *args: str,
                password: str) -> tuple[int, dict[str, Any]]:
    config = tmp_path / "verify.toml"
    config.write_text(f'database_url = "{database}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_CONFIG=str(config), POSTROOM_ARCHIVE__IMAP_PASSWORD=password)
    result = subprocess.run([sys.executable, "-m", "postroom", "archive", "verify", *args,
                             "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert password not in result.stdout + result.stderr
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _copies(maildir: Path) -> dict[str, Path]:
    """Message-ID → file, over new/ and cur/ (Dovecot moves files between them)."""
    found: dict[str, Path] = {}
    for sub in ("new", "cur"):
        for path in (maildir / sub).iterdir():
            mid = fingerprint(path.read_bytes()).message_id
            assert mid is not None
            found[mid] = path
    return found


def _wait_for(maildir: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (maildir / "new").is_dir() and len(list((maildir / "new").iterdir())) >= count:
            return
        subprocess.run(["postqueue", "-f"], check=False, capture_output=True)
        time.sleep(0.3)
    raise AssertionError(f"fewer than {count} archive copies in {maildir} after {timeout} s")


def test_verify_through_imap_finds_the_missing_the_altered_and_the_unexpected(
    postfix: Postfix, dovecot: Dovecot, make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = _Relay(postfix.port)
    postroom = make_postroom(sqlite_url, relay, archive=relay,
                             archive_options={"bcc_address": [f"{ARCHIVE_USER}@{DOMAIN}"]})
    accepted = [f"alice+{i}@{DOMAIN}" for i in range(8)]
    refused = [f"ghost{i}@{DOMAIN}" for i in range(3)]  # 550 user unknown at RCPT
    rows = [{"email": e, "first_name": e.split("@")[0]} for e in accepted + refused]
    postroom.recipients.import_recipients(write_csv(tmp_path / "people.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hello {{ recipient.first_name }}",
                                             "text": "Hi {{ recipient.first_name }}\n",
                                             "html": "<p>Hi {{ recipient.first_name }}</p>",
                                             "from_address": f"news@{DOMAIN}",
                                             "errors_to": f"bounces@{DOMAIN}", "email_bcc": True,
                                             "max_retries": 0})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).ok
    asyncio.run(postroom.sending.send(delivery.id))
    logs = postroom.store.list_logs(delivery.id, limit=100)
    assert sorted(log.email for log in logs if log.status is LogStatus.SENT) == sorted(accepted)
    assert {log.email for log in logs if log.status is LogStatus.FAILED} == set(refused)
    maildir = postfix.maildir(ARCHIVE_USER)
    _wait_for(maildir, len(accepted))

    def imap() -> tuple[int, dict[str, Any]]:
        return _cli_verify(tmp_path, sqlite_url, "--delivery", str(delivery.id), "--imap",
                           dovecot.url(), password=dovecot.password)

    def maildir_report() -> VerifyReport:
        return verify_archive(postroom.store, tree_copies(maildir, max_bytes=1 << 24),
                              Scope(delivery.id), now=postroom.clock())

    code, report = imap()
    assert code == 0, report
    assert (report["expected"], report["verified"], report["missing"], report["altered"],
            report["unexpected"], report["duplicated"]) == (8, 8, 0, 0, 0, 0)
    assert report["lag_seconds"] is None and maildir_report().ok

    by_log = {log.message_id: log for log in logs}
    copies = _copies(maildir)
    [first, second] = sorted(copies)[:2]

    copies[first].unlink()  # one copy deleted from the mailbox
    code, report = imap()
    assert code == 1 and report["missing"] == 1 and report["altered"] == 0
    assert [m["log"] for m in report["items"]["missing"]] == [by_log[first].id]
    assert report["unexpected"] == 0 and report["verified"] == 7

    data = copies[second].read_bytes()  # one byte of another copy's body changed
    at = data.index(b"Hi alice") + 3
    copies[second].write_bytes(data[:at] + b"A" + data[at + 1:])
    code, report = imap()
    assert code == 1 and (report["missing"], report["altered"]) == (1, 1)
    assert [a["log"] for a in report["items"]["altered"]] == [by_log[second].id]
    assert maildir_report().altered == 1

    # A copy of a refused message appended to the folder (its Message-ID is a real log's).
    ghost = next(log for log in logs if log.status is LogStatus.FAILED)
    assert ghost.message_id is not None
    third = sorted(copies)[2]
    forged = copies[third].read_bytes().replace(third.encode(), ghost.message_id.encode())
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    client.login(dovecot.user, dovecot.password)
    client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), forged)
    client.logout()
    code, report = imap()
    assert code == 1 and (report["missing"], report["altered"], report["unexpected"]) == (1, 1, 1)
    [unexpected] = report["items"]["unexpected"]
    assert unexpected["message_id"] == ghost.message_id and "failed" in unexpected["reason"]
    assert report["verified"] == 6 and report["expected"] == 8
