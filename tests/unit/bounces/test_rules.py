"""bounces.rules: every default rule fires on a realistic text, in its place in the order."""

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
    qualify_bounce,
    qualify_recipient,
    qualify_smtp_reply,
)
from postroom.bounces.rules import status_matches
from postroom.domain.outcomes import FailureReason, FailureType

H, S, IGN, U = FailureType.HARD, FailureType.SOFT, FailureType.IGNORED, FailureType.UNDEFINED
R = FailureReason
RULES = default_rules()

# One real-shaped sample per rule id: (status of the report or None, diagnostic text). A new
# default rule without a sample here fails `test_every_rule_has_a_sample`.
SAMPLES: dict[str, tuple[str | None, str]] = {
    "feedback-not-complaint": (None, "feedback-type: auth-failure"),
    "feedback-complaint": (None, "feedback-type: abuse"),
    "delivered": ("2.0.0", "250 2.0.0 Ok: queued as 4BQ2"),
    "mailbox-full": ("5.2.2", "552 5.2.2 <ann@example.org>: Mailbox full"),
    "account-disabled": ("5.2.1", "550 5.2.1 The email account that you tried to reach is "
                                  "disabled. https://support.google.com/mail/?p=DisabledUser"),
    "has-moved": ("5.1.6", "550 5.1.6 Recipient address ann@example.org has moved to "
                           "ann@example.net"),
    "mailer-error": ("5.1.1", "procmail: Couldn't create \"/var/spool/mail/ann\""),
    "sender-refused": ("5.1.8", "553 5.1.8 <news@sender.example>... Domain of sender address "
                                "news@sender.example does not exist"),
    "user-unknown-status": ("5.1.1", "550 5.1.1 <ann@example.org>: Recipient address rejected: "
                                     "User unknown in virtual mailbox table"),
    "user-unknown-provider": (None, "554 delivery error: dd This user doesn't have a "
                                    "yahoo.com account (ann@yahoo.com) [0]"),
    "user-unknown-after-data": ("5.0.0", "550 Unknown user ann@example.jp (in reply to end of "
                                         "DATA command)"),
    "user-unknown-policy-status": ("5.7.1", "550 5.7.1 550 User Unknown: ann@example.org"),
    "user-unknown-filtered-status": ("5.2.0", "550 Unknown user ann@example.ne.jp"),
    "user-unknown": (None, "550 <ann@example.org>... No such user here"),
    "outlook-mailbox-unavailable": ("5.5.0", "550 Requested action not taken: mailbox "
                                             "unavailable (S2017062302)"),
    "office365-directory": ("5.4.1", "550 5.4.1 Recipient address rejected: Access denied. "
                                     "AS(201806281) [BN8NAM12FT061.eop-nam12.prod.outlook.com]"),
    "host-unknown": (None, "Sorry, I couldn't find any host named nowhere.example. (#5.1.2)"),
    "greylisted": ("4.2.0", "450 4.2.0 <ann@example.org>: Recipient address rejected: "
                            "Greylisted, see http://postgrey.schweikert.ch/help/example.org.html"),
    "no-relaying": ("5.7.1", "554 5.7.1 <ann@example.org>: Relay access denied"),
    "blocklisted": ("5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked "
                             "using zen.spamhaus.org"),
    "spam": ("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering"),
    "virus": ("5.7.0", "554 5.7.0 Reject, id=12345-06 - INFECTED: Eicar-Test-Signature"),
    "authentication": ("5.7.26", "550 5.7.26 This mail has been blocked because the sender is "
                                 "unauthenticated. Gmail requires all senders to authenticate"
                                 " with either SPF or DKIM."),
    "reverse-dns": ("5.7.25", "550 5.7.25 The IP address sending this message does not have a "
                              "PTR record setup"),
    "security": ("5.7.1", "530 5.7.1 Authorization required: must use TLS"),
    "rate-limit": ("4.7.0", "421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred "
                            "due to unexpected volume or user complaints"),
    "message-too-big": ("5.3.4", "552 5.3.4 Message size exceeds fixed limit"),
    "content": ("5.6.0", "554 5.6.0 Message header error: duplicate Message-ID"),
    "expired": ("4.4.7", "Message expired: unable to deliver in 840 minutes."),
    "network": ("4.4.1", "connect to mx.example.org[192.0.2.40]:25: Connection timed out"),
    "system-error": ("4.3.0", "451 4.3.0 Temporary system error, please retry"),
    "policy": ("5.7.1", "550 5.7.1 Message not accepted for policy reasons"),
    "status-moved": ("5.1.6", "550 5.1.6 Mailbox relocated"),
    "status-user-unknown": ("5.1.1", "550 5.1.1 Requested action not taken"),
    "status-address": ("5.1.0", "550 #5.1.0 Address rejected."),
    "status-bad-address": ("5.1.3", "553 5.1.3 Address contains illegal characters"),
    "status-host-unknown": ("5.1.2", "550 5.1.2 Cannot route to the recipient's system"),
    "status-null-mx": ("5.1.10", "556 5.1.10 Recipient address rejected"),
    "status-no-route": ("5.4.4", "550 5.4.4 Unable to route"),
    "status-sender": ("5.1.7", "553 5.1.7 Bad sender's mailbox address syntax"),
    "status-sender-domain": ("5.1.8", "501 5.1.8 Bad sender's system address"),
    "status-ambiguous": ("5.1.4", "550 5.1.4 Destination mailbox address ambiguous"),
    "status-disabled": ("5.2.1", "550 5.2.1 Mailbox cannot be used"),
    "status-list-expansion": ("5.2.4", "550 5.2.4 Mailing list expansion problem"),
    "status-account-disabled": ("5.7.13", "525 5.7.13 Please contact your administrator"),
    "status-owner-changed": ("5.7.17", "550 5.7.17 Mailbox owner has changed"),
    "status-domain-owner-changed": ("5.7.18", "550 5.7.18 Domain owner has changed"),
    "status-mailbox-full": ("4.2.2", "452 4.2.2 Please try again later"),
    "status-too-big": ("5.2.3", "552 5.2.3 Sorry, that is more than I accept"),
    "status-system-too-big": ("5.3.4", "552 5.3.4 Error: exceeded the allowed length"),
    "status-system": ("4.3.2", "452 4.3.2 System not accepting network messages"),
    "status-expired": ("4.4.7", "554 4.4.7 Undelivered after the retry period"),
    "status-network": ("4.4.2", "421 4.4.2 Bad connection"),
    "status-protocol": ("5.5.2", "500 5.5.2 Error: bad syntax"),
    "status-content": ("5.6.1", "554 5.6.1 Media not supported"),
    "status-security": ("5.7.1", "550 5.7.1 Message could not be processed [S3114]"),
    "mailbox-unavailable": ("5.0.0", "550 Requested action not taken: mailbox unavailable"),
    "status-temporary": ("4.0.0", "450 4.0.0 Please try again later"),
}


