"""Bounce operations: intake from any source, processing, rules, quarantine (issue 4).

Every message is stored before it is processed (and removed from its source only after it is
stored), and each bounce is applied in one transaction that also marks it processed: a crash at
any point loses nothing and counts nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from postroom.bounces.model import ParsedBounce
from postroom.bounces.normalize import normalize_text
from postroom.bounces.parse import parse_bounce
from postroom.bounces.rules import Rule, qualify
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.states import BounceState
from postroom.errors import InputError, NotFoundError
from postroom.inbound.processor import ProcessSummary, attribute, bounce_state, decide
from postroom.inbound.sources import InboundMessage
from postroom.storage.inbound import RuleRow, StoredBounce
from postroom.storage.sql import SqlStore

__all__ = ["BounceService", "FetchSummary"]

MAX_LIST = 100_000


@dataclass
class FetchSummary:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0  # not taken in (too large, unreadable): left at the source
    errors: list[str] = field(default_factory=list)  # why, per refused message

    def to_json(self) -> dict[str, object]:
        return {"received": self.received, "stored": self.stored,
                "duplicates": self.duplicates, "refused": self.refused,
                "errors": self.errors}


def rule_from_row(row: RuleRow) -> Rule:
    return Rule(row.id, re.compile(row.pattern, re.I) if row.pattern else None,
                row.status or None, FailureType(row.failure_type), FailureReason(row.reason),
                row.description)


def rule_to_row(rule: Rule, position: int, *, builtin: bool) -> RuleRow:
    return RuleRow(rule.id, position, rule.pattern.pattern if rule.pattern else "",
                   rule.status or "", str(rule.failure_type), int(rule.reason),
                   rule.description, builtin)


def _headers(data: bytes) -> dict[str, str]:
    try:
        parsed = BytesHeaderParser(policy=compat32).parsebytes(data[:65536])
        return {k.lower(): str(v) for k, v in parsed.items()}
    except Exception:  # hostile headers: attribution then relies on the rest
        return {}


class BounceService:
    def __init__(self, store: SqlStore, *, secret: bytes, clock: Callable[[], datetime],
                 attribution_window: timedelta = timedelta(days=7)):
        self.store = store
        self._secret = secret
        self._clock = clock
        self._window = attribution_window

    # -- intake -------------------------------------------------------------------------------

    def take(self, messages: Iterable[InboundMessage]) -> FetchSummary:
        """Store each message, then remove it from its source: nothing lost, nothing twice."""
        summary = FetchSummary()
        for message in messages:
            summary.received += 1
            if message.refused:
                summary.refused += 1
                summary.errors.append(message.refused)
                continue
            _, new = self.store.store_bounce(message.data, source=message.source,
                                             envelope_to=message.envelope_to, now=self._clock())
            summary.stored += new
            summary.duplicates += not new
            message.done()
        return summary

    def receive(self, data: bytes, envelope_to: str) -> None:
        """The SMTP receiver's store callback."""
        self.store.store_bounce(data, source="smtp", envelope_to=envelope_to, now=self._clock())

    # -- processing ---------------------------------------------------------------------------

    def _rules(self) -> list[Rule]:
        return [rule_from_row(row) for row in self.store.list_rules()]

    def _salt_of(self, log_id: int) -> tuple[int, str] | None:
        found = self.store.log_delivery_salt(log_id)
        return found

    def examine(self, data: bytes, envelope_to: str = "", *,
                received_at: datetime | None = None) -> tuple[ParsedBounce, list[Any]]:
        """Parse, attribute and qualify one message without changing anything; `received_at`
        (default: now) decides whether it came within the attribution window."""
        parsed = parse_bounce(data)
        attribution = attribute(envelope_to=envelope_to, parsed=parsed, headers=_headers(data),
                                secret=self._secret, salt_of=self._salt_of)
        log = None
        if attribution is not None:
            try:
                log = self.store.get_log(attribution.log_id)
            except NotFoundError:
                log = None
        return parsed, decide(parsed, self._rules(), log,
                              attribution.by if attribution and log else "",
                              received_at=received_at or self._clock(), window=self._window)

    def process(self, *, limit: int = 500, retry_failed: bool = False) -> ProcessSummary:
        """Process stored bounces that are still new, each in its own transaction.

        One raw message is held at a time. A bounce whose processing raises (a bug met on
        hostile input) is set aside as `failed` with its reason, and the rest go on; only a
        fault of the database itself stops the run. `retry_failed` first puts the bounces set
        aside earlier back to `new`.
        """
        if retry_failed:
            self.store.requeue_failed_bounces()
        summary = ProcessSummary()
        after = 0
        while True:
            ids = self.store.new_bounce_ids(after=after, limit=limit)
            for bounce_id in ids:
                stored = self.store.get_bounce(bounce_id)
                if stored is None or stored.state != BounceState.NEW:
                    continue  # another processor took it meanwhile
                try:
                    self._process_one(stored, summary)
                except Exception as exc:  # this message only: mark it, go on
                    reason = f"{type(exc).__name__}: {exc}"[:500]
                    if self.store.fail_bounce(stored.id, reason, self._clock()):
                        summary.failed += 1
                        summary.errors.append((stored.id, reason))
            if len(ids) < limit:
                return summary
            after = ids[-1]

    def _process_one(self, stored: StoredBounce, summary: ProcessSummary) -> None:
        parsed, outcomes = self.examine(stored.data, stored.envelope_to,
                                        received_at=stored.received_at)
        unqualified = [(normalize_text(o.recipient.diagnostic), o.recipient.diagnostic)
                       for o in outcomes
                       if o.qualification.rule_id is None and o.recipient.diagnostic]
        resting = bounce_state(parsed.kind, outcomes)
        applied = self.store.apply_bounce(stored.id, parsed.kind, outcomes, unqualified,
                                          self._clock(), state=resting)
        if applied is None:
            return  # another processor took it first: counted there
        summary.processed += 1
        summary.kinds[parsed.kind] = summary.kinds.get(parsed.kind, 0) + 1
        if resting is BounceState.PROCESSED:
            summary.attributed += 1
        elif resting is BounceState.UNATTRIBUTED:
            summary.unattributed += 1
        else:
            summary.unrecognized += 1
        summary.late += sum(1 for o in outcomes if o.late)
        summary.failures_applied += applied
        summary.ignored += sum(1 for o in outcomes if not o.fails_log)

    # -- what was received ----------------------------------------------------------------------

    def list_bounces(self, *, state: str | None = None, limit: int = 100) -> list[StoredBounce]:
        """Stored bounces, newest first (state: new, processed, unattributed, unrecognized,
        failed)."""
        if not 1 <= limit <= MAX_LIST:
            raise InputError(f"limit {limit}: give 1 to {MAX_LIST}")
        return self.store.list_bounces(state=state, limit=limit)

    def bounce_results_of(self, bounce_id: int) -> list[dict[str, Any]]:
        """What one bounce said about each recipient it names."""
        return self.store.bounce_results_of(bounce_id)

    def list_unqualified(self, limit: int = 50) -> list[dict[str, Any]]:
        """Texts no rule matched, most frequent first (add rules for them)."""
        if not 1 <= limit <= MAX_LIST:
            raise InputError(f"limit {limit}: give 1 to {MAX_LIST}")
        return self.store.list_unqualified(limit)

    # -- rules --------------------------------------------------------------------------------

    def rules(self) -> list[RuleRow]:
        """The qualification rules, in the order they are tried."""
        return self.store.list_rules()

    def delete_rule(self, rule_id: str) -> None:
        if not self.store.delete_rule(rule_id):
            raise NotFoundError(f"no rule {rule_id!r} (see `postroom rules list`)")

    def add_rule(self, *, rule_id: str, pattern: str, status: str, failure_type: str,
                 reason: int, description: str, position: int | None) -> RuleRow:
        row = self._checked(rule_id, pattern, status, failure_type, reason, description,
                            position)
        if any(r.id == rule_id for r in self.store.list_rules()):
            raise InputError(f"a rule {rule_id!r} exists already (use `rules edit`)")
        self.store.save_rule(row, new=True)
        return row

    def edit_rule(self, rule_id: str, **changes: Any) -> RuleRow:
        current = next((r for r in self.store.list_rules() if r.id == rule_id), None)
        if current is None:
            raise NotFoundError(f"no rule {rule_id!r} (see `postroom rules list`)")
        given = {k: v for k, v in changes.items() if v is not None}
        row = self._checked(
            rule_id, str(given.get("pattern", current.pattern)),
            str(given.get("status", current.status)),
            str(given.get("failure_type", current.failure_type)),
            int(given.get("reason", current.reason)),
            str(given.get("description", current.description)),
            int(given.get("position", current.position)))
        self.store.save_rule(row, new=False)
        return row

    def _checked(self, rule_id: str, pattern: str, status: str, failure_type: str, reason: int,
                 description: str, position: int | None) -> RuleRow:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", rule_id):
            raise InputError(f"rule id {rule_id!r}: use 1-64 letters, digits, - _ . :")
        if not pattern and not status:
            raise InputError("a rule needs a pattern, a status prefix, or both")
        try:
            re.compile(pattern, re.I)
        except re.error as exc:
            raise InputError(f"pattern {pattern!r} is not a valid regular expression: {exc}"
                             ) from None
        if status and not re.fullmatch(r"[245x]\.(\d{1,3}\.?(\d{1,3})?)?", status):
            raise InputError(f"status {status!r}: expected a prefix such as 5.1.1, 4.2. or 5.")
        try:
            kind, code = FailureType(failure_type), FailureReason(reason)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if position is None:
            position = max((r.position for r in self.store.list_rules()), default=0) + 10
        return RuleRow(rule_id, position, pattern, status, str(kind), int(code), description,
                       False)

    def test_rule(self, text: str, status: str | None = None) -> dict[str, Any]:
        verdict = qualify(self._rules(), status=status, text=text)
        return {"text": text, "status": status, "failure_type": verdict.failure_type,
                "reason": int(verdict.reason), "reason_label": verdict.reason.label,
                "rule": verdict.rule_id, "normalized": normalize_text(text)}
