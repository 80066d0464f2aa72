"""Bounces end to end (issue 4): real Postfix DSNs, attribution, quarantine, idempotency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from postroom.app import Postroom
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.states import LogStatus
from postroom.inbound.sources import from_files, from_maildir
from postroom.testing.smtp_server import CaptureServer, Script
from tests.conftest import write_csv
from tests.integration.postfix import DOMAIN, REMOTE, Postfix, postfix_instance

CORPUS = Path(__file__).parents[1] / "corpus" / "postfix"


def _frozen(moment: datetime) -> datetime:
    return moment


def _delivery(postroom: Postroom, tmp_path: Path, emails: list[str], **props: object) -> int:
    rows = [{"email": e, "first_name": e.split("@")[0]} for e in emails]
    targets = write_csv(tmp_path / f"r{time.monotonic_ns()}.csv", rows)
    name = f"t{time.monotonic_ns()}"
    postroom.templates.create_template(name, {"subject": "Hello {{ recipient.first_name }}",
                                              "text": "Hi {{ recipient.first_name }}\n",
                                              "from_address": f"news@{DOMAIN}",
                                              "errors_to": f"bounces@{DOMAIN}", **props})
    delivery, _ = postroom.deliveries.create_delivery(name, list_file=targets)  # exactly these
    return delivery.id


@pytest.fixture
def remote(capture: Callable[..., CaptureServer]) -> CaptureServer:
    """A remote MX behind Postfix that refuses one mailbox (Postfix then sends a real DSN)."""
    script = Script().on_rcpt(f"carol@{REMOTE}",
                              "550 5.1.1 <carol@remote.example>: Recipient address rejected: "
                              "User unknown in virtual mailbox table")
    return capture(script=script)


@pytest.fixture
def postfix(remote: CaptureServer) -> Iterator[Postfix]:
    yield from postfix_instance(remote.port)


def test_postfix_end_to_end_sync_rejection_and_real_dsn(
    postfix: Postfix, remote: CaptureServer, make_postroom: Callable[..., Postroom],
    capture: Callable[..., CaptureServer], sqlite_url: str, tmp_path: Path,
) -> None:
    postroom = make_postroom(sqlite_url, _PostfixRelay(postfix.port), bcc=False)
    emails = [f"alice@{DOMAIN}", f"ghost-user@{DOMAIN}", f"carol@{REMOTE}", f"dave@{REMOTE}"]
    delivery_id = _delivery(postroom, tmp_path, emails)

    summary = asyncio.run(postroom.sending.send(delivery_id))

    logs = {log.email: log for log in postroom.deliveries.logs(delivery_id)}
    # Refused at RCPT by Postfix: a synchronous hard failure, user unknown, quarantined.
    ghost = logs[f"ghost-user@{DOMAIN}"]
    assert ghost.status is LogStatus.FAILED and ghost.failure_type is FailureType.HARD
    assert ghost.failure_reason is FailureReason.USER_UNKNOWN
    assert "550 5.1.1" in ghost.smtp_reply
    assert summary.sent == 3
    # Accepted by Postfix, refused by the remote MX: Postfix mails a real DSN to the VERP
    # errors-to address, which lands in the `bounces` mailbox.
    postfix.wait_for_mail("bounces", 1)
    postfix.wait_for_mail("alice", 1)
    fetched = postroom.bounces.take(from_maildir(postfix.maildir("bounces")))
    assert fetched.stored == 1
    processed = postroom.bounces.process()
    assert processed.attributed == 1 and processed.failures_applied == 1
    carol = postroom.store.get_log(logs[f"carol@{REMOTE}"].id)
    assert carol.status is LogStatus.FAILED and carol.failure_type is FailureType.HARD
    assert carol.failure_reason is FailureReason.USER_UNKNOWN
    assert postroom.store.get_log(logs[f"dave@{REMOTE}"].id).status is LogStatus.SENT
    assert [m.rcpt_tos for m in remote.messages] == [(f"dave@{REMOTE}",)]
    # Both bad addresses are quarantined; the next analysis leaves them out (reason 9).
    for address in (f"ghost-user@{DOMAIN}", f"carol@{REMOTE}"):
        row = postroom.store.get_address(address)
        assert row is not None and row.status == "quarantine"
    again = _delivery(postroom, tmp_path, emails)
    report = postroom.deliveries.analyze(again)
    assert report.pending == 2 and report.to_json()["excluded"] == {"quarantine": 2}


class _PostfixRelay:
    """Stands where the fixture wants a capture server: Postfix's own port on loopback."""

    def __init__(self, port: int):
        self.port = port