def test_every_rule_has_a_sample() -> None:
    missing = [rule.id for rule in RULES if rule.id not in SAMPLES]
    assert missing == [], f"add a realistic sample text for: {missing}"
    assert set(SAMPLES) <= {rule.id for rule in RULES}


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.id)
def test_rule_fires_on_its_sample(rule: Rule) -> None:
    status, text = SAMPLES[rule.id]
    kind = BounceKind.ARF if rule.id.startswith("feedback") else None
    assert qualify(RULES, status=status, text=text, kind=kind) == Qualification(
        rule.failure_type, rule.reason, rule.id)


def test_rules_are_well_formed() -> None:
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids))
    for rule in RULES:
        assert rule.pattern is not None or rule.status is not None
        assert rule.description
        assert re.fullmatch(r"[a-z0-9-]+", rule.id)


def test_default_types_follow_the_reason_table() -> None:
    hard = {R.USER_UNKNOWN, R.DENYLISTED}
    for rule in RULES:
        if rule.failure_type is H:
            assert rule.reason in hard, rule.id
        if rule.reason in (R.INVALID_DOMAIN, R.UNREACHABLE, R.MAILBOX_FULL, R.ACCOUNT_DISABLED,
                           R.REFUSED):
            assert rule.failure_type is S, rule.id


@pytest.mark.parametrize(
    ("prefix", "status", "matches"),
    [("5.1.1", "5.1.1", True), ("5.1.1", "5.1.10", False), ("5.1.1", "4.1.1", False),
     ("x.1.1", "4.1.1", True), ("X.2.2", "5.2.2", True), ("4.2.", "4.2.2", True),
     ("4.2.", "4.20.1", False), ("4.", "4.7.0", True), ("4.", "5.7.0", False),
     ("5.1.10", "5.1.10", True), ("5.1.10", "5.1.1", False), ("2.", "2.6.0", True)],
)
def test_status_prefix(prefix: str, status: str, matches: bool) -> None:
    assert status_matches(prefix, status) is matches


