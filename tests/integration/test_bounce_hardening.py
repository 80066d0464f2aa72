"""Bounce processing against an attacker and a careless sender (issue 12, findings 1 and 2).

Run on SQLite and PostgreSQL: forged reports built from a recipient's own message must change no
one else's address, and a poison message must fail alone without stopping the rest.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.app import Postroom
from postroom.bounces.parse import parse_bounce
from postroom.compose.tokens import verp_address
from postroom.domain.outcomes import FailureReason
from postroom.domain.states import LogStatus
from postroom.testing.smtp_server import CaptureServer, Script
from tests.conftest import write_csv

DOMAIN = "postroom.example"
ERRORS_TO = f"bounces@{DOMAIN}"
RECIPIENTS = [f"r{i}@example.org" for i in range(1, 8)]  # r1 is the attacker


def dsn(*, recipient: str | None, message_id: str, returned_to: str = "",
        status: str = "5.1.1") -> bytes:
    """A standard delivery-status report with no VERP token (sent to the bare errors-to)."""
    fields = (f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: {status}\n"
              f"Diagnostic-Code: smtp; 550 {status} User unknown\n" if recipient else
              f"Action: failed\nStatus: {status}\n")
    to = f"To: {returned_to}\n" if returned_to else ""
    return (f"From: MAILER-DAEMON@mx.example.org\nTo: {ERRORS_TO}\n"
            f"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
            f"--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
            f"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n"
            f"\n{fields}\n"
            f"--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {message_id}\n"
            f"From: news@{DOMAIN}\n{to}Subject: Hello\n\n--B--\n").encode()


def arf(*, message_id: str, rcpt_to: str | None = None) -> bytes:
    """A spam complaint; without Original-Rcpt-To and a returned To it names nobody."""
    named = f"Original-Rcpt-To: {rcpt_to}\n" if rcpt_to else ""
    return (f"From: abuse@isp.example\nTo: {ERRORS_TO}\nSubject: complaint\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=feedback-report; boundary=\"B\"\n\n"
            f"--B\nContent-Type: text/plain\n\nA complaint.\n\n"
            f"--B\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
            f"User-Agent: isp/1.0\nVersion: 1\n{named}\n"
            f"--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {message_id}\n"
            f"From: news@{DOMAIN}\nSubject: Hello\n\n--B--\n").encode()


def _send(postroom: Postroom, relay: CaptureServer, tmp_path: Path,
          emails: list[str]) -> dict[str, int]:
    """Send one delivery; returns each address's log id."""
    name = f"t{time.monotonic_ns()}"
    postroom.templates.create_template(name, {"subject": "Hello", "text": "Hi\n",
                                              "from_address": f"news@{DOMAIN}",
                                              "errors_to": ERRORS_TO})
    targets = write_csv(tmp_path / f"{name}.csv", [{"email": e} for e in emails])
    delivery, _ = postroom.deliveries.create_delivery(name, list_file=targets)
    assert asyncio.run(postroom.sending.send(delivery.id)).sent == len(emails)
    return {log.email: log.id for log in postroom.deliveries.logs(delivery.id)}


def _received_message_id(relay: CaptureServer, address: str) -> str:
    """The Message-ID a recipient reads in the message they got."""
    data = next(m.data for m in relay.messages if address in m.rcpt_tos)
    match = re.search(rb"^Message-ID: (<[^>]+>)", data, re.M | re.I)
    assert match is not None
    return match[1].decode()


def _forge(message_id: str, log_id: int) -> str:
    """The attacker's guess at another message's id: the log number changed."""
    return re.sub(r"^<\d+\.", f"<{log_id}.", message_id)


@pytest.fixture
def relay(capture: Callable[..., CaptureServer]) -> CaptureServer:
    return capture()


@pytest.fixture
def postroom(make_postroom: Callable[..., Postroom], relay: CaptureServer,
             database_url: str) -> Postroom:
    return make_postroom(database_url, relay, bcc=False)