@pytest.fixture
def postroom(make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
             sqlite_url: str) -> Postroom:
    return make_postroom(sqlite_url, capture(), bcc=False)


def _sent_to(postroom: Postroom, tmp_path: Path, email: str) -> int:
    delivery_id = _delivery(postroom, tmp_path, [email])
    assert asyncio.run(postroom.sending.send(delivery_id)).sent == 1
    [log] = postroom.deliveries.logs(delivery_id)
    return log.id


def _dsn_for(sample: str, *, verp: str, recipient: str) -> bytes:
    """A real Postfix DSN from the corpus, readdressed to a message of this test."""
    data = (CORPUS / sample).read_bytes()
    original = data.split(b"Final-Recipient: rfc822; ", 1)[1].split(b"\n", 1)[0].strip()
    return (data.replace(original, recipient.encode())
            .replace(b"bounces+13.SAMPLETOKEN@postroom-pf.example", verp.encode())
            .replace(b"bounces+10.SAMPLETOKEN@postroom-pf.example", verp.encode())
            .replace(b"bounces+11.SAMPLETOKEN@postroom-pf.example", verp.encode())
            .replace(b"bounces+12.SAMPLETOKEN@postroom-pf.example", verp.encode()))


def test_forged_bounces_change_no_address(postroom: Postroom, tmp_path: Path) -> None:
    log_id = _sent_to(postroom, tmp_path, "erin@example.org")
    secret = postroom.planner.links.secret
    from postroom.compose.tokens import verp_address

    good = verp_address(secret, f"bounces@{DOMAIN}", log_id)
    forged_token = good.replace(f"+{log_id}.", f"+{log_id + 1}.")
    bad_mac = good[:-len(DOMAIN) - 3] + "AA@" + DOMAIN
    cases = [
        _dsn_for("postfix-gone.eml", verp=forged_token, recipient="erin@example.org"),
        _dsn_for("postfix-gone.eml", verp=bad_mac, recipient="erin@example.org"),
        # A valid token, but the DSN names an address this message never went to.
        _dsn_for("postfix-gone.eml", verp=good, recipient="someone-else@example.org"),
    ]
    for data in cases:
        postroom.bounces.receive(data, "")
    summary = postroom.bounces.process()
    assert summary.processed == 3 and summary.failures_applied == 0
    assert (summary.attributed, summary.unattributed) == (0, 3)  # as the stored states say
    assert postroom.store.get_address("erin@example.org") is None
    assert postroom.store.get_address("someone-else@example.org") is None
    assert postroom.store.get_log(log_id).status is LogStatus.SENT
    states = {b.state for b in postroom.store.list_bounces()}
    assert states == {"unattributed"}  # kept for a person, never dropped