def test_first_matching_rule_wins() -> None:
    first = Rule("first", re.compile("full", re.I), None, S, R.MAILBOX_FULL, "")
    second = Rule("second", re.compile("mailbox", re.I), None, H, R.USER_UNKNOWN, "")
    assert qualify((first, second), status=None, text="Mailbox full").rule_id == "first"
    assert qualify((second, first), status=None, text="Mailbox full").rule_id == "second"


def test_pattern_and_status_must_both_match() -> None:
    rule = Rule("both", re.compile("denied", re.I), "x.4.1", H, R.USER_UNKNOWN, "")
    assert qualify((rule,), status="5.4.1", text="Access denied").rule_id == "both"
    assert qualify((rule,), status="5.7.1", text="Access denied").rule_id is None
    assert qualify((rule,), status=None, text="Access denied").rule_id is None


def test_user_unknown_at_rcpt_to_means_what_it_says() -> None:
    text = "550 5.7.1 <ann@example.org>: User unknown (in reply to RCPT TO command)"
    assert qualify(RULES, status="5.7.1", text=text) == Qualification(
        H, R.USER_UNKNOWN, "user-unknown")
    at_data = "550 5.1.1 <ann@example.org>: User unknown (in reply to end of DATA command)"
    assert qualify(RULES, status="5.1.1", text=at_data).rule_id == "user-unknown-status"


def test_no_match_takes_the_class_of_the_evidence_and_stays_to_qualify() -> None:
    # A bounce's failure no rule explains is soft (one error towards quarantine), reason 0,
    # no rule id (so its text is kept "to qualify"); a bare text is undefined.
    assert qualify(RULES, status="5.0.0", text="Nyaan") == Qualification(U, R.UNDEFINED, None)
    assert qualify(RULES, status="5.0.0", text="Nyaan", kind=BounceKind.DSN) == \
        Qualification(S, R.UNDEFINED, None)
    assert qualify(RULES, status=None, text="") == Qualification(U, R.UNDEFINED, None)
    assert qualify(RULES, status=None, text="Nyaan") == Qualification(U, R.UNDEFINED, None)
    for kind in (BounceKind.DSN, BounceKind.HEURISTIC):
        assert qualify(RULES, status=None, text="Nyaan", kind=kind) == \
            Qualification(S, R.UNDEFINED, None)
    assert qualify(RULES, status=None, text="Nyaan", kind=BounceKind.DELAY) == \
        Qualification(S, R.UNREACHABLE, None)
    assert qualify(RULES, status=None, text="Nyaan", kind=BounceKind.UNKNOWN) == \
        Qualification(U, R.UNDEFINED, None)
    # a 2.x.x status is not a failure class
    assert qualify((), status="2.0.0", text="Nyaan") == Qualification(U, R.UNDEFINED, None)


def test_generic_status_gives_way_to_the_code_in_the_text() -> None:
    verdict = qualify(RULES, status="5.0.0", text="550 5.1.1 requested action not taken")
    assert verdict == Qualification(H, R.USER_UNKNOWN, "status-user-unknown")
    # A code of another class in the text does not override the report's status.
    assert qualify(RULES, status="4.0.0", text="5.1.1").rule_id == "status-temporary"


def test_kinds_that_are_never_failures() -> None:
    for kind in (BounceKind.AUTOREPLY, BounceKind.SUCCESS):
        verdict = qualify(RULES, status="5.1.1", text="User unknown", kind=kind)
        assert (verdict.failure_type, verdict.reason) == (IGN, R.ERROR_IGNORED)


def test_feedback_reports_are_complaints_unless_a_rule_says_otherwise() -> None:
    assert qualify(RULES, status=None, text="", kind=BounceKind.ARF) == Qualification(
        H, R.DENYLISTED, "feedback")
    # A report's status is never used: only its feedback type speaks.
    assert qualify(RULES, status="5.1.1", text="feedback-type: abuse",
                   kind=BounceKind.ARF).reason is R.DENYLISTED
    assert qualify(RULES, status=None, text="feedback-type: not-spam",
                   kind=BounceKind.ARF).failure_type is IGN


