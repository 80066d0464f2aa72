"""Qualification rules: an ordered table of (text pattern and/or status prefix) → type, reason.

DESIGN.md §5: one table serves synchronous SMTP replies and asynchronous bounces alike, and the
first rule that matches wins. The table is data (`Rule` values) so that the storage layer can
persist it, operators can edit it, and `postroom rules test TEXT` can show which rule fired.
`default_rules()` is the built-in set; its order is the policy:

1. feedback reports and success notices;
2. specific wording (mailbox full, account disabled, moved, a refused sender, user unknown,
   unknown domain, refusals by relaying/authentication/reputation/content/policy, expiry,
   network and system errors) — the reply text says more than a generic status code. "User
   unknown" is hard only when nothing contradicts it: said at the end of DATA, or under a
   policy status (x.7.x, x.2.0), it is a filter hiding behind that wording and is refused;
3. RFC 3463 enhanced status codes by prefix;
4. weak, generic wording ("rejected", "not accepted", "mailbox unavailable");
5. the class of the status code: a 4.x.x report that gave up is "unreachable";
6. (in `qualify`, not a rule) a bounce's failure no rule explains is soft, reason 0, "to
   qualify".

Types follow DESIGN.md §5 and the labelled corpus: only user unknown (and moved) and spam
complaints are hard; refusals, unknown domains and disabled accounts are soft, so that five
significant errors in a row — not one — quarantine an address.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from postroom.bounces._default_rules import DEFAULT_RULES
from postroom.bounces._text import enhanced_status
from postroom.bounces.model import BouncedRecipient, BounceKind, ParsedBounce
from postroom.domain.outcomes import FailureReason, FailureType

__all__ = [
    "Qualification",
    "Rule",
    "default_rules",
    "qualify",
    "qualify_bounce",
    "qualify_recipient",
    "qualify_smtp_reply",
    "status_matches",
]

MAX_QUALIFIED = 4000  # characters of a text the rules look at: the reply is at its start
H, S, IGN, U = FailureType.HARD, FailureType.SOFT, FailureType.IGNORED, FailureType.UNDEFINED
R = FailureReason


@dataclass(frozen=True, slots=True)
class Rule:
    """One qualification rule. With both a pattern and a status, both must match.

    `status` is an RFC 3463 prefix compared field by field: `"5.1.1"` matches only 5.1.1,
    `"4.2."` any 4.2.x, `"x.2.2"` 4.2.2 and 5.2.2 alike, `"4."` any 4.x.x.
    """

    id: str
    pattern: re.Pattern[str] | None
    status: str | None
    failure_type: FailureType
    reason: FailureReason
    description: str

    def matches(self, *, status: str | None, text: str) -> bool:
        if self.pattern is None and self.status is None:
            return False
        if self.status is not None and (status is None
                                        or not status_matches(self.status, status)):
            return False
        return self.pattern is None or self.pattern.search(text) is not None


@dataclass(frozen=True, slots=True)
class Qualification:
    """The verdict for one failure: its type, its reason, and the rule that decided."""

    failure_type: FailureType
    reason: FailureReason
    rule_id: str | None


def status_matches(prefix: str, status: str) -> bool:
    """Whether an enhanced status code falls under a rule's prefix (see `Rule`)."""
    wanted = prefix.strip().split(".")
    if wanted[-1] == "":
        wanted = wanted[:-1]
    actual = status.strip().split(".")
    if len(wanted) > len(actual) or (len(wanted) == 3 and len(actual) != 3):
        return False
    return all(w in ("x", "X", a) for w, a in zip(wanted, actual, strict=False))


def _rule(rule_id: str, failure_type: FailureType, reason: FailureReason, description: str,
          pattern: str | None = None, status: str | None = None) -> Rule:
    compiled = re.compile(pattern, re.I) if pattern is not None else None
    return Rule(rule_id, compiled, status, failure_type, reason, description)


def default_rules() -> tuple[Rule, ...]:
    """The built-in rule set, in order. A fresh tuple of immutable rules on every call."""
    return tuple(_rule(*spec) for spec in DEFAULT_RULES)


_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def _effective_status(status: str | None, text: str) -> str | None:
    """The status to match: a generic one (x.0.0, or none) gives way to a more specific
    enhanced code of the same class quoted in the text (`550 5.1.1 ...`). A status that is not
    an RFC 3463 code (`9.1.1`, `5.1`) is no evidence: the text decides."""
    if status is not None and _STATUS.fullmatch(status.strip()) is None:
        status = None
    if status is not None and not status.endswith(".0.0"):
        return status
    quoted = enhanced_status(text)
    if quoted is not None and (status is None or quoted[0] == status[0]):
        return quoted
    return status


