"""PipelinedConnection after refused recipients (issue 16, point 4; ADR 0027): no DATA for a
transaction whose recipient was refused once the connection has seen a refusal, and a fresh
connection when the relay's errors pile up or its replies slow down. Against the aiosmtpd
capture server, which records every command it reads and on which connection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from postroom.settings import SmtpRelay
from postroom.testing.smtp_server import CaptureServer, Command, Script, Sleep
from postroom.transport.pipelined import PipelinedConnection
from tests.integration.test_pipelined import SENDER, msg, start_server

REFUSED = "550 5.1.1 User unknown"


@pytest.fixture
def servers() -> Iterator[list[CaptureServer]]:
    started: list[CaptureServer] = []
    yield started
    for server in started:
        server.stop()


def _serve(servers: list[CaptureServer], script: Script, *,
           pipelining: bool = True) -> CaptureServer:
    server = start_server(pipelining=pipelining, script=script)
    servers.append(server)
    return server


def _send(server: CaptureServer, count: int, **options: float) -> tuple[list[str], int]:
    """Send `count` messages in one batch: each one's verdict, and the renewals."""
    relay = SmtpRelay(host="127.0.0.1", port=server.port, timeout_seconds=5)

    async def run() -> tuple[list[str], int]:
        client = PipelinedConnection(relay, helo_name="localhost", **options)  # type: ignore[arg-type]
        try:
            outcomes = await client.send_batch([msg(n) for n in range(count)])
        finally:
            await client.close()
        return [o.verdict.value for o in outcomes], client.renewals

    return asyncio.run(run())


def _verbs(commands: list[Command]) -> str:
    return " ".join(c.verb for c in commands)


def _refusing(*numbers: int) -> Script:
    script = Script()
    for number in numbers:
        script.on_rcpt(f"rcpt{number}@example.com", REFUSED)
    return script


@pytest.mark.parametrize(("pipelining", "expected"), [
    # Pipelined: rcpt1's DATA went out with rcpt0's message, before its refusal was known
    # (the relay answers it 503); from then on DATA waits for the RCPT reply: RSET for rcpt3.
    (True, "EHLO MAIL RCPT DATA MAIL RCPT DATA RSET MAIL RCPT DATA MAIL RCPT RSET "
           "MAIL RCPT DATA MAIL RCPT DATA QUIT"),
    # Lock-step: never a DATA after a refused RCPT.
    (False, "EHLO MAIL RCPT DATA MAIL RCPT RSET MAIL RCPT DATA MAIL RCPT RSET "
            "MAIL RCPT DATA MAIL RCPT DATA QUIT"),
])
def test_no_data_for_a_refused_recipient_once_one_was_refused(
        servers: list[CaptureServer], pipelining: bool, expected: str) -> None:
    server = _serve(servers, _refusing(1, 3), pipelining=pipelining)

    verdicts, renewals = _send(server, 6, slow_reply_seconds=30)  # no renewal for load

    assert verdicts == ["sent", "failed", "sent", "failed", "sent", "sent"]
    assert _verbs(server.commands) == expected
    assert renewals == 0
    assert [m.rcpt_tos for m in server.messages] == [
        (f"rcpt{n}@example.com",) for n in (0, 2, 4, 5)]


def _transactions(commands: list[Command]) -> list[str]:
    """The verbs from each MAIL up to the next MAIL or QUIT."""
    return [("MAIL " + part).strip() for part in
            _verbs(commands).split(" QUIT")[0].split("MAIL ")[1:]]


@pytest.mark.parametrize(("second", "verbs"), [
    (20, "MAIL RCPT RSET"),  # the 20th message after a refusal: still careful
    (22, "MAIL RCPT DATA RSET"),  # 20 went through in a row (1-20): DATA ahead again
])
def test_careful_ends_after_enough_messages_in_a_row_went_through(
        servers: list[CaptureServer], second: int, verbs: str) -> None:
    server = _serve(servers, _refusing(0, second))

    verdicts, _ = _send(server, 25, errors_per_connection=100, slow_reply_seconds=30)

    assert verdicts.count("failed") == 2 and verdicts[0] == verdicts[second] == "failed"
    transactions = _transactions(server.commands)
    assert len(transactions) == 25
    assert transactions[0] == "MAIL RCPT DATA RSET"  # the first refusal: DATA was out
    assert transactions[second] == verbs


def test_a_connection_is_renewed_after_so_many_error_replies(
        servers: list[CaptureServer]) -> None:
    server = _serve(servers, _refusing(1, 3, 5, 7))

    verdicts, renewals = _send(server, 8, errors_per_connection=3, slow_reply_seconds=30)

    assert verdicts == ["sent", "failed"] * 4
    # rcpt1: its RCPT and its pipelined DATA are refused (2 errors), rcpt3's RCPT makes 3:
    # renewed. rcpt5 and rcpt7 cost one error each on the second connection.
    assert renewals == 1
    assert {c.connection for c in server.commands} == {1, 2}
    assert _verbs([c for c in server.commands if c.connection == 2]) == (
        "EHLO MAIL RCPT DATA MAIL RCPT RSET MAIL RCPT DATA MAIL RCPT RSET QUIT")
    assert len(server.messages) == 4


def test_a_connection_is_renewed_when_replies_slow_down_after_a_refusal(
        servers: list[CaptureServer]) -> None:
    refused = threading.Event()

    def rcpt1(address: str) -> bool:
        if address == "rcpt1@example.com":
            refused.set()
            return True
        return False

    # After the refusal the relay takes 2 s to answer one MAIL, like a tarpit would (the
    # threshold: 1 s, and 10 times the fastest message; wide, for a loaded machine).
    script = (Script().on_rcpt(rcpt1, REFUSED)
              .on_mail(Sleep(2.0), sender=lambda _: refused.is_set(), times=1))
    server = _serve(servers, script)

    verdicts, renewals = _send(server, 6, slow_reply_seconds=1.0)

    assert verdicts == ["sent", "failed", "sent", "sent", "sent", "sent"]
    # rcpt2 was slow; rcpt3's MAIL and RCPT were out already: it goes first, then renewal.
    assert renewals == 1
    by_connection = [c.connection for c in server.commands if c.verb == "MAIL"]
    assert by_connection == [1, 1, 1, 1, 2, 2]
    assert all(m.mail_from == SENDER for m in server.messages)


def test_a_slow_relay_without_errors_keeps_its_connection(
        servers: list[CaptureServer]) -> None:
    server = _serve(servers, Script().on_mail(Sleep(0.4), times=2))

    verdicts, renewals = _send(server, 4, slow_reply_seconds=0.3)

    assert verdicts == ["sent"] * 4 and renewals == 0
    assert {c.connection for c in server.commands} == {1}
