"""Bounce processing: stored mail → parse → attribute → qualify → apply, one bounce per commit.

Attribution (Mailman's order): the signed VERP token in the bounce's envelope recipient (or the
Delivered-To / X-Original-To / To headers that carry it), then the returned Message-ID, which
carries the log id and the delivery's unguessable salt. A token that does not verify is never
applied, and a report about an address the log was not sent to changes nothing. Nor does one
that arrives more than the attribution window (7 days, DESIGN.md §8) after the message was
sent: the address may have changed hands since. Unattributed bounces, and mail that is no
report Postroom recognizes, are kept (states `unattributed`, `unrecognized`) for a person to
look at; nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from postroom.bounces.model import BouncedRecipient, BounceKind, ParsedBounce
from postroom.bounces.rules import Qualification, Rule, qualify_recipient
from postroom.compose.tokens import verp_log_id
from postroom.domain.models import DeliveryLog
from postroom.domain.outcomes import FailureType

__all__ = ["Attribution", "BounceOutcome", "ProcessSummary", "attribute", "bounce_state",
           "decide"]

_MESSAGE_ID = re.compile(r"<?(\d+)\.(\d+)\.([0-9a-f]{16})@[^>]*>?")
_FAILURE_KINDS = (BounceKind.DSN, BounceKind.HEURISTIC)


@dataclass(frozen=True, slots=True)
class Attribution:
    log_id: int
    by: str  # verp | message-id


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

    @property
    def attributed(self) -> bool:
        """Whose it is is known (applied, or too late to apply)."""
        return self.applies or self.late


def bounce_state(kind: str, outcomes: Sequence[BounceOutcome]) -> str:
    """Where a processed bounce rests: `unrecognized` (no report Postroom can read, kept for a
    person even when it carries a valid token), `processed` (attributed), `unattributed`."""
    if kind == BounceKind.UNKNOWN:
        return "unrecognized"
    return "processed" if any(o.attributed for o in outcomes) else "unattributed"


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

    def to_json(self) -> dict[str, object]:
        return {"processed": self.processed, "attributed": self.attributed,
                "unattributed": self.unattributed, "unrecognized": self.unrecognized,
                "late": self.late, "failures_applied": self.failures_applied,
                "ignored": self.ignored, "kinds": self.kinds}


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
                return Attribution(log_id, "verp")
    returned = [parsed.original_message_id or ""]
    returned += [value for name, value in parsed.original_headers if name.lower() == "message-id"]
    for value in returned:
        match = _MESSAGE_ID.search(value or "")
        if match is None:
            continue
        log_id, delivery_id, salt = int(match[1]), int(match[2]), match[3]
        if salt_of(log_id) == (delivery_id, salt):
            return Attribution(log_id, "message-id")
    return None


def _same_address(reported: str | None, sent_to: str) -> bool:
    if reported is None:
        return True  # the report names nobody (some ARF): it is about the attributed message
    a_local, _, a_domain = reported.strip().strip("<>").rpartition("@")
    b_local, _, b_domain = sent_to.rpartition("@")
    if a_domain.lower() != b_domain.lower():
        return False
    return a_local == b_local or a_local.lower() == b_local.lower()


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
        applies = about_log and in_window
        action = (recipient.action or "failed").strip().lower()
        fails = (applies and parsed.kind in _FAILURE_KINDS and action == "failed"
                 and verdict.failure_type in (FailureType.HARD, FailureType.SOFT))
        outcomes.append(BounceOutcome(recipient, verdict, log, attributed_by, applies, fails,
                                      late=about_log and not in_window))
    return outcomes


