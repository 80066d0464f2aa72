"""bounces.rules at its edges: reply-code boundaries, conflicting classes, the DSN Action,
feedback reports that carry a status, and malformed status fields. Every verdict is compared
whole (type, reason and the rule that decided), so a rule that fires for the wrong reason fails.
"""

from __future__ import annotations

import re

import pytest

from postroom.bounces import (
    BouncedRecipient,
    BounceKind,
    ParsedBounce,
    Qualification,
    Rule,
    default_rules,
    qualify,
    qualify_recipient,
    qualify_smtp_reply,
)
from postroom.bounces.rules import status_matches
from postroom.domain.outcomes import FailureReason, FailureType

H, S, IGN, U = FailureType.HARD, FailureType.SOFT, FailureType.IGNORED, FailureType.UNDEFINED
R = FailureReason
RULES = default_rules()
UNDECIDED = Rule("undecided", re.compile("nyaan", re.I), None, U, R.UNDEFINED,
                 "a rule that leaves the verdict open")


def test_every_default_rule_has_an_id_and_a_description() -> None:
    rules = default_rules()
    assert all(isinstance(rule.id, str) and rule.id for rule in rules)
    assert all(isinstance(rule.description, str) and rule.description for rule in rules)
    assert len({rule.id for rule in rules}) == len(rules)


def test_a_rule_with_neither_pattern_nor_status_never_matches() -> None:
    empty = Rule("empty", None, None, H, R.USER_UNKNOWN, "matches nothing")
    assert not empty.matches(status="5.1.1", text="user unknown")
    assert qualify((empty,), status="5.1.1", text="") == Qualification(U, R.UNDEFINED, None)


@pytest.mark.parametrize(
    ("prefix", "status", "matches"),
    [
        ("5.1.1", "5.1.1.1", False),  # a full code matches only a three-field status
        ("5.1.1", "5.1", False),  # a status shorter than the prefix
        ("x.1.1", "5.1.10", False),  # fields compare whole: 1 is not 10
        ("4.", "4.2.2", True),
        ("x.2.", "5.2.2", True),
        ("5.1.1", " 5.1.1 ", True),
    ],
)
def test_status_prefix_edges(prefix: str, status: str, matches: bool) -> None:
    assert status_matches(prefix, status) is matches


def test_kinds_that_are_never_failures_name_their_rule() -> None:
    for kind, rule_id in ((BounceKind.AUTOREPLY, "autoreply"), (BounceKind.SUCCESS, "success")):
        assert qualify(RULES, status="5.1.1", text="user unknown", kind=kind) == \
            Qualification(IGN, R.ERROR_IGNORED, rule_id)


def test_an_empty_text_is_matched_as_empty() -> None:
    only_empty = (Rule("empty-text", re.compile(r"^$"), None, S, R.REFUSED, "no text"),)
    assert qualify(only_empty, status=None, text="").rule_id == "empty-text"


def test_a_feedback_report_ignores_its_status() -> None:
    """ARF reports are decided by their feedback type, never by a status they carry."""
    by_status = (Rule("any-permanent", None, "5.", S, R.REFUSED, "status only"),)
    assert qualify(by_status, status="5.7.1", text="feedback-type: abuse",
                   kind=BounceKind.ARF) == Qualification(H, R.DENYLISTED, "feedback")
    assert qualify(RULES, status="5.1.1", text="feedback-type: abuse",
                   kind=BounceKind.ARF) == Qualification(H, R.DENYLISTED, "feedback-complaint")


def test_a_delay_keeps_the_rule_that_left_it_open() -> None:
    assert qualify((UNDECIDED,), status=None, text="Nyaan", kind=BounceKind.DELAY) == \
        Qualification(S, R.UNREACHABLE, "undecided")
    assert qualify(RULES, status="4.1.1", text="user unknown", kind=BounceKind.DELAY) == \
        Qualification(S, R.USER_UNKNOWN, "user-unknown-status")


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        # 2xx is not a failure, 3xx is not a final answer either but not "ignored"
        (200, "Nyaan", Qualification(IGN, R.ERROR_IGNORED, None)),
        (299, "Nyaan", Qualification(IGN, R.ERROR_IGNORED, None)),
        (300, "Nyaan", Qualification(U, R.UNDEFINED, None)),
        # 400..499 temporary: never hard; 500 and up permanent
        (400, "4.1.1 user unknown", Qualification(S, R.USER_UNKNOWN, "user-unknown-status")),
        (499, "4.1.1 user unknown", Qualification(S, R.USER_UNKNOWN, "user-unknown-status")),
        (500, "5.1.1 user unknown", Qualification(H, R.USER_UNKNOWN, "user-unknown-status")),
        (399, "5.1.1 user unknown", Qualification(H, R.USER_UNKNOWN, "user-unknown-status")),
        # the reply's class decides when the quoted enhanced code says the other one
        (450, "5.1.1 Requested action not taken",
         Qualification(S, R.UNREACHABLE, "status-temporary")),
        (455, "5.1.1 Requested action not taken",
         Qualification(S, R.UNREACHABLE, "status-temporary")),
        (450, "5.7.1 Nyaan", Qualification(S, R.UNREACHABLE, "status-temporary")),
        (550, "4.2.2 Requested action not taken", Qualification(U, R.UNDEFINED, None)),
        # no rule: a 5xx is final and undefined (to qualify, never retried), a 4xx soft
        (500, "Nyaan", Qualification(U, R.UNDEFINED, None)),
        (599, "Nyaan", Qualification(U, R.UNDEFINED, None)),
        (400, "Nyaan", Qualification(S, R.UNREACHABLE, None)),
        (499, "Nyaan", Qualification(S, R.UNREACHABLE, None)),
        (500, "4.2.2 Nyaan", Qualification(U, R.UNDEFINED, None)),
        (550, "5.2.2 Requested action not taken",
         Qualification(S, R.MAILBOX_FULL, "status-mailbox-full")),
    ],
)
def test_smtp_reply_boundaries(code: int, text: str, expected: Qualification) -> None:
    assert qualify_smtp_reply(code, text) == expected


