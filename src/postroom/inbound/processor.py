"""Bounce processing: stored mail → parse → attribute → qualify → apply, one bounce per commit.

Attribution (Mailman's order): the signed VERP token in the bounce's envelope recipient (or the
Delivered-To / X-Original-To / To headers that carry it), then the returned Message-ID, which
carries the log id and a MAC over it. What each kind of evidence may do:

- a VERP token names the message and was the message's own return path: a report about the
  log's address, or one that names nobody, is applied;
- a Message-ID with a valid MAC names the message, but any recipient can quote it: only a report
  that names the log's own address is applied, never one that names nobody;
- a Message-ID of the form before issue 12 (a salt shared by the whole delivery) can be derived
  by any recipient of the delivery: it attributes the report (kept against the log) but is
  never applied.

A token that does not verify is never applied, and a report about an address the log was not
sent to changes nothing. Nor does one that arrives more than the attribution window (7 days,
DESIGN.md §8) after the message was sent: the address may have changed hands since.
Unattributed bounces, and mail that is no report Postroom recognizes, are kept (states
`unattributed`, `unrecognized`) for a person to look at; nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from postroom.bounces.model import BouncedRecipient, BounceKind, ParsedBounce
from postroom.bounces.rules import Qualification, Rule, qualify_recipient
from postroom.compose.tokens import message_id_log, verp_log_id
from postroom.domain.models import DeliveryLog
from postroom.domain.outcomes import FailureType
from postroom.domain.states import BounceState

__all__ = ["Attribution", "BounceOutcome", "ProcessSummary", "attribute", "bounce_state",
           "decide"]

# Message-IDs written before issue 12: `<log.delivery.salt@domain>`, one salt per delivery.
_LEGACY_MESSAGE_ID = re.compile(r"(?<![\w.])(\d{1,18})\.(\d{1,18})\.([0-9a-f]{16})@")
MAX_LOG_ID = 2**31 - 1  # ids are SQL INTEGERs: a larger number names no log
VERP = "verp"
MESSAGE_ID = "message-id"
LEGACY_MESSAGE_ID = "message-id-old"
_FAILURE_KINDS = (BounceKind.DSN, BounceKind.HEURISTIC)


@dataclass(frozen=True, slots=True)
class Attribution:
    log_id: int
    by: str  # verp | message-id | message-id-old


@dataclass(frozen=True, slots=True)
class BounceOutcome:
    """What one bounced recipient means, and whether it may change anything."""

    recipient: BouncedRecipient
    qualification: Qualification
    log: DeliveryLog | None
    attributed_by: str
    applies: bool  # attributed, about the address the log was sent to, in the window
    fails_log: bool  # a failure report: the `sent` log becomes `failed`
    late: bool = False  # about the log's address, but after the attribution window
    withheld: str = ""  # why an attributed recipient is not applied (late, names nobody, ...)

    @property
    def attributed(self) -> bool:
        """Whose it is is known (applied, or kept against the log without applying it)."""
        return self.applies or bool(self.withheld)


def bounce_state(kind: str, outcomes: Sequence[BounceOutcome]) -> BounceState:
    """Where a processed bounce rests: `unrecognized` (no report Postroom can read, kept for a
    person even when it carries a valid token), `processed` (attributed), `unattributed`."""
    if kind == BounceKind.UNKNOWN:
        return BounceState.UNRECOGNIZED
    return (BounceState.PROCESSED if any(o.attributed for o in outcomes)
            else BounceState.UNATTRIBUTED)


@dataclass
class ProcessSummary:
    processed: int = 0  # bounces processed by this run, whatever their state
    attributed: int = 0  # state `processed`
    unattributed: int = 0
    unrecognized: int = 0
    late: int = 0  # recipients attributed after the window, not applied
    failures_applied: int = 0
    ignored: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    failed: int = 0  # bounces whose processing raised: set aside as `failed`, with the reason
    errors: list[tuple[int, str]] = field(default_factory=list)  # (bounce id, reason)

    def to_json(self) -> dict[str, object]:
        return {"processed": self.processed, "attributed": self.attributed,
                "unattributed": self.unattributed, "unrecognized": self.unrecognized,
                "late": self.late, "failures_applied": self.failures_applied,
                "ignored": self.ignored, "kinds": self.kinds, "failed": self.failed,
                "errors": [{"bounce": i, "reason": r} for i, r in self.errors]}


def _verp_candidates(envelope_to: str, parsed: ParsedBounce, headers: dict[str, str]) -> list[
    str
]:
    candidates = [a for a in envelope_to.split(",") if a]
    for name in ("delivered-to", "x-original-to", "to"):
        if headers.get(name):
            candidates.append(headers[name])
    return candidates


def attribute(*, envelope_to: str, parsed: ParsedBounce, headers: dict[str, str],
              secret: bytes, salt_of: Callable[[int], tuple[int, str] | None]) -> (
        Attribution | None):
    """Which delivery log a bounce is about, or None.

    `salt_of(log_id)` gives (delivery id, salt) of a log, to check a returned Message-ID.
    """
    for candidate in _verp_candidates(envelope_to, parsed, headers):
        for address in re.findall(r"[^\s<>,;\"]+@[^\s<>,;\"]+", candidate):
            log_id = verp_log_id(secret, address)
            if log_id is not None:
                return Attribution(log_id, VERP)
    returned = [parsed.original_message_id or ""]
    returned += [value for name, value in parsed.original_headers if name.lower() == "message-id"]
    for value in returned:
        log_id = message_id_log(secret, value[:1000])
        if log_id is not None:
            return Attribution(log_id, MESSAGE_ID)
    for value in returned:
        for match in _LEGACY_MESSAGE_ID.finditer(value[:1000]):
            log_id, delivery_id, salt = int(match[1]), int(match[2]), match[3]
            if log_id <= MAX_LOG_ID and salt_of(log_id) == (delivery_id, salt):
                return Attribution(log_id, LEGACY_MESSAGE_ID)
    return None


def _same_address(reported: str | None, sent_to: str) -> bool:
    if reported is None:
        return True  # the report names nobody (some ARF): it is about the attributed message
    a_local, _, a_domain = reported.strip().strip("<>").rpartition("@")
    b_local, _, b_domain = sent_to.rpartition("@")
    if a_domain.lower() != b_domain.lower():
        return False
    return a_local == b_local or a_local.lower() == b_local.lower()


def _withheld(attributed_by: str, reported: str | None) -> str:
    """Why a report about the log's address may not be applied on this evidence, or ""."""
    if attributed_by == LEGACY_MESSAGE_ID:
        return "old message-id: any recipient of the delivery can derive it"
    if attributed_by != VERP and reported is None:
        return "names nobody: a message-id alone does not say whose address it is about"
    return ""


