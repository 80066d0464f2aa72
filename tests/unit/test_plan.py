"""delivery.plan: resolve properties, render one target, settle one attempt (all pure)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

import pytest

from postroom.compose.mime import EncodingError, make_message_id
from postroom.delivery.plan import Links, Message, Plan, RetryPolicy, make_plan
from postroom.domain.models import Audience, Delivery, EmailFormat, Recipient, Target
from postroom.domain.outcomes import (
    FailureReason,
    FailureType,
    SmtpReply,
    connection_fault,
    reply_outcome,
)
from postroom.domain.properties import MessageFormat, Properties
from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import TemplateError
from postroom.settings import DefaultsSettings, SendingSettings

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
DEFAULTS = DefaultsSettings(
    from_name="Postroom", from_address="postroom@platform.example", reply_to="",
    errors_to="bounces@platform.example", retry_period_minutes=60, max_retries=5,
    validity_days=5,
)
SENDING = SendingSettings(quick_retries=2, quick_retry_seconds=5)
ANN = Recipient(id=11, email="ann@example.org", first_name="Ann", last_name="Lee",
                fields={"tier": "gold"})
ACCEPTED = reply_outcome(SmtpReply(250, "2.0.0 Ok: queued as 4BQ2"))
USER_UNKNOWN = reply_outcome(SmtpReply(550, "5.1.1 User unknown"))
MAILBOX_FULL = reply_outcome(SmtpReply(452, "4.2.2 Mailbox full"))


def delivery(*, started_at: datetime | None = T0, **props: Any) -> Delivery:
    properties = Properties(**{
        "subject": "Hi {{ recipient.first_name }}",
        "html": "<p>Your tier: {{ recipient.tier }}</p>",
        **props,
    })
    return Delivery(
        id=3, name="Spring news", template_name="default", state=DeliveryState.SENDING,
        properties=properties, audience=Audience(), salt="s4lt", last_error="",
        created_at=T0 - timedelta(days=1), analyzed_at=T0 - timedelta(hours=1),
        started_at=started_at,
    )


LINKS = Links("https://mail.example.com", b"k" * 32, "")


def mid(log_id: int, domain: str) -> str:
    """The Message-ID of log `log_id` of delivery 3 (a MAC over the ids, issue 12)."""
    return make_message_id(log_id=log_id, delivery_id=3, secret=LINKS.secret, domain=domain)


def plan(*, archive_available: bool = True, **props: Any) -> Plan:
    return make_plan(delivery(**props), defaults=DEFAULTS, sending=SENDING,
                     archive_available=archive_available, links=LINKS)


def target(attempts: int = 0, recipient: Recipient = ANN) -> Target:
    return Target(log_id=42, attempts=attempts, recipient=recipient)


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


# --- make_plan -------------------------------------------------------------------------------


def test_platform_defaults_fill_empty_properties() -> None:
    p = plan()
    assert (p.from_name, p.from_address) == ("Postroom", "postroom@platform.example")
    assert p.reply_to == ""
    assert p.errors_to == "bounces@platform.example"
    assert p.retry == RetryPolicy(
        max_retries=5, retry_period=timedelta(minutes=60), validity=timedelta(days=5),
        quick_retries=2, quick_delay=timedelta(seconds=5),
    )


def test_properties_override_defaults() -> None:
    p = plan(from_name="News", from_address="news@example.com", reply_to="help@example.com",
             errors_to="bounce@example.com", max_retries=0, retry_period_minutes=15,
             validity_days=1)
    assert (p.from_name, p.from_address, p.reply_to, p.errors_to) == (
        "News", "news@example.com", "help@example.com", "bounce@example.com")
    assert (p.retry.max_retries, p.retry.retry_period, p.retry.validity) == (
        0, timedelta(minutes=15), timedelta(days=1))


@pytest.mark.parametrize(
    ("email_bcc", "available", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_archive_needs_property_and_capability(email_bcc: bool, available: bool,
                                               expected: bool) -> None:
    assert plan(email_bcc=email_bcc, archive_available=available).archive is expected


def test_syntax_error_fails_make_plan() -> None:
    with pytest.raises(TemplateError, match="subject, line 1"):
        plan(subject="{{ oops")


@pytest.mark.parametrize(
    ("started_at", "start"),
    [(T0, T0), (None, T0 - timedelta(hours=1))],  # else analyzed_at
)
def test_valid_until(started_at: datetime | None, start: datetime) -> None:
    assert plan(started_at=started_at).valid_until == start + timedelta(days=5)


# --- render ----------------------------------------------------------------------------------


def test_render_personalizes_and_identifies_the_log() -> None:
    message = plan(from_address="news@example.com").render(target(), NOW)
    assert message.message_id == mid(42, "example.com")
    assert message.target == target()
    msg = parse(message.data)
    assert msg["Message-ID"] == mid(42, "example.com")
    assert msg["Subject"] == "Hi Ann"
    assert msg["To"] == "Ann Lee <ann@example.org>"
    assert msg["From"] == "Postroom <news@example.com>"
    assert msg["Date"].datetime == NOW
    html = msg.get_body(("html",))
    assert html is not None and "Your tier: gold" in html.get_content()


def test_render_with_default_sender_domain() -> None:
    assert plan().render(target(), NOW).message_id == mid(42, "platform.example")


def test_default_unsubscribe_mailto_of_an_idn_from_domain_is_its_a_label() -> None:
    value = plan(from_address="news@Bücher.example").links.list_unsubscribe(42)
    assert value.isascii()
    assert value.startswith("<mailto:unsubscribe@xn--bcher-kva.example?subject=unsubscribe%20")


def test_list_unsubscribe_of_an_idn_from_domain_is_a_plain_header() -> None:
    """Not encoded words (RFC 2047 has no place in a list of URIs: clients would not decode
    them), and ASCII even in a message whose header block may be UTF-8 (SMTPUTF8)."""
    jorg = Recipient(id=12, email="jörg@bücher.example", first_name="Jörg",
                     fields={"tier": "gold"})
    message = plan(from_address="news@bücher.example").render(target(recipient=jorg), NOW)
    assert message.smtputf8
    head = message.data.split(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")  # unfolded
    line = next(line for line in head.split(b"\r\n") if line.startswith(b"List-Unsubscribe:"))
    value = line.removeprefix(b"List-Unsubscribe: ").decode("ascii")
    mailto, url = value.split(", ")
    assert mailto.startswith("<mailto:unsubscribe@xn--bcher-kva.example?subject=unsubscribe%20")
    assert url.startswith("<https://mail.example.com/u/42.")


def test_an_idn_from_domain_gives_an_ascii_message() -> None:
    """Message-ID and List-Unsubscribe carry the From domain as the From header does: as its
    A-label, so the message of an ASCII recipient has an ASCII header block."""
    p = plan(from_address="news@bücher.example")
    message = p.render(target(), NOW)
    assert not message.smtputf8 and message.data.isascii()
    assert message.message_id == mid(42, "xn--bcher-kva.example")
    msg = parse(message.data)
    assert msg["Message-ID"] == message.message_id
    assert msg["From"] == "Postroom <news@xn--bcher-kva.example>"
    assert msg["List-Unsubscribe"].startswith(
        "<mailto:unsubscribe@xn--bcher-kva.example?subject=unsubscribe%2042.")
    proof, _wire = p.render_proof(ANN, "proof@example.org", 2, NOW)
    assert proof.isascii()
    assert parse(proof)["Message-ID"] == "<proof.2.3.s4lt@xn--bcher-kva.example>"


def _header_line(data: bytes, name: bytes) -> bytes:
    """The raw bytes of one header field, folding included."""
    head = data.split(b"\r\n\r\n", 1)[0]
    (line,) = re.findall(rb"^" + name + rb":[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", head, re.M)
    return bytes(line)


@pytest.mark.parametrize(("reply_to", "charset", "name"), [
    ("Help Desk <help@bücher.example>", "utf-8", "Help Desk"),
    ("Bücher Büro <help@Bücher.example>", "iso-8859-1", "Bücher Büro"),
    ('"Büro, Zürich \\"Nord\\"" <team@bücher.example>', "utf-8", 'Büro, Zürich "Nord"'),
    ("お問い合わせ窓口 <help@bücher.example>", "iso-2022-jp", "お問い合わせ窓口"),
    ("  <help@bücher.example>  ", "utf-8", ""),
])
def test_reply_to_with_a_display_name_and_an_idn_domain(reply_to: str, charset: str,
                                                        name: str) -> None:
    """Reply-To is written as From is: the name as a phrase (encoded words when it is not
    ASCII), the domain as its A-label, and the header bytes ASCII."""
    message = plan(reply_to=reply_to, charset=charset).render(target(), NOW)
    line = _header_line(message.data, b"Reply-To")
    assert line.isascii(), line
    assert b"xn--bcher-kva.example" in line
    (mailbox,) = parse(message.data)["Reply-To"].addresses
    assert mailbox.display_name == name
    assert mailbox.domain == "xn--bcher-kva.example"


def test_reply_to_display_name_cannot_add_headers() -> None:
    data = plan(reply_to="Help\r\nBcc: x@evil.example <help@example.com>").render(
        target(), NOW).data
    msg = parse(data)
    assert msg.get_all("Bcc") is None
    (mailbox,) = msg["Reply-To"].addresses
    assert (mailbox.display_name, mailbox.addr_spec) == ("Help Bcc: x@evil.example",
                                                         "help@example.com")


def test_reply_to_name_the_charset_cannot_represent_names_the_field() -> None:
    with pytest.raises(EncodingError, match=r"^reply_to: the character '日' \(U\+65E5\)"):
        plan(reply_to="日本 <help@example.com>", charset="iso-8859-1").render(target(), NOW)


def test_render_reveals_neither_errors_to_nor_a_bcc() -> None:
    data = plan(email_bcc=True, errors_to="bounce@example.com").render(target(), NOW).data
    msg = parse(data)
    assert msg.get_all("Bcc") is None
    assert b"bounce@example.com" not in data


def test_render_is_deterministic() -> None:
    p = plan()
    assert p.render(target(), NOW).data == p.render(target(), NOW).data


def test_render_follows_recipient_format() -> None:
    text_reader = Recipient(id=12, email="tom@example.org", email_format=EmailFormat.TEXT,
                            fields={"tier": "silver"})
    msg = parse(plan(format=MessageFormat.RECIPIENT).render(target(recipient=text_reader),
                                                            NOW).data)
    assert msg.get_content_type() == "text/plain"
    assert "Your tier: silver" in msg.get_content()


def test_render_fails_for_a_missing_field() -> None:
    nobody = Recipient(id=13, email="no@example.org")
    with pytest.raises(TemplateError, match=r"recipient\.tier.*no@example\.org"):
        plan().render(target(recipient=nobody), NOW)


def test_unrenderable_fails_hard_without_counting_an_attempt() -> None:
    update = plan().unrenderable(target(attempts=2), TemplateError("html: boom"))
    assert update.status is LogStatus.FAILED
    assert update.failure_type is FailureType.HARD
    assert update.attempts == 2
    assert update.detail == "message not built: html: boom"


# --- settle ----------------------------------------------------------------------------------


def sent_message(p: Plan, attempts: int = 0) -> Message:
    return p.render(target(attempts), NOW)


@pytest.mark.parametrize("archive", [True, False])
def test_settle_sent(archive: bool) -> None:
    p = plan(email_bcc=archive)
    message = sent_message(p, attempts=1)
    update = p.settle(message, ACCEPTED, NOW)
    assert update.status is LogStatus.SENT
    assert update.attempts == 2
    assert update.next_attempt_at is None
    assert update.sent_at == NOW
    assert update.message_id == mid(42, "platform.example")
    assert update.smtp_reply == "250 2.0.0 Ok: queued as 4BQ2"
    assert update.size == len(message.data)
    assert update.sha256 == hashlib.sha256(message.data).hexdigest()
    assert update.archive_data == (message.data if archive else None)
    assert update.failure_type is None


def test_settle_5xx_is_failed_hard() -> None:
    p = plan(email_bcc=True)
    update = p.settle(sent_message(p), USER_UNKNOWN, NOW)
    assert update.status is LogStatus.FAILED
    assert (update.failure_type, update.failure_reason) == (
        FailureType.HARD, FailureReason.USER_UNKNOWN)
    assert update.next_attempt_at is None
    assert update.smtp_reply == "550 5.1.1 User unknown"
    assert update.archive_data is None and update.sha256 is None and update.sent_at is None


@pytest.mark.parametrize(
    ("previous_attempts", "delay"),
    [(0, timedelta(seconds=5)), (1, timedelta(seconds=5)), (2, timedelta(minutes=60)),
     (4, timedelta(minutes=60))],
)
def test_settle_4xx_reschedules(previous_attempts: int, delay: timedelta) -> None:
    p = plan(email_bcc=True)
    update = p.settle(sent_message(p, previous_attempts), MAILBOX_FULL, NOW)
    assert update.status is LogStatus.PENDING
    assert update.attempts == previous_attempts + 1
    assert update.next_attempt_at == NOW + delay
    assert (update.failure_type, update.failure_reason) == (
        FailureType.SOFT, FailureReason.MAILBOX_FULL)
    assert update.smtp_reply == "452 4.2.2 Mailbox full"
    assert update.archive_data is None


def test_retry_policy_delay() -> None:
    policy = plan().retry
    assert [policy.delay(n) for n in (1, 2, 3, 6)] == [
        timedelta(seconds=5), timedelta(seconds=5), timedelta(hours=1), timedelta(hours=1)]


def test_settle_fails_after_max_retries() -> None:
    p = plan()  # 2 quick retries + 5 retries: the 8th attempt is the last
    assert p.settle(sent_message(p, 6), MAILBOX_FULL, NOW).status is LogStatus.PENDING
    update = p.settle(sent_message(p, 7), MAILBOX_FULL, NOW)
    assert update.status is LogStatus.FAILED
    assert update.attempts == 8
    assert update.next_attempt_at is None
    assert (update.failure_type, update.failure_reason) == (
        FailureType.SOFT, FailureReason.MAILBOX_FULL)


def test_settle_without_retries_fails_at_once() -> None:
    p = plan(max_retries=0)
    assert p.settle(sent_message(p), MAILBOX_FULL, NOW).status is LogStatus.FAILED


def test_settle_fails_when_retry_would_fall_after_validity() -> None:
    p = plan()
    late = p.valid_until - timedelta(minutes=30)
    update = p.settle(p.render(target(3), late), MAILBOX_FULL, late)
    assert update.status is LogStatus.FAILED
    assert update.failure_type is FailureType.SOFT
    early = p.valid_until - timedelta(minutes=61)
    assert p.settle(p.render(target(3), early), MAILBOX_FULL, early).next_attempt_at == (
        early + timedelta(minutes=60))


def test_settle_connection_fault() -> None:
    p = plan()
    update = p.settle(sent_message(p), connection_fault("timed out"), NOW)
    assert update.status is LogStatus.PENDING
    assert update.failure_reason is FailureReason.UNREACHABLE
    assert update.detail == "timed out"
    assert update.smtp_reply == ""  # a fault is no reply: it says nothing of the address
