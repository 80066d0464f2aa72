"""PipelinedConnection against SmtpConnection (aiosmtplib): the same outcomes, the same bytes.

Each scenario runs four ways, each against its own fresh CaptureServer with the same script:
aiosmtplib's `SmtpConnection.send`, `PipelinedConnection.send` and `.send_batch` (lock-step:
aiosmtpd does not advertise PIPELINING), and `.send_batch` against an aiosmtpd made to advertise
PIPELINING (it reads pipelined commands correctly), so that the pipelined path meets the same
scripted refusals, drops and delays. Outcomes must be equal (verdict, reply code and text,
type, in doubt; the words of a connection fault name each client's own exception), and so must
what the server recorded and over which connections. Postfix's smtp-sink checks the pipelined
path against a real pipelining server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from postroom.domain.outcomes import Outcome, SmtpReply, Verdict
from postroom.settings import SmtpRelay, TlsMode
from postroom.testing import smtp_server
from postroom.testing.smtp_server import CaptureServer, Drop, Script, Sleep
from postroom.transport.pipelined import PipelinedConnection, ReplyParser, _quote, data_payload
from postroom.transport.smtp import SmtpConnection

SENDER = "sender@postroom.test"
OTHER_SENDER = "other@postroom.test"
MESSAGE = b"From: sender@postroom.test\r\nTo: someone@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
Send = tuple[str, str, bytes, bool]
MODES = ("aiosmtplib", "send", "batch", "pipelined")


def msg(number: int, data: bytes = MESSAGE, *, sender: str = SENDER,
        smtputf8: bool = False, rcpt: str | None = None) -> Send:
    return (sender, rcpt or f"rcpt{number}@example.com", data, smtputf8)


class _PipeliningHandler(smtp_server._Handler):
    """CaptureServer's handler, with PIPELINING in the EHLO reply (aiosmtpd reads pipelined
    commands correctly but does not say so); `auth` replaces the AUTH line's mechanisms."""

    auth: str | None = None

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if self.auth is not None:
            responses = [f"250-AUTH {self.auth}" if line.startswith("250-AUTH ") else line
                         for line in responses]
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


def start_server(*, pipelining: bool = False, auth: str | None = None,
                 **kwargs: Any) -> CaptureServer:
    server = CaptureServer(**kwargs)
    if not pipelining:
        server.start()
        return server
    handler = type("Handler", (_PipeliningHandler,), {"auth": auth})
    with pytest.MonkeyPatch.context() as patch:  # CaptureServer builds its handler in start()
        patch.setattr(smtp_server, "_Handler", handler)
        server.start()
    return server


def connection(mode: str, relay: SmtpRelay, limit: int = 1000,
               ) -> SmtpConnection | PipelinedConnection:
    kind = SmtpConnection if mode == "aiosmtplib" else PipelinedConnection
    return kind(relay, helo_name="localhost", messages_per_connection=limit)


async def send_all(mode: str, relay: SmtpRelay, sends: list[Send],
                   limit: int = 1000) -> list[Outcome]:
    client = connection(mode, relay, limit)
    try:
        if isinstance(client, PipelinedConnection) and mode in ("batch", "pipelined"):
            return await client.send_batch(sends)
        return [await client.send(s, r, d, smtputf8=u) for s, r, d, u in sends]
    finally:
        await client.close()


_REPLY_LESS = ("the relay refused the sender", "relay refused the session",
               "authentication failed", "the address has a non-ASCII")


def comparable(outcome: Outcome) -> Outcome:
    """The outcome, with a connection fault's words (each client names its own exception)
    reduced to "connection fault"."""
    if outcome.reply is None and not outcome.detail.startswith(_REPLY_LESS):
        return replace(outcome, detail="connection fault")
    return outcome


def short(outcome: Outcome) -> str:
    return "doubt" if outcome.in_doubt else outcome.verdict.value


@dataclass(frozen=True)
class Result:
    outcomes: list[Outcome]
    received: list[tuple[str, tuple[str, ...], bytes]]
    connections: list[int]  # per accepted message, the number of its connection (0, 1, ...)