def test_a_delay_is_never_hard_and_unreachable_by_default() -> None:
    assert qualify(RULES, status="4.1.1", text="User unknown",
                   kind=BounceKind.DELAY) == Qualification(S, R.USER_UNKNOWN,
                                                           "user-unknown-status")
    assert qualify(RULES, status=None, text="still trying",
                   kind=BounceKind.DELAY) == Qualification(S, R.UNREACHABLE, None)


def test_recipient_action_refines_the_kind() -> None:
    failed = BouncedRecipient("a@example.org", "5.1.1", "failed", "User unknown", None)
    delayed = BouncedRecipient("b@example.org", "4.4.1", "delayed", "timed out", None)
    done = BouncedRecipient("c@example.org", "2.0.0", "delivered", "250 ok", None)
    bounce = ParsedBounce(BounceKind.DSN, (failed, delayed, done), None, (), None, "", "")
    verdicts = [q for _, q in qualify_bounce(RULES, bounce)]
    assert [(q.failure_type, q.reason) for q in verdicts] == [
        (H, R.USER_UNKNOWN), (S, R.UNREACHABLE), (IGN, R.ERROR_IGNORED)]
    assert qualify_recipient(RULES, bounce, delayed) == verdicts[1]


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        # the three replies the first-cut qualify_reply pinned (ADR 0005)
        (550, "5.1.1 <ann@example.org>: Recipient address rejected: User unknown", (H, 1)),
        (452, "4.2.2 Mailbox full", (S, 5)),
        (421, "Service not available, closing transmission channel", (S, 3)),
        # more of the same vocabulary
        (550, "No such user here", (H, 1)),
        (550, "5.1.1 The email account that you tried to reach does not exist", (H, 1)),
        (552, "5.2.2 Mailbox full", (S, 5)),
        (554, "5.7.1 Message rejected as spam", (S, 20)),
        (421, "4.7.0 Try again later, closing connection", (S, 20)),
        (451, "4.3.0 Local error in processing", (S, 3)),
        (550, "Requested action not taken", (U, 0)),
        (450, "Requested action not taken", (S, 3)),
        (550, "mailbox unavailable; see 5.1.1 in the docs", (H, 1)),
    ],
)
def test_smtp_reply(code: int, text: str, expected: tuple[FailureType, int]) -> None:
    verdict = qualify_smtp_reply(code, text)
    assert (verdict.failure_type, int(verdict.reason)) == expected