def test_a_recipient_cannot_forge_reports_about_other_recipients(
    postroom: Postroom, relay: CaptureServer, tmp_path: Path,
) -> None:
    logs = _send(postroom, relay, tmp_path, RECIPIENTS)
    own = _received_message_id(relay, "r1@example.org")
    forged = [
        # DSNs naming the victim, with the victim's derived Message-ID.
        dsn(recipient="r5@example.org", message_id=_forge(own, logs["r5@example.org"])),
        dsn(recipient="r6@example.org", message_id=_forge(own, logs["r6@example.org"]),
            status="5.2.2"),
        # A complaint naming nobody, on the victim's derived Message-ID.
        arf(message_id=_forge(own, logs["r7@example.org"])),
        # The attacker's own Message-ID with a report about someone else, or about nobody
        # (a DSN naming no recipient reads the returned To).
        dsn(recipient="r4@example.org", message_id=own),
        dsn(recipient=None, message_id=own, returned_to="r3@example.org"),
        arf(message_id=own),
    ]
    for data in forged:  # through the SMTP receiver's store callback, no VERP envelope
        postroom.bounces.receive(data, ERRORS_TO)
    summary = postroom.bounces.process()
    assert summary.processed == len(forged) and summary.failures_applied == 0
    for email, log_id in logs.items():
        assert postroom.store.get_log(log_id).status is LogStatus.SENT, email
        assert postroom.store.get_address(email) is None, email
    # A report about the message's own recipient, on its genuine Message-ID, still applies.
    postroom.bounces.receive(dsn(recipient="r2@example.org",
                                 message_id=_received_message_id(relay, "r2@example.org")),
                             ERRORS_TO)
    assert postroom.bounces.process().failures_applied == 1
    r2 = postroom.store.get_log(logs["r2@example.org"])
    assert r2.status is LogStatus.FAILED and r2.failure_reason is FailureReason.USER_UNKNOWN


def test_an_old_form_message_id_is_kept_against_its_log_but_never_applied(
    postroom: Postroom, relay: CaptureServer, tmp_path: Path,
) -> None:
    """Messages sent before issue 12 carry `<log.delivery.salt@domain>`, which any recipient
    of the delivery can derive: a report on it is attributed (for a person) but changes
    nothing."""
    logs = _send(postroom, relay, tmp_path, ["old@example.org"])
    log_id = logs["old@example.org"]
    found = postroom.store.log_delivery_salt(log_id)
    assert found is not None
    delivery_id, salt = found
    postroom.bounces.receive(dsn(recipient="old@example.org",
                                 message_id=f"<{log_id}.{delivery_id}.{salt}@{DOMAIN}>"),
                             ERRORS_TO)
    summary = postroom.bounces.process()
    assert (summary.attributed, summary.failures_applied) == (1, 0)
    [bounce] = postroom.store.list_bounces()
    [result] = postroom.store.bounce_results_of(bounce.id)
    assert (result["log_id"], result["attributed_by"], result["applied"]) == (
        log_id, "message-id-old", False)
    assert postroom.store.get_log(log_id).status is LogStatus.SENT
    assert postroom.store.get_address("old@example.org") is None

def test_a_poison_message_id_fails_alone_and_the_rest_go_on(
    postroom: Postroom, relay: CaptureServer, tmp_path: Path,
) -> None:
    logs = _send(postroom, relay, tmp_path, ["ann@example.org"])
    secret = postroom.planner.links.secret
    huge = "12345678901234567890"  # 20 digits: past any database integer
    poison = [dsn(recipient="ann@example.org", message_id=f"<{huge}.1.0123456789abcdef@x>"),
              dsn(recipient="ann@example.org", message_id=f"<{'9' * 5000}.{huge}.x@x>"),
              arf(message_id=f"<{huge}.{huge}.AAAAAAAAAAAAAAAAAAAAAA@{DOMAIN}>")]
    for data in poison:
        postroom.bounces.receive(data, f"bounces+{huge}.AAAA@{DOMAIN}")
    good = dsn(recipient="ann@example.org", message_id="<unrelated@x>")
    postroom.bounces.receive(good, verp_address(secret, ERRORS_TO, logs["ann@example.org"]))
    summary = postroom.bounces.process()
    assert summary.processed == 4 and summary.failures_applied == 1
    assert postroom.store.bounce_counts().get("new", 0) == 0
    assert postroom.store.get_log(logs["ann@example.org"]).status is LogStatus.FAILED


