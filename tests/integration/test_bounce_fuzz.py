"""Fuzzing bounce processing as an attacker would (issue 12, acceptance).

One recipient (r1) of a real delivery knows its own message: its Message-ID, its return path
(VERP), the other recipients' addresses and that log ids are consecutive. Hypothesis builds
DSNs, feedback reports, heuristic bounces and auto-replies from that knowledge, with hostile
numbers, transfer encodings, charsets and nesting, and hands them to the store and
`BounceService.process()` on SQLite and PostgreSQL. After every example:

- no exception escapes `process()`, and no bounce had to be set aside as failed;
- nothing forged is applied: the other recipients' logs stay `sent`, their addresses unknown;
- memory is bounded: `process()` allocates at most 64 MiB for these small messages.
"""

from __future__ import annotations

import asyncio
import base64
import quopri
import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.app import Postroom
from postroom.domain.states import LogStatus
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import write_csv

DOMAIN = "postroom.example"
ERRORS_TO = f"bounces@{DOMAIN}"
ATTACKER = "r1@example.org"
VICTIMS = ["r2@example.org", "r3@example.org", "r4@example.org"]
HUGE = ["12345678901234567890", "9" * 5000, "0" * 30 + "1", "2147483648", "-1", "١٢٣"]


class World:
    """What the attacker knows, and what must never change."""

    def __init__(self, postroom: Postroom, relay: CaptureServer, tmp_path: Path):
        postroom.templates.create_template("t", {"subject": "Hello", "text": "Hi\n",
                                                 "from_address": f"news@{DOMAIN}",
                                                 "errors_to": ERRORS_TO})
        targets = write_csv(tmp_path / "r.csv", [{"email": e} for e in [ATTACKER, *VICTIMS]])
        delivery, _ = postroom.deliveries.create_delivery("t", list_file=targets)
        assert asyncio.run(postroom.sending.send(delivery.id)).sent == 4
        self.postroom = postroom
        self.logs = {log.email: log.id for log in postroom.deliveries.logs(delivery.id)}
        own = next(m for m in relay.messages if ATTACKER in m.rcpt_tos)
        found = re.search(rb"^Message-ID: (<[^>]+>)", own.data, re.M | re.I)
        assert found is not None
        self.message_id = found[1].decode()
        self.return_path = own.mail_from
        salt = postroom.store.log_delivery_salt(self.logs[ATTACKER])
        assert salt is not None
        self.delivery_id, self.salt = salt

    def message_ids(self) -> list[str]:
        own, first = self.message_id, self.logs[ATTACKER]
        ids = [own]
        for victim in VICTIMS:
            log = self.logs[victim]
            ids += [own.replace(f"<{first}.", f"<{log}."),  # the log number changed
                    f"<{log}.{self.delivery_id}.{self.salt}@{DOMAIN}>",  # the old form
                    f"<{log}.{self.delivery_id}.{'0' * 16}@{DOMAIN}>"]
        ids += [f"<{n}.{self.delivery_id}.{self.salt}@{DOMAIN}>" for n in HUGE]
        ids += [own.replace(f"<{first}.", f"<{n}.") for n in HUGE]
        return ids

    def envelopes(self) -> list[str]:
        first = self.logs[ATTACKER]
        forged = [self.return_path.replace(f"+{first}.", f"+{self.logs[v]}.") for v in VICTIMS]
        return ["", ERRORS_TO, self.return_path, *forged,
                *(self.return_path.replace(f"+{first}.", f"+{n}.") for n in HUGE)]

    def check_nothing_forged_applied(self) -> None:
        for victim in VICTIMS:
            assert self.postroom.store.get_log(self.logs[victim]).status is LogStatus.SENT
            assert self.postroom.store.get_address(victim) is None, victim


named = st.one_of(st.sampled_from([ATTACKER, *VICTIMS, "R2@EXAMPLE.ORG", "<r3@example.org>",
                                   "r2@example.org.evil", "\"r4\"@example.org"]), st.none())
status = st.one_of(st.sampled_from(["5.1.1", "4.2.2", "5.7.1", "2.0.0", "5.0.0"]),
                   st.sampled_from(HUGE).map(lambda n: f"5.{n}.1"))
action = st.sampled_from(["failed", "delayed", "delivered", "", "FAILED", "x" * 300])
charset = st.sampled_from(["utf-8", "iso-8859-1", "x-unknown", "utf-7", "", "\"", "utf-16"])
encoding = st.sampled_from(["7bit", "base64", "quoted-printable", "8bit", "x-bad"])