def result(outcomes: list[Outcome], server: CaptureServer) -> Result:
    peers: dict[str, int] = {}
    messages = sorted(server.messages, key=lambda m: m.received_at)
    return Result([comparable(o) for o in outcomes],
                  [(m.mail_from, m.rcpt_tos, m.data) for m in messages],
                  [peers.setdefault(m.peer, len(peers)) for m in messages])


@dataclass(frozen=True)
class Scenario:
    name: str
    expect: tuple[str, ...]  # per message: sent, deferred, failed, or doubt (deferred, in doubt)
    sends: tuple[Send, ...] = (msg(0), msg(1), msg(2))
    script: Callable[[Script], object] = lambda script: script
    timeout: float = 5.0
    limit: int = 1000
    server: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario("accept", ("sent", "sent", "sent")),
    Scenario("dots, bare CR and LF, no final CRLF", ("sent",) * 4, sends=(
        msg(0, b".leading dot\r\n..two\r\n.\r\nno final newline"),
        msg(1, b"Subject: x\n\nbare LF\rand CR\r\r\n.\n"),
        msg(2, b""), msg(3, b".")),
    ),
    Scenario("a 2 MB message: more than the write buffer", ("sent", "sent"),
             sends=(msg(0, (b"x" * 998 + b"\r\n.dot\r\n") * 2000), msg(1))),
    Scenario("MAIL 451", ("sent", "deferred", "sent"),
             sends=(msg(0), msg(1, sender=OTHER_SENDER), msg(2)),
             script=lambda s: s.on_mail("451 4.3.0 sender later", sender=OTHER_SENDER)),
    Scenario("MAIL 553", ("sent", "deferred", "sent"),
             sends=(msg(0), msg(1, sender=OTHER_SENDER), msg(2)),
             script=lambda s: s.on_mail("553 5.7.1 sender blocked", sender=OTHER_SENDER)),
    Scenario("RCPT 550", ("sent", "failed", "sent"),
             script=lambda s: s.on_rcpt("rcpt1@example.com", "550 5.1.1 <rcpt1@example.com>: "
                                        "Recipient address rejected: User unknown")),
    Scenario("RCPT 452", ("sent", "deferred", "sent"),
             script=lambda s: s.on_rcpt("rcpt1@example.com", "452 4.2.2 mailbox full")),
    Scenario("RCPT multi-line 550", ("failed", "sent"), sends=(msg(0), msg(1)),
             script=lambda s: s.on_rcpt("rcpt0@example.com",
                                        "550-5.7.1 the first line\r\n550 5.7.1 and the last")),
    Scenario("end of data 554", ("sent", "failed", "sent"),
             script=lambda s: s.on_data("rcpt1@example.com", "554 5.7.1 looks like spam")),
    Scenario("end of data 451", ("sent", "deferred", "sent"),
             script=lambda s: s.on_data("rcpt1@example.com", "451 4.7.1 greylisted")),
    Scenario("421 at MAIL", ("sent", "deferred", "sent"),
             sends=(msg(0), msg(1, sender=OTHER_SENDER), msg(2)),
             script=lambda s: s.on_mail("421 4.3.2 shutting down", sender=OTHER_SENDER)),
    Scenario("421 at RCPT", ("sent", "deferred", "sent"),
             script=lambda s: s.on_rcpt("rcpt1@example.com", "421 4.3.2 shutting down")),
    Scenario("421 at end of data", ("sent", "deferred", "sent"),
             script=lambda s: s.on_data("rcpt1@example.com", "421 4.3.2 shutting down")),
    Scenario("drop at MAIL", ("sent", "deferred", "sent"),
             sends=(msg(0), msg(1, sender=OTHER_SENDER), msg(2)),
             script=lambda s: s.on_mail(Drop(), sender=OTHER_SENDER)),
    Scenario("drop at RCPT", ("sent", "deferred", "sent"),
             script=lambda s: s.on_rcpt("rcpt1@example.com", Drop())),
    Scenario("drop before the reply to the message", ("sent", "doubt", "sent"),
             script=lambda s: s.on_data("rcpt1@example.com", Drop())),
    Scenario("drop after accepting the message", ("sent", "doubt", "sent"),
             script=lambda s: s.on_data("rcpt1@example.com", Drop(after_accepting=True))),
    Scenario("timeout at RCPT", ("sent", "deferred", "sent"), timeout=0.5,
             script=lambda s: s.on_rcpt("rcpt1@example.com", Sleep(3))),
    Scenario("timeout after the message", ("sent", "doubt", "sent"), timeout=0.5,
             script=lambda s: s.on_data("rcpt1@example.com", Sleep(3))),
    Scenario("slow but in time", ("sent", "sent"), sends=(msg(0), msg(1)), timeout=2,
             script=lambda s: s.on_rcpt("rcpt0@example.com", Sleep(0.2, "251 2.1.5 later"))),
    Scenario("SMTPUTF8 offered", ("sent", "sent"), sends=(
        msg(0, "Subject: café\r\n\r\nü\r\n".encode(), sender="sënder@postroom.test",
            rcpt="jürgen@exämple.com", smtputf8=True), msg(1))),
    Scenario("SMTPUTF8 not offered", ("failed", "sent"), server={"smtputf8": False}, sends=(
        msg(0, sender="sënder@postroom.test", rcpt="jürgen@exämple.com", smtputf8=True),
        msg(1))),
    Scenario("renewal after 2", ("sent",) * 5, limit=2,
             sends=tuple(msg(n) for n in range(5))),
    Scenario("renewal counts accepted messages", ("sent", "failed", "sent", "sent"), limit=2,
             sends=tuple(msg(n) for n in range(4)),
             script=lambda s: s.on_rcpt("rcpt1@example.com", "550 5.1.1 unknown")),
]


