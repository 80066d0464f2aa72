"""What happened to a message: one vocabulary of values shared by sending and reporting.

A refused recipient is a value (`Outcome`), not an exception. The first-cut qualification of a
synchronous SMTP reply lives here too; the rule table of DESIGN.md §5 replaces it later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "FailureReason",
    "FailureType",
    "Outcome",
    "SmtpReply",
    "Verdict",
    "connection_fault",
    "qualify_reply",
]


class FailureType(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    IGNORED = "ignored"
    UNDEFINED = "undefined"


class FailureReason(IntEnum):
    """Failure reason codes, numbered as in the reference platform."""

    UNDEFINED = 0
    USER_UNKNOWN = 1
    INVALID_DOMAIN = 2
    UNREACHABLE = 3
    ACCOUNT_DISABLED = 4
    MAILBOX_FULL = 5
    NOT_SPECIFIED = 7
    DENYLISTED = 8
    QUARANTINE = 9
    DOUBLE = 10
    REFUSED = 20
    ERROR_IGNORED = 25
    OPTED_OUT = 30
    INVALID = 31

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


class Verdict(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"  # temporary: try again later
    FAILED = "failed"  # permanent for this message


@dataclass(frozen=True, slots=True)
class SmtpReply:
    code: int
    text: str

    @property
    def enhanced(self) -> str | None:
        match = _ENHANCED.match(self.text)
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reply: SmtpReply | None = None
    failure_type: FailureType | None = None
    reason: FailureReason | None = None
    detail: str = ""

    @property
    def text(self) -> str:
        return str(self.reply) if self.reply else self.detail


_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
# Enhanced status codes (RFC 3463), without the class digit; they win over the reply's text.
_BY_STATUS: dict[str, FailureReason] = {
    "1.1": FailureReason.USER_UNKNOWN,
    "1.6": FailureReason.USER_UNKNOWN,
    "1.2": FailureReason.INVALID_DOMAIN,
    "2.1": FailureReason.ACCOUNT_DISABLED,
    "2.2": FailureReason.MAILBOX_FULL,
    "4.1": FailureReason.UNREACHABLE,
    "4.2": FailureReason.UNREACHABLE,
    "4.4": FailureReason.UNREACHABLE,
    "4.7": FailureReason.UNREACHABLE,
}
_PATTERNS: tuple[tuple[re.Pattern[str], FailureReason], ...] = (
    (re.compile(r"user unknown|no such user|unknown user|does not exist|unknown recipient",
                re.I), FailureReason.USER_UNKNOWN),
    (re.compile(r"domain not found|unrouteable|no mx|host not found", re.I),
     FailureReason.INVALID_DOMAIN),
    (re.compile(r"mailbox full|over quota|quota exceeded|insufficient storage", re.I),
     FailureReason.MAILBOX_FULL),
    (re.compile(r"disabled|inactive|suspended", re.I), FailureReason.ACCOUNT_DISABLED),
    (re.compile(r"spam|blocked|blacklist|denylist|policy|rejected for", re.I),
     FailureReason.REFUSED),
)
# Failures that are temporary by nature even when the reply is 5xx (DESIGN.md §5: soft).
_SOFT_REASONS = frozenset({FailureReason.MAILBOX_FULL})


def _reason_for(reply: SmtpReply) -> FailureReason:
    enhanced = reply.enhanced
    if enhanced is not None:
        detail = enhanced.split(".", 1)[1]
        if detail in _BY_STATUS:
            return _BY_STATUS[detail]
        if detail.startswith("7."):
            return FailureReason.REFUSED
    for pattern, reason in _PATTERNS:
        if pattern.search(reply.text):
            return reason
    return FailureReason.UNDEFINED


def qualify_reply(reply: SmtpReply) -> Outcome:
    """Qualify a reply to one message's SMTP transaction (the last reply it got)."""
    if 200 <= reply.code < 300:
        return Outcome(Verdict.SENT, reply)
    reason = _reason_for(reply)
    if 400 <= reply.code < 500 or reason in _SOFT_REASONS:
        if reason is FailureReason.UNDEFINED:
            reason = FailureReason.UNREACHABLE
        return Outcome(Verdict.DEFERRED, reply, FailureType.SOFT, reason)
    return Outcome(Verdict.FAILED, reply, FailureType.HARD, reason)


def connection_fault(detail: str) -> Outcome:
    """A connection that could not be opened, dropped, or timed out: try again later."""
    return Outcome(Verdict.DEFERRED, None, FailureType.SOFT, FailureReason.UNREACHABLE, detail)
