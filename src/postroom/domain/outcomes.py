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
_PATTERNS: tuple[tuple[re.Pattern[str], FailureReason], ...] = (
    (re.compile(r"\b5\.1\.[16]\b|user unknown|no such user|unknown user|does not exist", re.I),
     FailureReason.USER_UNKNOWN),
    (re.compile(r"\b[45]\.1\.[28]\b|domain not found|unrouteable|no mx", re.I),
     FailureReason.INVALID_DOMAIN),
    (re.compile(r"\b[45]\.2\.2\b|mailbox full|over quota|quota exceeded", re.I),
     FailureReason.MAILBOX_FULL),
    (re.compile(r"\b[45]\.2\.1\b|disabled|inactive|suspended", re.I),
     FailureReason.ACCOUNT_DISABLED),
    (re.compile(r"\b[45]\.7\.\d+\b|spam|blocked|blacklist|denylist|policy|rejected for", re.I),
     FailureReason.REFUSED),
)


def _reason_for(text: str) -> FailureReason:
    for pattern, reason in _PATTERNS:
        if pattern.search(text):
            return reason
    return FailureReason.UNDEFINED


def qualify_reply(reply: SmtpReply) -> Outcome:
    """Qualify a reply to one message's SMTP transaction (the last reply it got)."""
    if 200 <= reply.code < 300:
        return Outcome(Verdict.SENT, reply)
    if 400 <= reply.code < 500:
        reason = _reason_for(reply.text)
        if reason is FailureReason.UNDEFINED:
            reason = FailureReason.UNREACHABLE
        return Outcome(Verdict.DEFERRED, reply, FailureType.SOFT, reason)
    return Outcome(Verdict.FAILED, reply, FailureType.HARD, _reason_for(reply.text))


def connection_fault(detail: str) -> Outcome:
    """A connection that could not be opened, dropped, or timed out: try again later."""
    return Outcome(Verdict.DEFERRED, None, FailureType.SOFT, FailureReason.UNREACHABLE, detail)
