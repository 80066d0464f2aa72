"""domain.outcomes: first-cut qualification of SMTP replies into outcome values."""

from __future__ import annotations

import pytest

from postroom.domain.outcomes import (
    FailureReason,
    FailureType,
    Outcome,
    SmtpReply,
    Verdict,
    connection_fault,
    qualify_reply,
)

R = FailureReason


def test_2xx_is_sent() -> None:
    reply = SmtpReply(250, "2.0.0 Ok: queued as 4BQ2")
    assert qualify_reply(reply) == Outcome(Verdict.SENT, reply)


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        (550, "5.1.1 <ann@example.org>: Recipient address rejected: User unknown", R.USER_UNKNOWN),
        (550, "5.1.1 The email account that you tried to reach does not exist", R.USER_UNKNOWN),
        (550, "No such user here", R.USER_UNKNOWN),
        (550, "5.1.2 <ann@nowhere.invalid>: Domain not found", R.INVALID_DOMAIN),
        (550, "Unrouteable address", R.INVALID_DOMAIN),
        (550, "5.2.1 The email account that you tried to reach is disabled", R.ACCOUNT_DISABLED),
        (554, "5.7.1 Message rejected as spam", R.REFUSED),
        (554, "Service unavailable; client host blocked using zen.spamhaus.org", R.REFUSED),
        (550, "Requested action not taken", R.UNDEFINED),
    ],
)
def test_5xx_is_a_hard_failure(code: int, text: str, reason: FailureReason) -> None:
    reply = SmtpReply(code, text)
    assert qualify_reply(reply) == Outcome(Verdict.FAILED, reply, FailureType.HARD, reason)


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        (452, "4.2.2 Mailbox full", R.MAILBOX_FULL),
        (452, "4.2.2 The email account that you tried to reach is over quota", R.MAILBOX_FULL),
        (421, "Service not available, closing transmission channel", R.UNREACHABLE),
        (421, "4.7.0 Try again later, closing connection", R.REFUSED),
        (451, "4.3.0 Local error in processing", R.UNREACHABLE),
        (450, "4.1.8 <bounce@nowhere.invalid>: Sender address rejected: Domain not found",
         R.INVALID_DOMAIN),
    ],
)
def test_4xx_is_deferred_soft(code: int, text: str, reason: FailureReason) -> None:
    reply = SmtpReply(code, text)
    assert qualify_reply(reply) == Outcome(Verdict.DEFERRED, reply, FailureType.SOFT, reason)


def test_enhanced_code_wins_over_text() -> None:
    reply = SmtpReply(550, "5.1.2 Domain nowhere.invalid does not exist")
    assert qualify_reply(reply).reason is R.INVALID_DOMAIN


def test_552_mailbox_full_is_soft() -> None:
    assert qualify_reply(SmtpReply(552, "5.2.2 Mailbox full")).failure_type is FailureType.SOFT


@pytest.mark.parametrize(
    ("text", "enhanced"),
    [("5.1.1 User unknown", "5.1.1"), ("  4.2.2 full", "4.2.2"), ("User unknown", None),
     ("see 5.1.1", None)],
)
def test_enhanced_status_code(text: str, enhanced: str | None) -> None:
    assert SmtpReply(550, text).enhanced == enhanced


def test_reply_and_outcome_text() -> None:
    reply = SmtpReply(550, "5.1.1 User unknown")
    assert str(reply) == "550 5.1.1 User unknown"
    assert qualify_reply(reply).text == "550 5.1.1 User unknown"


def test_connection_fault_is_deferred_unreachable() -> None:
    outcome = connection_fault("connection refused by 10.0.0.1:25")
    assert outcome == Outcome(
        Verdict.DEFERRED, None, FailureType.SOFT, R.UNREACHABLE,
        "connection refused by 10.0.0.1:25",
    )
    assert outcome.text == "connection refused by 10.0.0.1:25"


def test_reason_codes_follow_the_reference_platform() -> None:
    assert {r.name: r.value for r in R if r.value <= 25} == {
        "UNDEFINED": 0, "USER_UNKNOWN": 1, "INVALID_DOMAIN": 2, "UNREACHABLE": 3,
        "ACCOUNT_DISABLED": 4, "MAILBOX_FULL": 5, "NOT_SPECIFIED": 7, "DENYLISTED": 8,
        "QUARANTINE": 9, "DOUBLE": 10, "REFUSED": 20, "ERROR_IGNORED": 25,
    }
    assert R.MAILBOX_FULL.label == "mailbox full"
