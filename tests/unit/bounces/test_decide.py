"""What an attributed bounce may change (`inbound.processor.decide`, `bounce_state`): the
attribution window, the address check, and where each bounce rests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postroom.bounces import BouncedRecipient, BounceKind, ParsedBounce, default_rules
from postroom.domain.models import DeliveryLog
from postroom.domain.states import LogStatus
from postroom.inbound.processor import bounce_state, decide

SENT_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def _log(*, sent_at: datetime | None = SENT_AT) -> DeliveryLog:
    return DeliveryLog(id=7, delivery_id=1, recipient_id=1, email="ann@example.net",
                       status=LogStatus.SENT, failure_type=None, failure_reason=None,
                       detail="", attempts=1, next_attempt_at=None, smtp_reply="250 ok",
                       message_id=None, sent_at=sent_at, size=100, sha256=None)


def _bounce(kind: BounceKind = BounceKind.DSN, recipient: str | None = "ann@example.net",
            ) -> ParsedBounce:
    return ParsedBounce(
        kind=kind,
        recipients=(BouncedRecipient(recipient, "5.1.1", "failed",
                                     "smtp; 550 5.1.1 User unknown", None),),
        original_message_id=None, original_headers=(), feedback_type=None, subject="",
        from_="MAILER-DAEMON@example.net")


@pytest.mark.parametrize(("after", "applies"), [
    (timedelta(0), True),
    (WEEK - timedelta(seconds=1), True),
    (WEEK, True),  # the window's last instant is in
    (WEEK + timedelta(seconds=1), False),
    (timedelta(days=30), False),
])
def test_a_bounce_applies_only_within_the_attribution_window(after: timedelta,
                                                              applies: bool) -> None:
    [outcome] = decide(_bounce(), default_rules(), _log(), "verp",
                       received_at=SENT_AT + after, window=WEEK)
    assert outcome.applies is applies and outcome.fails_log is applies
    assert outcome.late is (not applies)
    assert outcome.attributed, "late or not, whose bounce it is is known"


def test_the_window_is_a_setting() -> None:
    [outcome] = decide(_bounce(), default_rules(), _log(), "verp",
                       received_at=SENT_AT + timedelta(days=10), window=timedelta(days=14))
    assert outcome.applies


def test_a_log_never_sent_has_no_window_to_miss() -> None:
    [outcome] = decide(_bounce(), default_rules(), _log(sent_at=None), "verp",
                       received_at=SENT_AT + timedelta(days=90), window=WEEK)
    assert outcome.applies and not outcome.late


def test_another_address_is_neither_applied_nor_late() -> None:
    for received_at in (SENT_AT, SENT_AT + timedelta(days=30)):
        [outcome] = decide(_bounce(recipient="bob@example.net"), default_rules(), _log(),
                           "verp", received_at=received_at, window=WEEK)
        assert not outcome.applies and not outcome.late and not outcome.attributed


def test_no_log_means_unattributed() -> None:
    outcomes = decide(_bounce(), default_rules(), None, "", received_at=SENT_AT)
    assert bounce_state(BounceKind.DSN, outcomes) == "unattributed"


def test_where_a_bounce_rests() -> None:
    applied = decide(_bounce(), default_rules(), _log(), "verp", received_at=SENT_AT)
    late = decide(_bounce(), default_rules(), _log(), "verp",
                  received_at=SENT_AT + timedelta(days=8))
    assert bounce_state(BounceKind.DSN, applied) == "processed"
    assert bounce_state(BounceKind.DSN, late) == "processed"
    # Mail that is no report Postroom recognizes is kept for a person, token or not.
    unknown = decide(_bounce(BounceKind.UNKNOWN, recipient=None), default_rules(), _log(),
                     "verp", received_at=SENT_AT)
    assert unknown[0].applies and not unknown[0].fails_log
    assert bounce_state(BounceKind.UNKNOWN, unknown) == "unrecognized"
    assert bounce_state(BounceKind.UNKNOWN, []) == "unrecognized"


@pytest.mark.parametrize(("by", "recipient", "applies"), [
    ("verp", "ann@example.net", True),
    ("verp", "ANN@EXAMPLE.NET", True),
    ("verp", None, True),  # came back to the message's own return path: about its address
    ("message-id", "ann@example.net", True),
    ("message-id", None, False),  # anyone who saw the message can quote its Message-ID
    ("message-id-old", "ann@example.net", False),  # derivable by the delivery's recipients
    ("message-id-old", None, False),
    ("message-id", "bob@example.net", False),
    ("verp", "bob@example.net", False),
])
def test_what_each_kind_of_evidence_may_apply(by: str, recipient: str | None,
                                             applies: bool) -> None:
    """Issue 12: knowing one's own message gives no power over anyone else's address."""
    [outcome] = decide(_bounce(recipient=recipient), default_rules(), _log(), by,
                       received_at=SENT_AT, window=WEEK)
    assert outcome.applies is applies and outcome.fails_log is applies
    about_the_log = recipient is None or recipient.lower() == "ann@example.net"
    assert outcome.attributed is about_the_log  # kept against the log, applied or not
    assert bool(outcome.withheld) is (about_the_log and not applies)


def test_where_a_bounce_rests_is_a_bounce_state() -> None:
    from postroom.domain.states import BounceState

    assert bounce_state("unknown", []) is BounceState.UNRECOGNIZED
    assert bounce_state("dsn", []) is BounceState.UNATTRIBUTED
