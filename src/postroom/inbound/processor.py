"""Bounce processing: stored mail → parse → attribute → qualify → apply, one bounce per commit.

Attribution (Mailman's order): the signed VERP token in the bounce's envelope recipient (or the
Delivered-To / X-Original-To / To headers that carry it), then the returned Message-ID, which
carries the log id and the delivery's unguessable salt. A token that does not verify is never
applied, and a report about an address the log was not sent to changes nothing. Unattributed
bounces are kept (state `unattributed`) for a person to look at; nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from postroom.bounces.model import BouncedRecipient, BounceKind, ParsedBounce
from postroom.bounces.rules import Qualification, Rule, qualify_recipient
from postroom.compose.tokens import verp_log_id
from postroom.domain.models import DeliveryLog
from postroom.domain.outcomes import FailureType

__all__ = ["Attribution", "BounceOutcome", "ProcessSummary", "attribute", "decide"]

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
    applies: bool  # attributed, and about the address the log was sent to
    fails_log: bool  # a failure report: the `sent` log becomes `failed`


@dataclass
class ProcessSummary:
    processed: int = 0
    attributed: int = 0
    unattributed: int = 0
    failures_applied: int = 0
    ignored: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"processed": self.processed, "attributed": self.attributed,
                "unattributed": self.unattributed, "failures_applied": self.failures_applied,
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


def decide(parsed: ParsedBounce, rules: Sequence[Rule], log: DeliveryLog | None,
           attributed_by: str) -> list[BounceOutcome]:
    """Qualify every recipient of a bounce and say which ones may be applied (pure)."""
    recipients = parsed.recipients or (
        BouncedRecipient(None, None, None, parsed.subject, None),)
    outcomes: list[BounceOutcome] = []
    for recipient in recipients:
        verdict = qualify_recipient(rules, parsed, recipient)
        applies = log is not None and _same_address(recipient.recipient, log.email)
        action = (recipient.action or "failed").strip().lower()
        fails = (applies and parsed.kind in _FAILURE_KINDS and action == "failed"
                 and verdict.failure_type in (FailureType.HARD, FailureType.SOFT))
        outcomes.append(BounceOutcome(recipient, verdict, log, attributed_by, applies, fails))
    return outcomes