def run(scenario: Scenario, mode: str) -> Result:
    script = Script()
    scenario.script(script)
    server = start_server(pipelining=mode == "pipelined", script=script, **scenario.server)
    try:
        relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=scenario.timeout)
        outcomes = asyncio.run(send_all(mode, relay, list(scenario.sends), scenario.limit))
        return result(outcomes, server)
    finally:
        server.stop()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_same_outcomes_and_bytes_as_aiosmtplib(scenario: Scenario) -> None:
    reference = run(scenario, "aiosmtplib")
    assert [short(o) for o in reference.outcomes] == list(scenario.expect)
    for mode in MODES[1:]:
        assert run(scenario, mode) == reference, mode


def test_what_the_reference_reports() -> None:
    """A few texts spelled out, so that "equal to aiosmtplib" cannot mean "equally wrong"."""
    by_name = {s.name: s for s in SCENARIOS}
    outcomes = run(by_name["RCPT multi-line 550"], "pipelined").outcomes
    assert outcomes[0].reply == SmtpReply(550, "5.7.1 the first line\n5.7.1 and the last")
    assert outcomes[0].reply.enhanced == "5.7.1"
    outcomes = run(by_name["MAIL 553"], "pipelined").outcomes
    assert outcomes[1].reply is None
    assert outcomes[1].detail == "the relay refused the sender: 553 5.7.1 sender blocked"
    assert outcomes[1].verdict is Verdict.DEFERRED
    received = run(by_name["dots, bare CR and LF, no final CRLF"], "pipelined").received
    assert [data for _, _, data in received] == [
        b".leading dot\r\n..two\r\n.\r\nno final newline\r\n",
        b"Subject: x\r\n\r\nbare LF\r\nand CR\r\n\r\n.\r\n", b"\r\n", b".\r\n"]
    server = start_server(pipelining=True,
                          script=Script().on_data(lambda _: True, Drop(after_accepting=True)))
    try:
        relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=5)
        [outcome] = asyncio.run(send_all("pipelined", relay, [msg(0)]))
    finally:
        server.stop()
    assert outcome.in_doubt and outcome.verdict is Verdict.DEFERRED
    assert outcome.detail == "ConnectionResetError during DATA: the relay closed the connection"


def test_pipelining_is_used_when_offered() -> None:
    server = start_server(pipelining=True)

    async def go() -> tuple[bool | None, bool | None]:
        relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=5)
        plain = CaptureServer()
        plain.start()
        try:
            piped = PipelinedConnection(relay, helo_name="localhost")
            lockstep = PipelinedConnection(replace_port(relay, plain.port), helo_name="localhost")
            await piped.send_batch([msg(0), msg(1)])
            await lockstep.send_batch([msg(0)])
            seen = piped.pipelining, lockstep.pipelining
            await piped.close()
            await lockstep.close()
            assert piped.pipelining is None
            return seen
        finally:
            plain.stop()

    try:
        assert asyncio.run(go()) == (True, False)
    finally:
        server.stop()


