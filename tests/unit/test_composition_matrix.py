"""Composition matrix (issue 3, point 1): every format, charset and content set.

Each message is built the way the engine builds it, through `make_plan(...).render(...)`, then
parsed with Python's `email` package under `policy.strict` (any defect raises) and
`policy.default` (defects collected and checked empty, on the message, every part and every
header).

What "the decoded text/HTML equals the rendered content exactly" means here: the MIME writer
stores every line with CRLF and always ends a part with a line break, so the part decoded by
`get_content()` is compared with `Plan.personalize(...)` after turning CRLF into LF on the
decoded side only. The templates below have LF line ends and end with a newline, so no other
normalization is needed: any other difference (a lost, added or replaced character, a changed
line break) fails.

Combinations whose content the charset cannot represent are not sent garbled: `Plan.render`
must raise `EncodingError` naming the first field (in header order) and its first
unrepresentable character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import Policy, default, strict

import pytest

from postroom.compose.charsets import Charset, charset_for, first_unrepresentable
from postroom.compose.html import html_to_text
from postroom.compose.mime import EncodingError, make_message_id
from postroom.delivery.plan import Plan, make_plan
from postroom.domain.models import Audience, Delivery, EmailFormat, Recipient, Target
from postroom.domain.properties import MessageFormat, Properties
from postroom.domain.states import DeliveryState
from tests.unit.plan_settings import DEFAULTS, LINKS, SENDING

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
LOG_ID = 42
ADDRESS = "ann@example.org"


@dataclass(frozen=True)
class ContentSet:
    subject: str  # static subject template
    body: str  # one line of body text, used in both the HTML and the text template
    first_name: str
    last_name: str
    from_name: str


LONG_LINE = ("Lorem ipsum dolor sit amet " * 200)[:5000]
JAPANESE = "こんにちは、世界。日本語のテキスト"
MIXED_SUBJECT = ("Hello Привет Ωμεγα 日本語 " * 14)[:300]

CONTENTS = {
    "accented": ContentSet("Crème brûlée à Zürich", "Crème brûlée à Zürich", "Zoë", "Müller",
                           "Café Zürich"),
    "japanese": ContentSet(JAPANESE, JAPANESE, "太郎", "山田", "日本語ニュース"),
    "emoji": ContentSet("Party 🎉 time", "Party 🎉 time", "Party 🎉", "Fan", "Party 🎉 News"),
    "long_line": ContentSet("A very long line", LONG_LINE, "Ann", "Lee", "Postroom News"),
    "long_subject": ContentSet(MIXED_SUBJECT, "Mixed scripts", "Ivan", "Петров", "Новости"),
}

CHARSETS = ["utf-8", "iso-8859-1", "iso-2022-jp", "shift_jis"]

# (message format, recipient's email_format) → the parts the message must have
FORMATS: dict[str, tuple[MessageFormat, EmailFormat, tuple[str, ...]]] = {
    "multipart": (MessageFormat.MULTIPART, EmailFormat.UNKNOWN, ("plain", "html")),
    "html": (MessageFormat.HTML, EmailFormat.UNKNOWN, ("html",)),
    "text": (MessageFormat.TEXT, EmailFormat.UNKNOWN, ("plain",)),
    "recipient-unknown": (MessageFormat.RECIPIENT, EmailFormat.UNKNOWN, ("plain", "html")),
    "recipient-text": (MessageFormat.RECIPIENT, EmailFormat.TEXT, ("plain",)),
    "recipient-html": (MessageFormat.RECIPIENT, EmailFormat.HTML, ("html",)),
}

SANITY = [  # the test data itself: long enough, and each set hits the charsets it should
    len(LONG_LINE) == 5000 and "\n" not in LONG_LINE and not LONG_LINE.endswith(" "),
    len(MIXED_SUBJECT) == 300 and not MIXED_SUBJECT.endswith(" "),
]


def test_the_test_data_is_what_the_matrix_claims() -> None:
    assert all(SANITY)
    assert representable(CONTENTS["japanese"], charset_for("shift_jis"))
    assert representable(CONTENTS["japanese"], charset_for("iso-2022-jp"))
    assert not representable(CONTENTS["japanese"], charset_for("iso-8859-1"))
    assert representable(CONTENTS["accented"], charset_for("iso-8859-1"))
    assert not representable(CONTENTS["accented"], charset_for("shift_jis"))
    assert not representable(CONTENTS["emoji"], charset_for("iso-2022-jp"))
    assert representable(CONTENTS["long_subject"], charset_for("iso-2022-jp"))
    assert not representable(CONTENTS["long_subject"], charset_for("iso-8859-1"))


def html_source(content: ContentSet) -> str:
    return f"<p>{{{{ recipient.first_name }}}}</p>\n<p>{content.body}</p>\n"


def text_source(content: ContentSet) -> str:
    return f"Hello {{{{ recipient.first_name }}}},\n{content.body}\n"


def make(content: ContentSet, charset: str, fmt: MessageFormat, *, text: bool = True) -> Plan:
    properties = Properties(
        subject=content.subject, html=html_source(content),
        text=text_source(content) if text else "", format=fmt, charset=charset,
        from_name=content.from_name, from_address="news@example.com",
    )
    delivery = Delivery(
        id=3, name="Matrix", template_name="default", state=DeliveryState.SENDING,
        properties=properties, audience=Audience(), salt="s4lt", last_error="",
        created_at=T0 - timedelta(days=1), analyzed_at=T0, started_at=T0,
    )
    return make_plan(delivery, defaults=DEFAULTS, sending=SENDING, archive_available=False,
                     links=LINKS)


def recipient_for(content: ContentSet, email_format: EmailFormat) -> Recipient:
    return Recipient(id=7, email=ADDRESS, first_name=content.first_name,
                     last_name=content.last_name, email_format=email_format)


def representable(content: ContentSet, charset: Charset) -> bool:
    strings = (content.subject, content.body, content.first_name, content.last_name,
               content.from_name)
    return all(first_unrepresentable(s, charset) is None for s in strings)


def parse(data: bytes, policy: Policy) -> EmailMessage:
    msg = BytesParser(policy=policy).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def assert_no_defects(msg: EmailMessage) -> None:
    for part in msg.walk():
        assert part.defects == [], part.get_content_type()
        for name, value in part.items():
            assert getattr(value, "defects", ()) == (), name


def text_parts(msg: EmailMessage) -> dict[str, EmailMessage]:
    parts: dict[str, EmailMessage] = {}
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            assert isinstance(part, EmailMessage)
            assert part.get_content_subtype() not in parts, "two parts of one kind"
            parts[part.get_content_subtype()] = part
    return parts


def assert_legal_lines(data: bytes) -> None:
    assert data.endswith(b"\r\n")
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None, "bare CR or LF"
    longest = max(len(line) for line in data.split(b"\r\n"))
    assert longest <= 998, f"a line of {longest} octets"


def expected_field_error(content: ContentSet, charset: Charset,
                         parts: tuple[str, ...]) -> tuple[str, str]:
    """(field, character) that build_message must report first: headers, then parts."""
    to_name = f"{content.first_name} {content.last_name}"
    fields = [("from_name", content.from_name), ("to", to_name), ("subject", content.subject)]
    if "plain" in parts:
        fields.append(("text", text_source(content)))
    if "html" in parts:
        fields.append(("html", html_source(content)))
    for field, value in fields:
        problem = first_unrepresentable(value, charset)
        if problem is not None:
            return field, problem.character
    raise AssertionError("the content is representable")


@pytest.mark.parametrize("content_name", list(CONTENTS))
@pytest.mark.parametrize("charset_name", CHARSETS)
@pytest.mark.parametrize("format_name", list(FORMATS))
def test_matrix(format_name: str, charset_name: str, content_name: str) -> None:
    fmt, email_format, expected_parts = FORMATS[format_name]
    content = CONTENTS[content_name]
    charset = charset_for(charset_name)
    plan = make(content, charset_name, fmt)
    recipient = recipient_for(content, email_format)
    target = Target(LOG_ID, 0, recipient)

    if not representable(content, charset):
        field, character = expected_field_error(content, charset, expected_parts)
        with pytest.raises(EncodingError) as info:
            plan.render(target, NOW)
        message = str(info.value)
        assert message.startswith(f"{field}: the character {character!r} "), message
        assert message.endswith(f"cannot be encoded in {charset.mime}"), message
        return

    data = plan.render(target, NOW).data
    rendered = plan.personalize(recipient, LOG_ID)
    assert_legal_lines(data)
    assert data.isascii(), "headers and 7bit/QP/base64 bodies are ASCII"

    parse(data, strict)  # raises on the first defect
    msg = parse(data, default)
    assert_no_defects(msg)

    # structure
    parts = text_parts(msg)
    assert tuple(parts) == expected_parts
    if len(expected_parts) == 2:
        assert msg.get_content_type() == "multipart/alternative"
        assert msg.get_content_charset() is None
    expected_text = {"plain": rendered.text, "html": rendered.html}

    for subtype, part in parts.items():
        assert part.get_content_charset() == charset.mime
        decoded = part.get_content()
        assert decoded.replace("\r\n", "\n") == expected_text[subtype]

        cte = part["Content-Transfer-Encoding"]
        assert cte in ("7bit", "quoted-printable", "base64")
        encoded_lines = [charset.encode(line) for line in expected_text[subtype].splitlines()]
        short = all(len(line) <= 998 for line in encoded_lines)
        ascii_bytes = all(line.isascii() for line in encoded_lines)
        assert (cte == "7bit") == (short and ascii_bytes), cte
        if charset.mime == "iso-2022-jp" and content_name != "long_line":
            assert cte == "7bit"
        if content_name == "long_line":
            assert cte == "quoted-printable"  # smaller than base64 for ASCII text

    # headers decode to the original strings
    assert str(msg["Subject"]) == content.subject == rendered.subject
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == (f"{content.first_name} {content.last_name}",
                                               ADDRESS)
    (sender,) = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (content.from_name, "news@example.com")
    assert msg["Message-ID"] == make_message_id(log_id=LOG_ID, delivery_id=3,
                                                secret=LINKS.secret, domain="example.com")
    assert len(msg.get_all("To") or []) == len(msg.get_all("Subject") or []) == 1


REPRESENTABLE = [(charset_name, content_name) for charset_name in CHARSETS
                 for content_name, content in CONTENTS.items()
                 if representable(content, charset_for(charset_name))]


@pytest.mark.parametrize(("charset_name", "content_name"), REPRESENTABLE)
def test_generated_text_part_in_every_charset(charset_name: str, content_name: str) -> None:
    """HTML-only content: the text part is html_to_text(rendered HTML), in the same charset."""
    content = CONTENTS[content_name]
    charset = charset_for(charset_name)
    plan = make(content, charset_name, MessageFormat.MULTIPART, text=False)
    recipient = recipient_for(content, EmailFormat.UNKNOWN)
    data = plan.render(Target(LOG_ID, 0, recipient), NOW).data
    assert_legal_lines(data)
    parse(data, strict)
    msg = parse(data, default)
    assert_no_defects(msg)
    parts = text_parts(msg)
    rendered = plan.personalize(recipient, LOG_ID)
    assert parts["plain"].get_content().replace("\r\n", "\n") == html_to_text(rendered.html)
    assert content.body[:40] in parts["plain"].get_content()
    assert parts["plain"].get_content_charset() == charset.mime


@pytest.mark.parametrize("charset_name", CHARSETS)
def test_proof_in_every_charset(charset_name: str) -> None:
    """Proofs go through the same writer: legal, defect-free, subject prefixed."""
    content = CONTENTS["long_line"]
    plan = make(content, charset_name, MessageFormat.MULTIPART)
    data, wire = plan.render_proof(recipient_for(content, EmailFormat.UNKNOWN),
                                   "proof@example.net", 2, NOW)
    assert wire.address == "proof@example.net"
    assert_legal_lines(data)
    parse(data, strict)
    msg = parse(data, default)
    assert_no_defects(msg)
    assert str(msg["Subject"]) == "Proof #2 A very long line"
    assert [a.addr_spec for a in msg["To"].addresses] == ["proof@example.net"]
    assert "/u/proof" in str(msg["List-Unsubscribe"])