def test_a_bounce_whose_processing_raises_is_marked_failed_and_the_rest_go_on(
    postroom: Postroom, relay: CaptureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug met on one message (injected here) shunts that message, with its reason."""
    import postroom.inbound.service as service

    logs = _send(postroom, relay, tmp_path, ["bea@example.org"])
    secret = postroom.planner.links.secret
    real = parse_bounce

    def buggy(data: bytes) -> object:
        if b"POISON" in data:
            raise ValueError("a parser bug met on this message")
        return real(data)

    monkeypatch.setattr(service, "parse_bounce", buggy)
    postroom.bounces.receive(b"Subject: POISON\n\nx\n", ERRORS_TO)
    postroom.bounces.receive(dsn(recipient="bea@example.org", message_id="<x@y>"),
                             verp_address(secret, ERRORS_TO, logs["bea@example.org"]))
    summary = postroom.bounces.process()
    assert (summary.processed, summary.failed, summary.failures_applied) == (1, 1, 1)
    [failed] = postroom.store.list_bounces(state="failed")
    assert "ValueError: a parser bug met on this message" in failed.detail
    assert postroom.bounces.process().processed == 0  # not retried first, forever
    assert postroom.store.get_log(logs["bea@example.org"]).status is LogStatus.FAILED
    monkeypatch.setattr(service, "parse_bounce", real)  # the bug fixed: try it again
    again = postroom.bounces.process(retry_failed=True)
    assert (again.processed, again.failed, again.unrecognized) == (1, 0, 1)
    assert postroom.store.list_bounces(state="failed") == []


def test_remote_text_is_printed_as_text_never_as_markup(
    capture: Callable[..., CaptureServer], tmp_path: Path,
) -> None:
    """SMTP replies and bounce diagnostics come from other parties: `[/]` in them once made
    `deliveries logs`, `quarantine list` and `rules unqualified` die with a MarkupError."""
    from tests.integration.test_cli import Cli

    replies = {"a@example.com": "550 5.1.1 [/] no such user [bold]here[/bold]",
               "b@example.com": "554 [/] frobnicated by [red]gremlin[/red] [link=x]"}
    script = Script()
    for address, reply in replies.items():
        script = script.on_rcpt(address, reply)
    cli = Cli(tmp_path, capture(script=script).port, bcc=None)
    cli.run("recipients", "import", str(cli.write("p.csv", "email\na@example.com\n"
                                                               "b@example.com\n")))
    cli.write("t.txt", "Hi\n")
    cli.run("templates", "create", str(cli.write("t.toml", 'name = "t"\nsubject = "S"\n'
                                                           'text_file = "t.txt"\n')))
    delivery = cli.json("deliveries", "create", "-t", "t")
    cli.run("deliveries", "send", str(delivery["id"]), ok=None)
    for command, shown in ((("deliveries", "logs", str(delivery["id"])), "[/] no such user"),
                           (("quarantine", "list"), "[bold]here[/bold]"),
                           (("rules", "unqualified"), "[red]gremlin[/red]")):
        result = cli.run(*command)
        assert "Traceback" not in result.stderr, command
        assert shown in " ".join(result.stdout.split()), (command, result.stdout)


def test_bounces_serve_goes_on_after_a_poison_message(
    capture: Callable[..., CaptureServer], tmp_path: Path,
) -> None:
    """The receiver processes what it stored; a poison message once made it exit."""
    import signal
    import smtplib
    import socket
    import subprocess
    import sys

    from tests.integration.test_cli import Cli

    cli = Cli(tmp_path, capture().port, bcc=None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "postroom", "bounces", "serve", "--port", str(port),
         "--every", "0.2"], env=cli.env, cwd=cli.dir, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert "receiving bounces" in server.stdout.readline()
        poison = dsn(recipient="ann@example.org",
                     message_id="<12345678901234567890.1.0123456789abcdef@x>")
        good = dsn(recipient="bob@example.org", message_id="<unrelated@x>")
        for data in (poison, good):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("", [ERRORS_TO], data)
            time.sleep(0.5)  # one processing round in between: the poison one goes first
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [b["state"] for b in cli.json("bounces", "list")]
            if len(states) == 2 and "new" not in states:
                break
            time.sleep(0.3)
        assert sorted(states) == ["unattributed", "unattributed"]
        assert server.poll() is None, server.communicate()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def test_file_maildir_and_mbox_intake_refuse_an_oversized_message_alone(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    sqlite_url: str, tmp_path: Path,
) -> None:
    import mailbox

    from postroom.inbound.sources import (
        MAX_MESSAGE_BYTES,
        from_files,
        from_maildir,
        from_mbox,
    )

    postroom = make_postroom(sqlite_url, capture(), bcc=False)
    small = [dsn(recipient=f"s{i}@example.org", message_id="<x@y>") for i in range(4)]
    big = b"Subject: big\n\n" + b"x" * MAX_MESSAGE_BYTES  # one byte over, headers included
    edge = b"Subject: edge\n\n" + b"y" * (MAX_MESSAGE_BYTES - 15)  # exactly the limit
    assert len(edge) == MAX_MESSAGE_BYTES

    files = [tmp_path / "a.eml", tmp_path / "big.eml", tmp_path / "edge.eml"]
    for path, data in zip(files, (small[0], big, edge), strict=True):
        path.write_bytes(data)
    summary = postroom.bounces.take(from_files([*files, tmp_path / "missing.eml"]))
    assert (summary.received, summary.stored, summary.refused) == (4, 2, 2)
    assert "big.eml" in summary.errors[0] and "over the 10,485,760-byte limit" in summary.errors[0]
    assert "missing.eml: cannot read the file" in summary.errors[1]

    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for data in (small[1], big):
        box.add(data)
    summary = postroom.bounces.take(from_maildir(tmp_path / "Maildir"))
    assert (summary.stored, summary.refused) == (1, 1)
    assert [box.get_bytes(key) for key in box.iterkeys()] == [big]  # left where it was

    mbox = mailbox.mbox(tmp_path / "in.mbox", create=True)
    for data in (small[2], big, small[3]):
        mbox.add(data)
    mbox.close()
    summary = postroom.bounces.take(from_mbox(tmp_path / "in.mbox"))
    assert (summary.received, summary.stored, summary.refused) == (3, 2, 1)
    assert "message 2" in summary.errors[0]
    stored = sorted(len(b.data) for b in postroom.store.list_bounces(limit=10))
    assert max(stored) == MAX_MESSAGE_BYTES and len(stored) == 5


class _Pop3:
    """A minimal POP3 server on loopback (USER, PASS, LIST, RETR, DELE, QUIT) over a fixed
    mailbox; it reports the true size of each message in LIST."""

    def __init__(self, messages: list[bytes]):
        import socketserver

        self.messages = messages
        self.deleted: set[int] = set()
        self.retrieved: list[int] = []
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"+OK ready\r\n")
                pending: set[int] = set()
                for raw in self.rfile:
                    command, _, argument = raw.decode().strip().partition(" ")
                    command = command.upper()
                    if command == "LIST":
                        self.wfile.write(b"+OK\r\n" + b"".join(
                            b"%d %d\r\n" % (i, len(m)) for i, m in enumerate(owner.messages, 1))
                            + b".\r\n")
                    elif command == "RETR":
                        owner.retrieved.append(int(argument))
                        body = owner.messages[int(argument) - 1].replace(b"\n", b"\r\n")
                        self.wfile.write(b"+OK\r\n" + body + b".\r\n")
                    elif command == "DELE":
                        pending.add(int(argument))
                        self.wfile.write(b"+OK\r\n")
                    elif command == "QUIT":
                        owner.deleted |= pending
                        self.wfile.write(b"+OK bye\r\n")
                        return
                    else:  # USER, PASS
                        self.wfile.write(b"+OK\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self) -> _Pop3:
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_pop3_intake_refuses_an_oversized_message_without_retrieving_it(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    sqlite_url: str,
) -> None:
    from postroom.inbound.sources import MAX_MESSAGE_BYTES, from_pop3

    postroom = make_postroom(sqlite_url, capture(), bcc=False)
    small = dsn(recipient="p@example.org", message_id="<x@y>")
    big = b"Subject: big\n\n" + b"x" * MAX_MESSAGE_BYTES
    with _Pop3([small, big, small.replace(b"p@", b"q@")]) as server:
        summary = postroom.bounces.take(from_pop3(f"pop3://u:pw@127.0.0.1:{server.port}"))
    assert (summary.received, summary.stored, summary.refused) == (3, 2, 1)
    assert "message 2" in summary.errors[0] and "over the 10,485,760-byte limit" in (
        summary.errors[0])
    assert "pw" not in summary.errors[0]  # the URL is printed without its password
    assert server.retrieved == [1, 3] and server.deleted == {1, 3}  # the big one stays