def replace_port(relay: SmtpRelay, port: int) -> SmtpRelay:
    return relay.model_copy(update={"port": port})


# -- sessions that fail before any message ------------------------------------------------------

_TINY_DEFAULTS = {"EHLO": "250-tiny\r\n250 8BITMIME", "MAIL": "250 2.1.0 ok",
                  "RCPT": "250 2.1.5 ok", "DATA": "354 go ahead", "RSET": "250 ok",
                  "QUIT": "221 bye", "NOOP": "250 ok"}


@asynccontextmanager
async def tiny_server(greeting: str = "220 tiny ESMTP", *, tls: ssl.SSLContext | None = None,
                      replies: dict[str, str] | None = None, read_messages: bool = True,
                      ) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A minimal SMTP server in the test's own loop, for what CaptureServer cannot script
    (the greeting, EHLO, implicit TLS, a malformed reply, a relay that stops reading); yields
    its port and the messages."""
    received: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(greeting.encode() + b"\r\n")
            while not greeting.startswith("5") and (line := await reader.readline()):
                verb = line[:4].decode("ascii", "replace").upper()
                reply = {**_TINY_DEFAULTS, **(replies or {})}.get(verb, "500 unknown command")
                if not reply:  # "": drop the connection without a reply
                    break
                writer.write(reply.encode() + b"\r\n")
                if verb == "DATA" and reply.startswith("354"):
                    if not read_messages:
                        await asyncio.sleep(30)
                    received.append(await reader.readuntil(b"\r\n.\r\n"))
                    writer.write(b"250 2.0.0 queued\r\n")
                if verb == "QUIT":
                    break
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


async def both(port: int, **relay: Any) -> list[Outcome]:
    """One message through SmtpConnection, then through PipelinedConnection."""
    settings_ = SmtpRelay.model_validate({"host": "127.0.0.1", "port": port,
                                         "timeout_seconds": 2, **relay})
    return [(await send_all(mode, settings_, [msg(0)]))[0] for mode in ("aiosmtplib", "send")]


STARTTLS_OFFERED = {"EHLO": "250-tiny\r\n250 STARTTLS"}


@pytest.mark.parametrize(("greeting", "replies", "tls", "detail"), [
    ("554 5.3.2 not now", {}, "none", "relay refused the session: 554 5.3.2 not now"),
    ("421 4.3.2 busy", {}, "none", "relay refused the session: 421 4.3.2 busy"),
    ("220 tiny", {"EHLO": "550 5.7.1 go away"}, "none",
     "relay refused the session: 550 5.7.1 go away"),
    ("220 tiny", {**STARTTLS_OFFERED, "STAR": "454 4.7.0 TLS not available"}, "starttls",
     "relay refused the session: 454 4.7.0 TLS not available"),
    ("220 tiny", {}, "starttls", None),  # STARTTLS not offered: each client says it its way
])
def test_refused_session(greeting: str, replies: dict[str, str], tls: str,
                         detail: str | None) -> None:
    async def go() -> list[Outcome]:
        async with tiny_server(greeting, replies=replies) as (port, received):
            outcomes = await both(port, tls=tls)
            assert received == []
            return outcomes

    reference, ours = asyncio.run(go())
    assert comparable(ours) == comparable(reference)
    assert ours.verdict is Verdict.DEFERRED and not ours.in_doubt
    if detail is not None:
        assert ours == reference and ours.detail == detail


def test_nothing_listening() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    reference, ours = asyncio.run(both(port))
    assert comparable(ours) == comparable(reference)
    assert ours.verdict is Verdict.DEFERRED and ours.detail.startswith("ConnectionRefusedError")


def test_a_failed_connect_fails_the_rest_of_the_batch_without_another_attempt() -> None:
    with socket.socket() as silent:  # the kernel accepts connections; nobody greets them
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.setblocking(False)
        relay = SmtpRelay(host="127.0.0.1", port=silent.getsockname()[1], timeout_seconds=0.3)
        outcomes = asyncio.run(send_all("batch", relay, [msg(0), msg(1), msg(2)]))
        attempts = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                silent.accept()[0].close()
                attempts += 1
    assert attempts == 1
    assert outcomes == [outcomes[0]] * 3
    assert outcomes[0].verdict is Verdict.DEFERRED and not outcomes[0].in_doubt
    assert outcomes[0].detail == "TimeoutError: no reply from the relay within 0.3 s"


def test_cancelling_a_batch_drops_the_connection() -> None:
    script = Script().on_data("rcpt1@example.com", Sleep(3), times=1)
    server = start_server(pipelining=True, script=script)
    relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=5)

    async def go() -> Outcome:
        client = PipelinedConnection(relay, helo_name="localhost")
        task = asyncio.create_task(client.send_batch([msg(0), msg(1), msg(2)]))
        while not server.messages:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.pipelining is None
        outcome = await client.send(*msg(3)[:3])
        await client.close()
        return outcome

    try:
        assert asyncio.run(go()).verdict is Verdict.SENT
        assert result([], server).connections == [0, 1]
    finally:
        server.stop()


def test_close_during_a_batch_ends_it_without_reconnecting() -> None:
    script = Script().on_data("rcpt1@example.com", Sleep(3), times=1)
    server = start_server(pipelining=True, script=script)
    relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=5)

    async def go() -> list[Outcome]:
        client = PipelinedConnection(relay, helo_name="localhost")
        task = asyncio.create_task(client.send_batch([msg(0), msg(1), msg(2)]))
        while not server.messages:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # message 1 is with the relay, awaiting its reply
        await client.close()
        return await task

    try:
        outcomes = asyncio.run(go())
    finally:
        server.stop()
    assert [short(o) for o in outcomes] == ["sent", "doubt", "deferred"]
    assert outcomes[2].detail == "ConnectionAbortedError: closed during the send"
    assert len(server.messages) == 1


def test_a_malformed_reply_is_a_connection_fault() -> None:
    """Different from aiosmtplib on purpose: it reports code -1, a hard failure."""
    async def go() -> Outcome:
        async with tiny_server(replies={"RCPT": "hello, I am not SMTP"}) as (port, _):
            relay = SmtpRelay(host="127.0.0.1", port=port, timeout_seconds=2)
            return (await send_all("send", relay, [msg(0)]))[0]

    outcome = asyncio.run(go())
    assert outcome.verdict is Verdict.DEFERRED and outcome.reply is None
    assert "malformed reply line" in outcome.detail


def test_a_drop_before_the_message_is_not_in_doubt() -> None:
    """Different from aiosmtplib on purpose: it cannot tell a drop awaiting the 354 from one
    awaiting the reply to the message, and counts both "in doubt"."""
    async def go() -> list[Outcome]:
        async with tiny_server(replies={"DATA": ""}) as (port, _):
            return await both(port)

    reference, ours = asyncio.run(go())
    assert reference.in_doubt and reference.verdict is Verdict.DEFERRED
    assert not ours.in_doubt and ours.verdict is Verdict.DEFERRED
    assert ours.detail == "ConnectionResetError: the relay closed the connection"


def test_a_relay_that_stops_reading_the_message_times_out() -> None:
    """Writes wait for room in the buffer; the timeout runs while the relay reads nothing."""
    big = b"x" * 998 + b"\r\n"
    big *= 16 * 1024 * 1024 // len(big)  # more than loopback's socket buffers

    async def go() -> list[Outcome]:
        async with tiny_server(read_messages=False) as (port, _):
            relay = SmtpRelay(host="127.0.0.1", port=port, timeout_seconds=0.5)
            return [(await send_all(mode, relay, [msg(0, big)]))[0]
                    for mode in ("aiosmtplib", "send")]

    reference, ours = asyncio.run(go())
    assert comparable(ours) == comparable(reference)
    assert ours.in_doubt and ours.detail == "TimeoutError during DATA: the relay read nothing " \
        "for 0.5 s"


# -- TLS and AUTH -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.mark.parametrize(("password", "auth", "trusted", "expect"), [
    ("correct horse", None, True, "sent"),
    ("correct horse", "LOGIN", True, "sent"),
    ("wrong", None, True, "deferred"),
    ("wrong", "LOGIN", True, "deferred"),
    ("correct horse", None, False, "deferred"),
])
def test_starttls_and_auth(ca: trustme.CA, ca_file: Path, password: str, auth: str | None,
                           trusted: bool, expect: str) -> None:
    relay = SmtpRelay.model_validate({
        "host": "127.0.0.1", "port": 1, "tls": TlsMode.STARTTLS,
        "ca_file": ca_file if trusted else None, "username": "mailer",
        "password": SecretStr(password), "timeout_seconds": 5})
    results = []
    for mode in MODES:
        server = start_server(pipelining=mode == "pipelined" or auth is not None, auth=auth,
                              tls_context=server_tls(ca),
                              credentials=("mailer", "correct horse"))
        try:
            outcomes = asyncio.run(send_all(mode, replace_port(relay, server.port),
                                            [msg(0), msg(1)]))
            results.append(result(outcomes, server))
        finally:
            server.stop()
    assert [short(o) for o in results[0].outcomes] == [expect] * 2
    assert all(r == results[0] for r in results[1:])
    for outcome in results[1].outcomes:
        assert "horse" not in outcome.detail and "wrong" not in outcome.detail
    if password == "wrong":
        assert results[1].outcomes[0].detail.startswith("authentication failed: 535")


def test_plain_session_where_starttls_is_required(ca: trustme.CA) -> None:
    results = []
    for mode in MODES:
        server = start_server(pipelining=mode == "pipelined", tls_context=server_tls(ca))
        try:
            relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=5)
            results.append(result(asyncio.run(send_all(mode, relay, [msg(0)])), server))
        finally:
            server.stop()
    assert results[0].outcomes[0].detail.startswith("the relay refused the sender: 530")
    assert all(r == results[0] for r in results[1:])


@pytest.mark.parametrize("verify", [True, False])
def test_implicit_tls(ca: trustme.CA, ca_file: Path, verify: bool) -> None:
    async def go() -> tuple[list[Outcome], list[bytes]]:
        replies = {"EHLO": "250-tiny\r\n250 PIPELINING"}
        async with tiny_server(tls=server_tls(ca), replies=replies) as (port, received):
            outcomes = await both(port, tls=TlsMode.IMPLICIT, verify_tls=verify,
                                  ca_file=ca_file if verify else None)
            return outcomes, received

    (reference, ours), received = asyncio.run(go())
    assert ours == reference and ours.reply == SmtpReply(250, "2.0.0 queued")
    assert received == [data_payload(MESSAGE)] * 2


def test_implicit_tls_refuses_an_unknown_ca(ca: trustme.CA) -> None:
    async def go() -> list[Outcome]:
        async with tiny_server(tls=server_tls(ca)) as (port, _):
            return await both(port, tls=TlsMode.IMPLICIT)

    reference, ours = asyncio.run(go())
    assert ours.verdict is reference.verdict is Verdict.DEFERRED
    assert "CERTIFICATE_VERIFY_FAILED" in ours.detail


# -- Postfix's smtp-sink: a real pipelining server ----------------------------------------------

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


@dataclass
class Sink:
    port: int
    log: Path

    def counters(self) -> dict[str, int]:
        """smtp-sink -c's last counters: sess (ended sessions), quit, mesg."""
        last = self.log.read_bytes().replace(b"\r", b"\n").decode().split("\n")
        found = [line for line in last if line.startswith("sess=")]
        if not found:
            return {"sess": 0, "quit": 0, "mesg": 0}
        return {k: int(v) for k, v in (pair.split("=") for pair in found[-1].split())}

    def wait_for(self, key: str, count: int) -> int:
        deadline = time.monotonic() + 5
        while self.counters()[key] < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.counters()[key]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Callable[..., Sink]]:
    """Start smtp-sink on a free loopback port (with extra options); stopped by pid."""
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("Postfix's smtp-sink is not installed (Debian package postfix)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> Sink:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = tmp_path / f"sink-{port}.log"
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with log.open("wb") as out:
            processes.append(subprocess.Popen(
                [SMTP_SINK, "-c", *user, *options, f"127.0.0.1:{port}", "100"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if processes[-1].poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"smtp-sink did not start: {log.read_text()}")
                time.sleep(0.05)
        return Sink(port, log)

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_smtp_sink_receives_every_pipelined_batch(sink: Callable[..., Sink]) -> None:
    server = sink()
    before = server.counters()
    relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=5)

    async def go() -> list[Outcome]:
        client = PipelinedConnection(relay, helo_name="localhost", messages_per_connection=120)
        outcomes: list[Outcome] = []
        for start in range(0, 300, 50):
            outcomes += await client.send_batch([msg(n) for n in range(start, start + 50)])
            assert client.pipelining in (True, None)  # None: just renewed
        await client.close()
        return outcomes

    outcomes = asyncio.run(go())
    assert {short(o) for o in outcomes} == {"sent"}
    assert outcomes[0].reply == SmtpReply(250, "2.0.0 Ok")
    assert server.wait_for("mesg", before["mesg"] + 300) == before["mesg"] + 300
    # 120 a connection: 120 + 120 + 60, each ended by QUIT (the fixture's probe did not QUIT).
    assert server.wait_for("quit", 3) == 3 and server.wait_for("sess", 4) == 4


@pytest.mark.parametrize(("options", "expect"), [
    (("-q", "."), ("doubt", "doubt", "doubt")),  # drops the connection after the message
    (("-Q", "RCPT"), ("deferred", "deferred", "deferred")),  # 421, then drops it
])
def test_smtp_sink_faults_while_pipelining(sink: Callable[..., Sink], options: tuple[str, ...],
                                           expect: tuple[str, ...]) -> None:
    server = sink(*options)
    relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=5)
    sends = [msg(0), msg(1), msg(2)]
    reference = [comparable(o) for o in asyncio.run(send_all("aiosmtplib", relay, sends))]
    ours = [comparable(o) for o in asyncio.run(send_all("pipelined", relay, sends))]
    assert [short(o) for o in reference] == list(expect)
    assert ours == reference


# -- properties ---------------------------------------------------------------------------------

BODY_PARTS = st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"\r\n.\r\n", b"x", b" ",
                              b"\x00", b"\xc3\xa9", b"Subject: a\r\n"])