def test_a_bounce_after_the_attribution_window_is_kept_not_applied(
    postroom: Postroom, tmp_path: Path,
) -> None:
    from postroom.compose.tokens import verp_address

    log_id = _sent_to(postroom, tmp_path, "gail@example.org")
    verp = verp_address(postroom.planner.links.secret, f"bounces@{DOMAIN}", log_id)
    dsn = _dsn_for("postfix-gone.eml", verp=verp, recipient="gail@example.org")
    sent_at = postroom.clock()
    postroom.clock = lambda: sent_at + timedelta(days=7, minutes=1)
    postroom.bounces.receive(dsn, "")
    summary = postroom.bounces.process()
    assert (summary.processed, summary.attributed, summary.late) == (1, 1, 1)
    assert summary.failures_applied == 0
    assert postroom.store.get_log(log_id).status is LogStatus.SENT
    assert postroom.store.get_address("gail@example.org") is None
    [bounce] = postroom.store.list_bounces()
    assert bounce.state == "processed"
    [result] = postroom.store.bounce_results_of(bounce.id)
    assert result["log_id"] == log_id and not result["applied"]
    # The same report inside the window is applied (stored a day after sending).
    other = _sent_to(postroom, tmp_path, "hal@example.org")
    postroom.clock = lambda: sent_at + timedelta(days=8)
    postroom.bounces.receive(_dsn_for("postfix-gone.eml", recipient="hal@example.org",
                                      verp=verp_address(postroom.planner.links.secret,
                                                        f"bounces@{DOMAIN}", other)), "")
    assert postroom.bounces.process().failures_applied == 1
    assert postroom.store.get_log(other).status is LogStatus.FAILED


def test_mail_that_is_no_report_is_kept_for_a_person_even_with_a_valid_token(
    postroom: Postroom, tmp_path: Path,
) -> None:
    from postroom.compose.tokens import verp_address

    log_id = _sent_to(postroom, tmp_path, "ivy@example.org")
    verp = verp_address(postroom.planner.links.secret, f"bounces@{DOMAIN}", log_id)
    reply = (f"From: Ivy <ivy@example.org>\r\nTo: {verp}\r\nSubject: Re: Hello ivy\r\n"
             "Message-ID: <reply-1@example.org>\r\n\r\nPlease call me about this.\r\n")
    postroom.bounces.receive(reply.encode(), verp)
    summary = postroom.bounces.process()
    assert (summary.processed, summary.attributed, summary.unrecognized) == (1, 0, 1)
    assert postroom.store.get_log(log_id).status is LogStatus.SENT
    assert [b.state for b in postroom.store.list_bounces()] == ["unrecognized"]
    assert len(postroom.store.list_bounces(state="unrecognized", limit=10)) == 1


