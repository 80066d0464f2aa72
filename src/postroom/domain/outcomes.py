"""What happened to a message: one vocabulary of values shared by sending and reporting.

A refused recipient is a value (`Outcome`), not an exception. Replies are qualified (type,
reason) by the rules of `postroom.bounces.rules`, applied in `delivery.plan`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "ARCHIVE_RELAY_FAULT",
    "RELAY_FAULT",
    "FailureReason",
    "FailureType",
    "Fault",
    "Outcome",
    "SmtpReply",
    "Verdict",
    "connection_fault",
    "no_smtputf8",
    "reply_outcome",
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


class Fault(StrEnum):
    """Why no SMTP session could be opened with a host: a fault of that host (or of our
    settings for it), never of a recipient. Through the relay, a relay-level fault."""

    CONNECT = "connect"  # refused, unreachable, timed out while connecting
    SESSION = "session"  # the greeting, EHLO or STARTTLS command refused
    TLS = "tls"  # STARTTLS not offered, or the handshake or certificate failed
    AUTH = "auth"  # the credentials refused (535 ...), or no usable AUTH offered

    @property
    def label(self) -> str:
        return {"connect": "the relay could not be reached",
                "session": "the relay refused the session",
                "tls": "TLS with the relay failed",
                "auth": "the relay refused the credentials"}[self.value]


# How a message (its log's detail) or an archive copy (its reply) held back by a relay-level
# fault says so; storage finds them by it (`retry_now`, `relay_waiting`).
RELAY_FAULT = "relay fault: "
ARCHIVE_RELAY_FAULT = "archive relay fault: "


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
    to_qualify: bool = False  # no rule matched the reply: keep its text for an operator
    # The connection failed after the whole message was handed over and before the reply to
    # DATA: the relay may have accepted it.
    in_doubt: bool = False
    fault: Fault | None = None  # no session could be opened: nothing was handed over

    @property
    def text(self) -> str:
        return str(self.reply) if self.reply else self.detail


_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def reply_outcome(reply: SmtpReply) -> Outcome:
    """A first look at a reply by its class: 2xx sent, 4xx try again, 5xx failed.

    Type and reason are left open: the qualification rules (`postroom.bounces.rules`, applied
    by the delivery plan) decide them, and may turn a 5xx into a soft, retried failure.
    """
    if 200 <= reply.code < 300:
        return Outcome(Verdict.SENT, reply)
    if 400 <= reply.code < 500:
        return Outcome(Verdict.DEFERRED, reply, FailureType.SOFT)
    return Outcome(Verdict.FAILED, reply, FailureType.HARD)


def connection_fault(detail: str, *, in_doubt: bool = False,
                     fault: Fault | None = None) -> Outcome:
    """A connection that could not be opened (`fault` says why), dropped, or timed out: try
    again later."""
    return Outcome(Verdict.DEFERRED, None, FailureType.SOFT, FailureReason.UNREACHABLE, detail,
                   in_doubt=in_doubt, fault=fault)


def no_smtputf8() -> Outcome:
    """A non-ASCII local part the relay cannot carry (no SMTPUTF8): the message fails, and the
    failure is ignored for the address, which is not at fault (another relay would take it)."""
    return Outcome(Verdict.FAILED, None, FailureType.IGNORED, FailureReason.REFUSED,
                   "the address has a non-ASCII local part and the relay does not offer "
                   "SMTPUTF8")