def test_smtp_reply_rules_and_edges() -> None:
    assert qualify_smtp_reply(250, "2.0.0 Ok").failure_type is IGN
    # A temporary reply is never hard, even when a rule says so.
    assert qualify_smtp_reply(450, "4.1.1 <a@example.org>: User unknown").failure_type is S
    # Unmatched: 5xx undefined (to qualify, not retried), 4xx soft unreachable.
    assert qualify_smtp_reply(554, "Nyaan") == Qualification(U, R.UNDEFINED, None)
    assert qualify_smtp_reply(554, "Nyaan") == qualify(default_rules(), status="5.0.0",
                                                       text="Nyaan")
    assert qualify_smtp_reply(451, "Nyaan") == Qualification(S, R.UNREACHABLE, None)
    # An enhanced code of the other class than the reply is not trusted.
    assert qualify_smtp_reply(550, "4.2.2 odd").reason is R.UNDEFINED
    custom = (Rule("mine", re.compile("nyaan", re.I), None, IGN, R.ERROR_IGNORED, "allow"),)
    assert qualify_smtp_reply(550, "Nyaan", custom) == Qualification(IGN, R.ERROR_IGNORED,
                                                                      "mine")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # RFC 3463 and the IANA registry, subject and detail: what each says about the address
        ("5.1.1", (H, R.USER_UNKNOWN)), ("5.1.10", (S, R.INVALID_DOMAIN)),
        ("5.1.2", (S, R.INVALID_DOMAIN)), ("5.4.4", (S, R.INVALID_DOMAIN)),
        ("4.4.4", (S, R.UNREACHABLE)), ("5.2.2", (S, R.MAILBOX_FULL)),
        ("5.2.1", (S, R.ACCOUNT_DISABLED)), ("4.4.7", (S, R.UNREACHABLE)),
        ("5.3.4", (S, R.REFUSED)), ("5.7.1", (S, R.REFUSED)), ("4.0.0", (S, R.UNREACHABLE)),
        ("5.0.0", (U, R.UNDEFINED)),
        # the rest of the registry (RFC 3463, RFC 7293, RFC 7505, IANA)
        ("5.1.0", (H, R.USER_UNKNOWN)), ("5.1.3", (H, R.USER_UNKNOWN)),
        ("5.1.4", (S, R.REFUSED)), ("5.1.6", (H, R.USER_UNKNOWN)),
        ("5.1.7", (S, R.REFUSED)), ("5.1.8", (S, R.REFUSED)),
        ("5.2.0", (U, R.UNDEFINED)), ("5.2.3", (S, R.REFUSED)),
        ("5.2.4", (S, R.UNREACHABLE)), ("5.3.0", (S, R.UNREACHABLE)),
        ("5.3.1", (S, R.UNREACHABLE)), ("4.3.2", (S, R.UNREACHABLE)),
        ("5.4.1", (S, R.UNREACHABLE)), ("4.4.6", (S, R.UNREACHABLE)),
        ("5.5.3", (S, R.REFUSED)), ("5.6.1", (S, R.REFUSED)), ("5.7.0", (S, R.REFUSED)),
        ("5.7.13", (S, R.ACCOUNT_DISABLED)), ("5.7.17", (H, R.USER_UNKNOWN)),
        ("5.7.18", (S, R.INVALID_DOMAIN)), ("5.7.26", (S, R.REFUSED)),
        ("5.7.27", (S, R.REFUSED)), ("4.7.13", (S, R.ACCOUNT_DISABLED)),
        ("2.1.5", (IGN, R.ERROR_IGNORED)),
    ],
)
def test_status_registry_without_text(status: str, expected: tuple[FailureType, R]) -> None:
    verdict = qualify(RULES, status=status, text="")
    assert (verdict.failure_type, verdict.reason) == expected


@pytest.mark.parametrize(
    "text",
    [
        "unable to look up host no-such-host.test: Name or service not known",
        "Host or domain name not found. Name service error for name=nowhere.test type=MX",
        "DNS Error: DNS type 'mx' lookup of nowhere.test responded with code NXDOMAIN",
    ],
)
def test_host_unknown_phrases(text: str) -> None:
    verdict = qualify(RULES, status="5.0.0", text=text)
    assert (verdict.failure_type, verdict.reason, verdict.rule_id) == (
        S, R.INVALID_DOMAIN, "host-unknown")


@pytest.mark.parametrize(
    "text",
    ["450 4.2.0 Recipient address rejected: Greylisted, see http://postgrey.example/",
     "451 4.7.1 Greylisting in action, please come back later",
     "421 4.7.0 graylisted, try again in 5 minutes"],
)
def test_greylisting_phrases(text: str) -> None:
    verdict = qualify(RULES, status="4.0.0", text=text)
    assert (verdict.failure_type, verdict.reason, verdict.rule_id) == (S, R.REFUSED,
                                                                       "greylisted")


@pytest.mark.parametrize("text", [
    "550 Invalid final delivery userid: ann@example.org",
    "554 No valid recipients for this message",
    "550 unknown local user",
    "550 Nonexistent mailbox ann@example.org",
    "550 non-existent recipient",
    "550 no such mailboxes",
    "550 not a valid mail user",
    "550 invalid recipients",
    "550 unknown addressee",
])
def test_user_unknown_is_a_meaning_not_one_wording(text: str) -> None:
    # non-existence or invalidity, then within two words a recipient noun
    assert qualify(RULES, status=None, text=text) == Qualification(
        H, R.USER_UNKNOWN, "user-unknown")


@pytest.mark.parametrize(("text", "user_unknown"), [
    ("550 invalid sender address syntax", False),  # no recipient noun
    ("550 invalid data for one recipient", False),  # three words between: not together
    ("550 invalid data for recipient", True),  # two words between
    ("550 invalid-user", False),  # one token, not the phrase
    ("550 unknownuser", False),  # not words
    ("550 unknown users", True),
])
def test_user_unknown_needs_the_words_together(text: str, user_unknown: bool) -> None:
    verdict = qualify(RULES, status=None, text=text)
    assert (verdict.reason is R.USER_UNKNOWN) is user_unknown, verdict