def test_a_temporary_reply_keeps_the_rule_that_decided() -> None:
    assert qualify_smtp_reply(450, "Nyaan", (UNDECIDED,)) == \
        Qualification(S, R.UNREACHABLE, "undecided")
    assert qualify_smtp_reply(550, "Nyaan", (UNDECIDED,)) == \
        Qualification(U, R.UNDEFINED, "undecided")


def _bounce(kind: BounceKind, recipient: BouncedRecipient) -> ParsedBounce:
    return ParsedBounce(kind, (recipient,), None, (), None, "", "")


def test_the_dsn_action_refines_the_kind_whatever_its_spelling() -> None:
    delayed = BouncedRecipient("a@example.org", "4.1.1", " Delayed ", "User unknown", None)
    assert qualify_recipient(RULES, _bounce(BounceKind.DSN, delayed), delayed) == \
        Qualification(S, R.USER_UNKNOWN, "user-unknown-status")
    failed = BouncedRecipient("a@example.org", "4.1.1", "failed", "User unknown", None)
    assert qualify_recipient(RULES, _bounce(BounceKind.DSN, failed), failed) == \
        Qualification(H, R.USER_UNKNOWN, "user-unknown-status")
    for action in ("delivered", "RELAYED", "expanded", "deliverable"):
        done = BouncedRecipient("a@example.org", "5.1.1", action, "User unknown", None)
        assert qualify_recipient(RULES, _bounce(BounceKind.DSN, done), done) == \
            Qualification(IGN, R.ERROR_IGNORED, "success")


def test_without_an_action_the_bounce_kind_decides() -> None:
    quiet = BouncedRecipient("a@example.org", "5.1.1", None, "User unknown", None)
    assert qualify_recipient(RULES, _bounce(BounceKind.AUTOREPLY, quiet), quiet) == \
        Qualification(IGN, R.ERROR_IGNORED, "autoreply")
    assert qualify_recipient(RULES, _bounce(BounceKind.DELAY, quiet), quiet) == \
        Qualification(S, R.USER_UNKNOWN, "user-unknown-status")
    unknown_action = BouncedRecipient("a@example.org", "5.1.1", "bounced", "User unknown", None)
    assert qualify_recipient(RULES, _bounce(BounceKind.DELAY, unknown_action),
                             unknown_action).failure_type is S


def test_the_recipient_status_is_evidence() -> None:
    full = BouncedRecipient("a@example.org", "5.2.2", "failed", "Requested action not taken",
                            None)
    assert qualify_recipient(RULES, _bounce(BounceKind.DSN, full), full) == \
        Qualification(S, R.MAILBOX_FULL, "status-mailbox-full")


@pytest.mark.parametrize("status", ["5.1", "", "5..1", "9.1.1", "5.1.1.1", "x.1.1", "nonsense"])
def test_malformed_status_fields_decide_nothing(status: str) -> None:
    assert qualify(RULES, status=status, text="Requested action not taken") == \
        Qualification(U, R.UNDEFINED, None)
    # ... but the bounce that carried it still reports a failure: soft, to qualify
    for kind in (BounceKind.DSN, BounceKind.HEURISTIC):
        assert qualify(RULES, status=status, text="Requested action not taken",
                       kind=kind) == Qualification(S, R.UNDEFINED, None)
    for unknown in (BounceKind.UNKNOWN, None):
        assert qualify(RULES, status=status, text="Requested action not taken",
                       kind=unknown) == Qualification(U, R.UNDEFINED, None)


def test_a_reply_status_past_what_the_rules_read_still_counts() -> None:
    # The reply's enhanced code is taken from the whole reply; the rules read the first
    # MAX_QUALIFIED characters. A code of the reply's own class is kept as it is.
    text = "550 " + "x" * 4100 + " 5.1.1"
    assert qualify_smtp_reply(550, text) == Qualification(
        H, R.USER_UNKNOWN, "status-user-unknown")
    assert qualify_smtp_reply(450, text) == Qualification(S, R.UNREACHABLE, "status-temporary")