def test_a_pending_retry_is_not_sent_once_its_address_is_quarantined(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture(script=Script()
                    .on_rcpt("jo@example.org", "451 4.3.0 Try again later", times=1)
                    .on_rcpt("jo@example.org", "550 5.1.1 User unknown"))
    postroom = make_postroom(sqlite_url, relay, bcc=False,
                             sending={"quick_retries": 0, "wait_for_retries_seconds": 0})
    first = _delivery(postroom, tmp_path, ["jo@example.org", "kim@example.org"])
    assert asyncio.run(postroom.sending.send(first)).deferred == 1  # jo: retry in an hour
    second = _delivery(postroom, tmp_path, ["jo@example.org"])
    asyncio.run(postroom.sending.send(second))  # user unknown: hard, quarantined
    assert postroom.store.get_address("jo@example.org").status == "quarantine"  # type: ignore[union-attr]
    attempts = len(relay.rcpt_attempts)
    later = postroom.clock() + timedelta(hours=2)
    postroom.clock = lambda: later
    asyncio.run(postroom.sending.send(first))
    assert len(relay.rcpt_attempts) == attempts, "not tried again"
    jo = next(log for log in postroom.deliveries.logs(first) if log.email == "jo@example.org")
    assert jo.status is LogStatus.FAILED and jo.failure_reason is FailureReason.QUARANTINE
    assert jo.failure_type is FailureType.HARD and "quarantine" in jo.detail
    assert postroom.deliveries.pending_count(first) == 0


def test_same_bounce_twice_counts_once_and_a_crash_loses_nothing(
    postroom: Postroom, tmp_path: Path,
) -> None:
    log_ids = [_sent_to(postroom, tmp_path, f"u{i}@example.org") for i in range(3)]
    secret = postroom.planner.links.secret
    from postroom.compose.tokens import verp_address

    files = []
    for i, log_id in enumerate(log_ids):
        path = tmp_path / f"dsn{i}.eml"
        path.write_bytes(_dsn_for("postfix-full.eml", recipient=f"u{i}@example.org",
                                  verp=verp_address(secret, f"bounces@{DOMAIN}", log_id)))
        files.append(path)
    # Fetched twice (as a mailbox read again after a crash would): stored once each.
    assert postroom.bounces.take(from_files(files)).stored == 3
    assert postroom.bounces.take(from_files(files)).duplicates == 3
    # A processor that dies after the first bounce: the rest stay `new`, nothing is lost.
    original = postroom.store.apply_bounce
    calls = 0

    def dying(*args: Any, **kwargs: Any) -> int | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt("killed mid-batch")
        return original(*args, **kwargs)

    postroom.store.apply_bounce = dying  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        postroom.bounces.process()
    postroom.store.apply_bounce = original  # type: ignore[method-assign]
    assert postroom.store.bounce_counts() == {"processed": 1, "new": 2}
    summary = postroom.bounces.process()
    assert summary.processed == 2
    assert postroom.bounces.process().processed == 0
    for i, log_id in enumerate(log_ids):
        log = postroom.store.get_log(log_id)
        assert log.status is LogStatus.FAILED and log.failure_reason is FailureReason.MAILBOX_FULL
        row = postroom.store.get_address(f"u{i}@example.org")
        assert row is not None and row.error_count == 1 and row.status == "with_errors"


def test_soft_errors_quarantine_at_five_with_24h_spacing(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture(script=Script().on_rcpt("flaky@example.org", "452 4.2.2 Mailbox full"))
    postroom = make_postroom(sqlite_url, relay, bcc=False,
                             sending={"quick_retries": 0, "wait_for_retries_seconds": 0})
    start = postroom.clock()
    for day in range(6):
        moment = start + timedelta(days=day, minutes=1)
        postroom.clock = partial(_frozen, moment)
        delivery_id = _delivery(postroom, tmp_path, ["flaky@example.org"])
        report = postroom.deliveries.analyze(delivery_id)
        if day < 5:
            assert report.pending == 1
            asyncio.run(postroom.sending.send(delivery_id))
            row = postroom.store.get_address("flaky@example.org")
            assert row is not None and row.error_count == day + 1
        else:  # five soft errors a day apart: quarantined, excluded with reason 9
            assert report.pending == 0
            assert report.to_json()["excluded"] == {"quarantine": 1}


def test_resend_targets_failed_recipients_not_in_quarantine(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture(script=Script()
                    .on_rcpt("unknown@example.org", "550 5.1.1 User unknown")
                    .on_data("blocked@example.org", "554 5.7.1 Message refused as spam")
                    .on_rcpt("full@example.org", "552 5.2.2 Mailbox full")
                    )
    postroom = make_postroom(sqlite_url, relay, bcc=False,
                             sending={"quick_retries": 0, "wait_for_retries_seconds": 0})
    emails = ["ok@example.org", "unknown@example.org", "blocked@example.org"]
    delivery_id = _delivery(postroom, tmp_path, emails, max_retries=0)  # soft fails at once
    asyncio.run(postroom.sending.send(delivery_id))
    follow_up = postroom.deliveries.resend(delivery_id)
    report = postroom.deliveries.analyze(follow_up.id)
    # user unknown is hard: quarantined, so not targeted; the refused one (soft) is.
    assert report.targets == 1 and report.pending == 1
    refused = postroom.deliveries.resend(delivery_id, reasons=[int(FailureReason.REFUSED)])
    assert postroom.deliveries.analyze(refused.id).pending == 1
    with pytest.raises(Exception, match="no failed recipient"):
        postroom.deliveries.resend(delivery_id, reasons=[int(FailureReason.MAILBOX_FULL)])
