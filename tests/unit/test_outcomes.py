"""domain/outcomes.py: reply values, and the qualification of synchronous replies by the plan."""

from __future__ import annotations

import pytest

from postroom.bounces.rules import default_rules, qualify_smtp_reply
from postroom.domain.outcomes import (
    FailureReason as R,
)
from postroom.domain.outcomes import (
    FailureType,
    Outcome,
    SmtpReply,
    Verdict,
    connection_fault,
    reply_outcome,
)


@pytest.mark.parametrize(("code", "verdict"), [
    (250, Verdict.SENT), (251, Verdict.SENT), (421, Verdict.DEFERRED),
    (451, Verdict.DEFERRED), (550, Verdict.FAILED), (554, Verdict.FAILED)])
def test_reply_outcome_by_class(code: int, verdict: Verdict) -> None:
    reply = SmtpReply(code, "text")
    outcome = reply_outcome(reply)
    assert outcome.verdict is verdict and outcome.reply == reply and outcome.reason is None


def test_enhanced_code_is_read_from_the_text() -> None:
    assert SmtpReply(550, "5.1.1 <a@b.example> User unknown").enhanced == "5.1.1"
    assert SmtpReply(250, "OK").enhanced is None


def test_connection_fault_is_a_soft_unreachable_retry() -> None:
    outcome = connection_fault("ConnectionRefusedError: refused")
    assert outcome == Outcome(Verdict.DEFERRED, None, FailureType.SOFT, R.UNREACHABLE,
                              "ConnectionRefusedError: refused")
    assert outcome.text == "ConnectionRefusedError: refused"


@pytest.mark.parametrize(("code", "text", "failure_type", "reason"), [
    (550, "5.1.1 <x@example.org>: Recipient address rejected: User unknown",
     FailureType.HARD, R.USER_UNKNOWN),
    (452, "4.2.2 Mailbox full", FailureType.SOFT, R.MAILBOX_FULL),
    (552, "5.2.2 Mailbox full, quota exceeded", FailureType.SOFT, R.MAILBOX_FULL),
    (421, "4.7.0 Try again later, closing connection", FailureType.SOFT, None),
    (451, "4.3.0 Temporary local problem", FailureType.SOFT, None),
])
def test_synchronous_replies_through_the_shipped_rules(
    code: int, text: str, failure_type: FailureType, reason: R | None,
) -> None:
    verdict = qualify_smtp_reply(code, text, default_rules())
    assert verdict.failure_type is failure_type
    if reason is not None:
        assert verdict.reason is reason


def test_reason_labels() -> None:
    assert R.USER_UNKNOWN.label == "user unknown"
    assert R.QUARANTINE.label == "quarantine"