def _in_window(log: DeliveryLog, received_at: datetime, window: timedelta) -> bool:
    """Whether a bounce received at `received_at` is still about this log's address. A log
    with no sending time (never reached `sent`) has nothing to measure from: in."""
    return log.sent_at is None or received_at - log.sent_at <= window


def decide(parsed: ParsedBounce, rules: Sequence[Rule], log: DeliveryLog | None,
           attributed_by: str, *, received_at: datetime,
           window: timedelta = timedelta(days=7)) -> list[BounceOutcome]:
    """Qualify every recipient of a bounce and say which ones may be applied (pure)."""
    recipients = parsed.recipients or (
        BouncedRecipient(None, None, None, parsed.subject, None),)
    in_window = log is not None and _in_window(log, received_at, window)
    outcomes: list[BounceOutcome] = []
    for recipient in recipients:
        verdict = qualify_recipient(rules, parsed, recipient)
        about_log = log is not None and _same_address(recipient.recipient, log.email)
        withheld = ""
        if about_log:
            withheld = "late" if not in_window else _withheld(attributed_by,
                                                               recipient.recipient)
        applies = about_log and not withheld
        action = (recipient.action or "failed").strip().lower()
        fails = (applies and parsed.kind in _FAILURE_KINDS and action == "failed"
                 and verdict.failure_type in (FailureType.HARD, FailureType.SOFT))
        outcomes.append(BounceOutcome(recipient, verdict, log, attributed_by, applies, fails,
                                      late=withheld == "late", withheld=withheld))
    return outcomes