BODIES = st.one_of(st.binary(max_size=300), st.lists(BODY_PARTS, max_size=60).map(b"".join))


@given(BODIES)
def test_payload_is_what_aiosmtplib_writes(data: bytes) -> None:
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
    assert data_payload(data) == expected


@pytest.fixture(scope="module")
def shared_server() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


_numbers = iter(range(10**9))


@settings(max_examples=40, deadline=None)
@given(BODIES)
def test_any_body_arrives_byte_identical_through_both_clients(
        shared_server: CaptureServer, data: bytes) -> None:
    relay = SmtpRelay(host="127.0.0.1", port=shared_server.port, timeout_seconds=5)
    number = next(_numbers)
    sends = {mode: msg(number, data, rcpt=f"{mode}{number}@example.com")
             for mode in ("aiosmtplib", "send")}

    async def go() -> None:
        for mode, send in sends.items():
            [outcome] = await send_all(mode, relay, [send])
            assert outcome.verdict is Verdict.SENT, outcome

    asyncio.run(go())
    [theirs] = shared_server.received_for(sends["aiosmtplib"][1])
    [ours] = shared_server.received_for(sends["send"][1])
    assert ours.data == theirs.data


ADDRESS_PARTS = st.sampled_from([*"ab.@-+_\"()<>[]\\,;: é\x01\t\x7f\x85\xa0\u2028\U0001f389",
                                 "x.y", "@ex.com"])


@given(st.one_of(st.emails(), st.lists(ADDRESS_PARTS, max_size=12).map("".join)))
def test_addresses_are_quoted_as_aiosmtplib_quotes_them(address: str) -> None:
    try:
        expected: str | None = quote_address(address)
        assert expected is not None
        if any(ord(c) < 32 or ord(c) == 127 for c in expected):
            expected = None  # aiosmtplib refuses it when it builds the command
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            _quote(address)
    else:
        assert _quote(address) == expected


def test_reply_parser_reads_split_and_multi_line_replies() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n25") == []
    assert parser.feed(b"0 2.0.0 last \r\n354 go\r\n") == [
        SmtpReply(250, "first\n2.0.0 last"), SmtpReply(354, "go")]
    assert parser.feed(b"250 \r\n250\n") == [SmtpReply(250, ""), SmtpReply(250, "")]