_FAILURE_KINDS = frozenset({BounceKind.DSN, BounceKind.HEURISTIC})


def qualify(rules: Sequence[Rule], *, status: str | None, text: str,
            kind: BounceKind | None = None) -> Qualification:
    """Qualify one failure: the first matching rule wins.

    Auto-replies and success notices are ignored (25) whatever they say. A feedback report's
    text is its "feedback-type: ..." line: the feedback rules decide (an authentication-failure
    report is not the recipient's complaint), and without one it is a spam complaint
    (denylisted, hard). A delay is temporary by definition: never hard, and unreachable when
    no rule explains it.

    No rule matched: the reason is "not defined" (0) and no rule id is given, so the text is
    kept "to qualify". The type then follows the class of the evidence (ADR 0028): a bounce
    that reports a failed delivery (a DSN, a non-standard bounce) that no phrase and no status
    explains is soft. Only user unknown (and moved) and complaints are hard, and only on
    positive evidence; an unexplained failure counts towards the five soft errors that
    quarantine an address instead of quarantining it at once or changing nothing. Without a
    bounce (a bare text, `rules test`, a synchronous reply: see `qualify_smtp_reply`):
    undefined.
    """
    if kind in (BounceKind.AUTOREPLY, BounceKind.SUCCESS):
        rule_id = "autoreply" if kind is BounceKind.AUTOREPLY else "success"
        return Qualification(IGN, R.ERROR_IGNORED, rule_id)
    text = (text or "")[:MAX_QUALIFIED]
    effective = None if kind is BounceKind.ARF else _effective_status(status, text)
    found = next((rule for rule in rules if rule.matches(status=effective, text=text)), None)
    if kind is BounceKind.ARF and found is None:
        return Qualification(H, R.DENYLISTED, "feedback")
    if found is not None:
        result = Qualification(found.failure_type, found.reason, found.id)
    elif kind in _FAILURE_KINDS:
        result = Qualification(S, R.UNDEFINED, None)  # class of the evidence: see docstring
    else:
        result = Qualification(U, R.UNDEFINED, None)
    if kind is BounceKind.DELAY:
        if result.failure_type is U:
            return Qualification(S, R.UNREACHABLE, result.rule_id)
        if result.failure_type is H:
            return Qualification(S, result.reason, result.rule_id)
    return result


def qualify_smtp_reply(code: int, text: str,
                       rules: Sequence[Rule] | None = None) -> Qualification:
    """Qualify a synchronous SMTP reply with the same rules as bounces.

    The enhanced status code may sit anywhere in the text. A 4xx reply is temporary, so never
    hard; without a more specific rule it is "unreachable". A 5xx without a rule is undefined
    (DESIGN.md §5, reason 0): the message fails at once, the text is kept "to qualify", and
    the address is left alone until a rule says what it means. (A bounce with the same text is
    soft, see `qualify`: a soft reply would be retried, and RFC 5321 says a 5xx is not to be
    repeated; a bounce decides no retry, only the address's error count.) A 2xx is not a
    failure: ignored.
    """
    if 200 <= code < 300:
        return Qualification(IGN, R.ERROR_IGNORED, None)
    table = default_rules() if rules is None else rules
    status = enhanced_status(text)
    if status is not None and status[0] != str(code)[0]:
        status = f"{str(code)[0]}.0.0"  # "550 ... 4.2.2" is inconsistent: trust the reply code
    found = qualify(table, status=status, text=text)
    temporary = 400 <= code < 500
    if found.failure_type is U and temporary:
        return Qualification(S, R.UNREACHABLE, found.rule_id)
    if temporary and found.failure_type is H:
        return Qualification(S, found.reason, found.rule_id)
    return found


_ACTION_KINDS = {"delayed": BounceKind.DELAY, "delivered": BounceKind.SUCCESS,
                 "relayed": BounceKind.SUCCESS, "expanded": BounceKind.SUCCESS,
                 "deliverable": BounceKind.SUCCESS}


def qualify_recipient(rules: Sequence[Rule], bounce: ParsedBounce,
                      recipient: BouncedRecipient) -> Qualification:
    """Qualify one recipient of a parsed bounce; its DSN Action refines the bounce's kind
    (a DSN may report one recipient failed and another delayed)."""
    kind = _ACTION_KINDS.get((recipient.action or "").strip().lower(), bounce.kind)
    return qualify(rules, status=recipient.status, text=recipient.diagnostic, kind=kind)


def qualify_bounce(rules: Sequence[Rule],
                   bounce: ParsedBounce) -> tuple[tuple[BouncedRecipient, Qualification], ...]:
    """Every recipient of a bounce with its qualification, in the bounce's order."""
    return tuple((r, qualify_recipient(rules, bounce, r)) for r in bounce.recipients)