def _encode(body: bytes, how: str) -> bytes:
    if how == "base64":
        return base64.encodebytes(body)
    if how == "quoted-printable":
        return quopri.encodestring(body)
    return body


@st.composite
def report(draw: st.DrawFn, world: World) -> bytes:
    """One report part (headers and body), of a kind an attacker would send."""
    kind = draw(st.sampled_from(["dsn", "arf", "heuristic", "autoreply"]))
    recipient = draw(named)
    how = draw(encoding)
    if kind == "dsn":
        fields = (f"Final-Recipient: rfc822; {recipient}\n" if recipient else "")
        fields += (f"Action: {draw(action)}\nStatus: {draw(status)}\n"
                   f"Diagnostic-Code: smtp; 550 {draw(status)} user unknown\n")
        body, ctype = (f"Reporting-MTA: dns; mx\n\n{fields}").encode(), "message/delivery-status"
    elif kind == "arf":
        rcpt = f"Original-Rcpt-To: {recipient}\n" if recipient else ""
        body = f"Feedback-Type: abuse\nVersion: 1\n{rcpt}".encode()
        ctype = "message/feedback-report"
    else:
        words = ("Delivery failed permanently: user unknown" if kind == "heuristic"
                 else "I am on vacation until Monday")
        body = f"{words}\n{recipient or ''}\n".encode(draw(st.sampled_from(["utf-8", "utf-16"])))
        ctype = f"text/plain; charset={draw(charset)}"
    returned = draw(st.sampled_from(world.message_ids()))
    original = (f"Message-ID: {returned}\nFrom: news@{DOMAIN}\n"
                + (f"To: {draw(named)}\n" if draw(st.booleans()) else "") + "Subject: Hello\n")
    parts = [f"Content-Type: {ctype}\nContent-Transfer-Encoding: {how}\n\n".encode()
             + _encode(body, how),
             f"Content-Type: {draw(st.sampled_from(['text/rfc822-headers', 'message/rfc822']))}"
             f"\n\n{original}\n".encode()]
    return (b"Content-Type: multipart/report; report-type="
            + (b"feedback-report" if kind == "arf" else b"delivery-status")
            + b"; boundary=\"R\"\n\n" + b"".join(b"--R\n" + p for p in parts) + b"--R--\n")


@st.composite
def bounce(draw: st.DrawFn, world: World) -> tuple[bytes, str]:
    """A whole message: the report, nested in multiparts or returned messages, and where it
    was delivered (the envelope recipient)."""
    data = draw(report(world))
    for level in range(draw(st.one_of(st.integers(0, 8), st.just(150)))):
        if draw(st.booleans()):
            data = (f"Content-Type: multipart/mixed; boundary=\"N{level}\"\n\n--N{level}\n"
                    .encode() + data + f"\n--N{level}--\n".encode())
        else:
            data = b"Content-Type: message/rfc822\n\n" + data
    subject = draw(st.sampled_from(["Undelivered Mail Returned to Sender", "Out of office",
                                    "=?utf-8?b?////?=", "Abuse report"]))
    auto = "Auto-Submitted: auto-replied\n" if draw(st.booleans()) else ""
    head = (f"From: {draw(st.sampled_from(['MAILER-DAEMON@mx.example.org', ATTACKER]))}\n"
            f"To: {draw(st.sampled_from(world.envelopes()))}\nSubject: {subject}\n{auto}"
            f"Message-ID: <{time.monotonic_ns()}@fuzz>\nMIME-Version: 1.0\n")
    return head.encode() + data, draw(st.sampled_from(world.envelopes()))


@pytest.fixture
def world(make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
          database_url: str, tmp_path: Path) -> World:
    relay = capture()
    return World(make_postroom(database_url, relay, bcc=False), relay, tmp_path)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_forged_and_hostile_bounces_apply_nothing_and_raise_nothing(
    world: World, data: st.DataObject,
) -> None:
    postroom = world.postroom
    for message, envelope in data.draw(st.lists(bounce(world), min_size=1, max_size=3)):
        postroom.bounces.receive(message, envelope)
    tracemalloc.start()
    try:
        summary = postroom.bounces.process()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.failed == 0, summary.errors
    assert peak < 64 * 1024 * 1024, f"process() allocated {peak:,} bytes at its peak"
    world.check_nothing_forged_applied()
