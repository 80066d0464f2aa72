"""Refusals without tarpits (issue 16, point 4): refused recipients do not slow a delivery down.

Postfix counts every 4xx/5xx reply of a session as an error, delays each reply by
`smtpd_error_sleep_time` past `smtpd_soft_error_limit` errors and hangs up past the hard limit.
A delivery of 1,000 recipients through a real Postfix on loopback with 10% refused at RCPT
must take no more than 1.5x the time of the same delivery with none refused. The refused
addresses are all of Postfix's own domain, so the engine's lane for that domain meets them in
a row, as it would a company whose mailboxes are gone (ADR 0027). Postfix's error
limits are its defaults here (the test checks); accepted mail is discarded by Postfix, so its
queue manager does little while the clock runs.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postroom.app import Postroom
from postroom.domain.outcomes import Outcome, Verdict
from postroom.settings import SmtpRelay
from postroom.testing.smtp_server import CaptureServer
from postroom.transport.pipelined import PipelinedConnection
from tests.conftest import write_csv
from tests.integration.postfix import DOMAIN, REMOTE, Postfix, postfix_instance

RECIPIENTS = 1000
REFUSED_EVERY = 10  # 10% refused at RCPT: unknown local users
LIMITS = ("smtpd_error_sleep_time", "smtpd_soft_error_limit", "smtpd_hard_error_limit",
          "smtpd_junk_command_limit")


@pytest.fixture
def postfix() -> Iterator[Postfix]:
    yield from postfix_instance(0, remote_transport="discard:")


class _PostfixRelay:
    """Stands where make_postroom wants a capture server: Postfix's own port."""

    def __init__(self, port: int):
        self.port = port


def _postconf(*args: str) -> list[str]:
    done = subprocess.run(["postconf", *args], check=True, capture_output=True, text=True)
    return done.stdout.splitlines()


def _timed_delivery(make_postroom: Callable[..., Postroom], postfix: Postfix, tmp_path: Path,
                    name: str, refused: bool) -> tuple[float, int, int]:
    """(seconds, sent, failed) of one delivery to RECIPIENTS addresses on a fresh store."""
    postroom = make_postroom(f"sqlite:///{tmp_path / name}.db",
                             relay=_PostfixRelay(postfix.port), bcc=False)
    rows = [{"email": f"ghost{i:04d}@{DOMAIN}" if refused and i % REFUSED_EVERY == 3
             else f"{name}{i:04d}@{REMOTE}"} for i in range(RECIPIENTS)]
    postroom.recipients.import_recipients(write_csv(tmp_path / f"{name}.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hello", "text": "Hi\n",
                                             "from_address": f"news@{DOMAIN}",
                                             "errors_to": f"bounces@{DOMAIN}"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    postroom.deliveries.analyze(delivery.id)
    started = time.perf_counter()
    summary = asyncio.run(postroom.sending.send(delivery.id))
    return time.perf_counter() - started, summary.sent, summary.failed


def test_ten_percent_refused_at_rcpt_costs_at_most_half_again(
    postfix: Postfix, make_postroom: Callable[..., Postroom],
    capture: Callable[..., CaptureServer], tmp_path: Path,
) -> None:
    # Postfix's tarpit is on, as shipped: these are its defaults.
    assert _postconf("-n", *LIMITS) == []
    assert _postconf("-h", "smtpd_error_sleep_time") == ["1s"]
    clean, sent, failed = _timed_delivery(make_postroom, postfix, tmp_path, "clean", False)
    assert (sent, failed) == (RECIPIENTS, 0)
    refusing, sent, failed = _timed_delivery(make_postroom, postfix, tmp_path, "refused", True)
    assert (sent, failed) == (RECIPIENTS - RECIPIENTS // REFUSED_EVERY,
                              RECIPIENTS // REFUSED_EVERY)
    # A second clean run: the baseline is the slower of the two, so that a noisy first run
    # does not fail the test (the refused run must still be within 1.5x of it).
    again, sent, _ = _timed_delivery(make_postroom, postfix, tmp_path, "again", False)
    assert sent == RECIPIENTS
    baseline = max(clean, again)
    print(f"clean {clean:.2f} s, again {again:.2f} s, 10% refused {refusing:.2f} s, "
          f"ratio {refusing / baseline:.2f}")
    assert refusing <= 1.5 * baseline, (refusing, clean, again)


def test_a_connection_postfix_slows_down_is_renewed(postfix: Postfix) -> None:
    """Postfix counts the errors since the last delivered message and, past 10, delays every
    reply by a second. 30 refusals in a row (a whole domain refused), with the client's own
    error count out of the way: the slowdown alone renews the connection. (Without it the
    same 30 took 54 s on one connection instead of 7 s on four.)"""
    relay = SmtpRelay(host="127.0.0.1", port=postfix.port, timeout_seconds=10)
    sends = [(f"news@{DOMAIN}", f"ghost{i:02d}@{DOMAIN}" if i < 30 else f"ok{i:02d}@{REMOTE}",
              b"Subject: hi\r\n\r\nHi\r\n", False) for i in range(40)]

    async def run() -> tuple[list[Outcome], int]:
        client = PipelinedConnection(relay, helo_name="localhost", errors_per_connection=1000)
        try:
            return await client.send_batch(sends), client.renewals
        finally:
            await client.close()

    outcomes, renewals = asyncio.run(run())

    assert [o.verdict for o in outcomes] == [Verdict.FAILED] * 30 + [Verdict.SENT] * 10
    assert [o.reply.code if o.reply else None for o in outcomes] == [550] * 30 + [250] * 10
    assert renewals >= 2  # one per 10 errors, or about
